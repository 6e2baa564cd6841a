"""streams/consumer.py split_fetch(): which records of a fetch go to the pipelines, which to Faust."""
from collections import defaultdict, namedtuple

from streams.consumer import split_fetch

TP = namedtuple("TP", "topic partition")
Record = namedtuple("Record", "offset")


def records(*offsets):
    return [Record(o) for o in offsets]


def test_a_fetch_is_split_by_topic_and_what_was_read_before_a_seek_back_is_dropped():
    calls, tickets, leader = TP("calls", 0), TP("calls", 1), TP("__assignor-__leader", 0)
    read_offset = defaultdict(lambda: None, {calls: 11, tickets: 40})
    fetched = [(calls, records(9, 10, 11, 12)),  # 9 and 10 were delivered before the seek back
               (tickets, records(37, 38, 39)),  # all of it before the read offset: nothing left
               (TP("calls", 2), records(0, 1)),  # never read: all of it
               (leader, records(5))]
    ours, others = split_fetch(fetched, read_offset, {"calls"})
    assert ours == {"calls": [(calls, records(11, 12)), (TP("calls", 2), records(0, 1))]}
    assert others == [(leader, records(5))]

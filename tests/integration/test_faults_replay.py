"""Issue 6: the same events shuffled and delivered twice give the same numbers; a fuzzed batch of malformed
messages on the real broker is accounted for message by message and never hurts the worker."""
import random

import orjson
import pytest

import fault_support as fs
from harness import Worker, consume_all, create_topics, produce

pytestmark = pytest.mark.broker


def test_shuffled_and_twice_delivered_events_give_the_ordered_numbers(worker_factory):
    now, settings = fs.site_settings(before=330, after=120)
    # Without the order-dependent parts of the tail (lateness, label budget): see docs/reliability.md.
    wl = fs.Workload(seed=31, contacts=1000, now=now, order_dependent=False)
    shuffled = list(wl.messages)
    random.Random(4).shuffle(shuffled)
    twice = shuffled + wl.messages  # every message twice: first in a random order, then in order

    ordered_w: Worker = worker_factory(partitions=2, **settings)
    twice_w: Worker = worker_factory(partitions=2, **settings)
    for w in (ordered_w, twice_w):
        create_topics(w.prefix, 2)
        w.start()
    produce(ordered_w.prefix + fs.TOPIC, wl.records())
    produce(twice_w.prefix + fs.TOPIC, wl.records(twice))
    a, a_sizes = fs.wait_settled(ordered_w)
    b, b_sizes = fs.wait_settled(twice_w)

    # Counts that describe the delivery, not the contacts, differ in a way we can state exactly. With A
    # accepted, R rejected, D duplicates and K re-keyed in the ordered run (N = A + R + D messages): the
    # second delivery re-rejects what has no usable id (2R), re-keys every wrongly keyed copy (2K), and each
    # copy of an accepted or duplicate event is a duplicate: A + 2D (the first copy of a re-keyed event
    # that comes back is accepted, the second one a duplicate).
    acc_a, acc_b = fs.accounting(a), fs.accounting(b)
    assert acc_b["accepted"] == acc_a["accepted"]
    assert acc_b["rejected"] == 2 * acc_a["rejected"]
    assert acc_b["rekeyed"] == 2 * acc_a["rekeyed"] == 2 * 8
    assert acc_b["duplicate"] == acc_a["accepted"] + 2 * acc_a["duplicate"]
    assert acc_a["duplicate"] == 25
    assert sum(acc_b.values()) == b_sizes[fs.TOPIC] == 2 * len(wl.messages) + 2 * 8
    delivery = ("contactpulse_events_rejected_total", "contactpulse_events_duplicate_total",
                "contactpulse_events_rekeyed_total")
    rejected = lambda m: {dict(k)["reason"]: v for k, v in m.series(delivery[0]).items() if dict(k)["topic"] == fs.TOPIC}
    assert rejected(b) == {r: 2 * n for r, n in rejected(a).items()}
    # Every other series -- every KPI of every window, the live gauges, the repeat-contact/FCR counts,
    # accepted by type -- is the same (float sums to 1e-9: another order adds them up differently).
    kpis = lambda m: {k: v for k, v in fs.data_series(m).items()
                      if k[0] not in delivery and not (k[0] == "contactpulse_customer_contact_records_total")}
    assert fs.diff(kpis(a), kpis(b)) == []
    # The repeat-contact pipeline sees each contact record once per contact, whatever the delivery.
    internal_dups = b.get1("contactpulse_events_duplicate_total", topic=fs.INTERNAL) or 0
    assert b_sizes[fs.INTERNAL] - internal_dups == a_sizes[fs.INTERNAL] - (
        a.get1("contactpulse_events_duplicate_total", topic=fs.INTERNAL) or 0)


def test_fuzzed_batch_on_the_broker_is_accounted_message_by_message(worker_factory):
    now, settings = fs.site_settings(before=120, after=120)
    w: Worker = worker_factory(partitions=2, **settings)
    create_topics(w.prefix, 2)
    w.start()
    messages = fs.fuzz_messages(seed=3, n=600, now=now)
    records = [(k, v, fs.partition_for(k, 2)) for k, v in messages]
    produce(w.prefix + fs.TOPIC, records)
    m, sizes = fs.wait_settled(w)
    assert w.proc.poll() is None, "malformed input must never stop the worker"
    expected = fs.expected_exposition(settings, {p: [(k, v) for k, v, q in records if q == p] for p in (0, 1)})
    # The worker's counters equal the in-process model's, reason by reason and type by type ...
    for name in ("contactpulse_events_accepted_total", "contactpulse_events_rejected_total",
                 "contactpulse_events_duplicate_total", "contactpulse_events_rekeyed_total"):
        got = {k: v for k, v in m.series(name).items() if dict(k)["topic"] == fs.TOPIC}
        assert got == expected.series(name), name
    # ... and every message has exactly one outcome: 600 produced + the re-keyed copies the worker produced.
    acc = fs.accounting(m)
    assert sum(acc.values()) == sizes[fs.TOPIC] == 600 + acc["rekeyed"]
    assert acc["rejected"] > 300 and acc["accepted"] > 30  # the batch really mixes bad and good
    dead = [orjson.loads(r.value) for r in consume_all(w.prefix + "contactpulse-dead-letters")]
    assert len({(d["partition"], d["offset"]) for d in dead}) == len(dead) == acc["rejected"]
    assert all(d["detail"] and len(d["detail"]) <= 300 for d in dead)


def test_holes_are_read_back_from_kafka(kafka):
    """streams/ordering.py against the real broker: the range it reads back is exactly the hole."""
    import asyncio
    import uuid

    from streams.ordering import InOrder

    topic = f"t{uuid.uuid4().hex[:8]}.contact-events"
    create_topics(topic.split(".")[0] + ".", 1)
    produce(topic, [(f"k{i}".encode(), f"v{i}".encode(), 0) for i in range(10)])
    table = {"0|s": {"o": 4}}  # the processor has applied offsets 0-4

    async def go():
        in_order = InOrder(kafka, table)
        try:
            hole = await in_order.fetch(topic, 0, 2, 7)
            tail = await in_order.behind(topic, {0}, limit=3)
            everything_after = await in_order.behind(topic, {0})
            # a batch that starts at offset 8: offsets 5-7 are missing and come first
            from streams.pipeline import Message
            filled = await in_order.fill([Message(topic, 0, 8, b"k8", b"v8"), Message(topic, 0, 9, b"k9", b"v9")])
            return hole, tail, everything_after, filled, in_order.filled
        finally:
            await in_order.close()

    hole, tail, after, filled, counted = asyncio.run(go())
    assert [(m.offset, m.value) for m in hole] == [(o, f"v{o}".encode()) for o in range(2, 7)]
    assert [m.offset for m in tail] == [5, 6, 7]  # limit 3
    assert [m.offset for m in after] == [5, 6, 7, 8, 9]
    assert [m.offset for m in filled] == [5, 6, 7, 8, 9] and filled[0].key == b"k5"
    assert counted == 5 + 3 + 5 + 3

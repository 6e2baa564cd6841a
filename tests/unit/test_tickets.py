"""The ticket processor and collector on a plain dict: first response, backlog, resolution, reopen, replay.

Times are hand-made around T0 = 1_795_000_100 = 2026-11-18T11:08:20Z (a Wednesday), which is 500 s into
its 15-minute interval: intervals start at T0 - 500 (11:00), T0 + 400 (11:15), T0 + 1300 (11:30), ...
The UTC day started at T0 - 40100.
"""
import math
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import given, settings as hyp_settings, strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from harness import Metrics, parse_metrics
from metrics.business_hours import business_seconds, parse_schedule
from metrics.distribution import dist_add, exact_quantile, new_dist, sketch_quantile
from metrics.exposition import ContactCollector
from metrics.kpi import day_start, interval_start, minute_start
from metrics.merge import MergedRegistry
from metrics.tickets import TicketCollector
from streams.config import ConfigError, load_settings
from streams.events import parse_ticket
from streams.pipeline import Message
from streams.tickets import FRT_BUCKETS, TicketProcessor

T0 = 1_795_000_100.0
DAY = 4 * 86400  # "four days later" for auto-solve


def frt_hist(*indexes):
    """Non-cumulative FRT bucket counts with one ticket in each given bucket index."""
    h = [0] * (len(FRT_BUCKETS) + 1)
    for i in indexes:
        h[i] += 1
    return h


class Feed:
    def __init__(self, now=T0 + 1000, **kw):
        self.now = now
        self.table: dict = {}
        self.settings = load_settings(env={}, **kw)
        self.proc = TicketProcessor(self.settings, self.table, clock=lambda: self.now)
        self.offset = 0

    def msg(self, etype, tid, ts, partition=0, **fields):
        ev = {"event_id": fields.pop("event_id", f"{tid}-{etype}-{ts - T0:g}"), "type": etype,
              "ts": int(round(ts * 1000)), "ticket_id": tid, "queue": fields.pop("queue", "billing"),
              "channel": fields.pop("channel", "email"), **fields}
        self.offset += 1
        return Message("ticket-events", partition, self.offset, tid.encode(), orjson.dumps(ev))

    def created(self, tid, ts, **kw):
        return self.msg("created", tid, ts, **kw)

    def note(self, tid, ts, author="agent", public=True, **kw):
        if author == "agent":
            kw.setdefault("agent_id", "a1")
        return self.msg("message", tid, ts, author_type=author, public=public, **kw)

    def run(self, *msgs):
        return self.proc.process_batch(list(msgs))

    def window(self, kind, ts, queue="billing", channel="email", priority="normal", partition=0):
        start = {"i": interval_start(ts, 900, self.proc.tz), "d": day_start(ts, self.proc.tz),
                 "m": minute_start(ts)}[kind]
        return self.table.get(f"{partition}|w|{kind}|{int(start)}|{queue}|{channel}|{priority}")

    def stats(self, partition=0):
        return self.table[f"{partition}|s"]

    def metrics(self, at) -> Metrics:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(TicketCollector(self.settings, self.table, lambda: None, clock=lambda: at))
        return Metrics(parse_metrics(generate_latest(MergedRegistry(registry)).decode()))


B = dict(queue="billing", channel="email", priority="normal")  # the default labels of Feed events


# -- first response time ------------------------------------------------------------------------------

def test_bot_and_auto_acknowledgement_do_not_count_then_the_agent_reply_does():
    f = Feed()
    f.run(f.created("t1", T0), f.note("t1", T0 + 2, author="system"), f.note("t1", T0 + 5, author="bot"))
    assert f.window("i", T0)["fr"]["n"] == 0  # no first response yet
    m = f.metrics(at=T0 + 100)
    assert m.get1("contactpulse_tickets_awaiting_first_response", **B) == 1
    assert m.get1("contactpulse_tickets_oldest_awaiting_first_response_age_seconds", **B) == 100.0
    assert m.get1("contactpulse_tickets_open", status="new", **B) == 1  # bots do not pick a ticket up
    f.run(f.note("t1", T0 + 600))
    # FRT = 600 s, counted in the interval of the reply (T0+400..T0+1300), not the one it was created in.
    assert f.window("i", T0)["fr"]["n"] == 0 and f.window("i", T0)["cr"] == 1
    fr = f.window("i", T0 + 600)["fr"]
    assert (fr["n"], fr["sum"], fr["x"], fr["h"]) == (1, 600.0, [600.0], frt_hist(2))  # 300 < 600 <= 900
    m = f.metrics(at=T0 + 700)
    L = dict(window="interval", **B)
    assert m.get1("contactpulse_tickets_first_responses", **L) == 1
    assert m.get1("contactpulse_tickets_created", **L) == 0  # created in the previous interval
    assert m.get1("contactpulse_tickets_created", **{**L, "window": "today"}) == 1
    assert m.get1("contactpulse_tickets_first_response_seconds_gsum", **L) == 600.0
    assert m.get1("contactpulse_tickets_first_response_seconds_bucket", le="300", **L) == 0
    assert m.get1("contactpulse_tickets_first_response_seconds_bucket", le="900", **L) == 1
    assert m.get1("contactpulse_tickets_first_response_mean_seconds", **L) == 600.0
    assert m.get1("contactpulse_tickets_first_response_median_seconds", **L) == 600.0
    assert m.get1("contactpulse_tickets_awaiting_first_response", **B) == 0
    assert m.get1("contactpulse_tickets_oldest_awaiting_first_response_age_seconds", **B) == 0.0
    assert m.get1("contactpulse_tickets_open", status="pending", **B) == 1  # the agent wrote last


def test_internal_note_first_does_not_count():
    f = Feed()
    f.run(f.created("t1", T0), f.note("t1", T0 + 60, public=False), f.note("t1", T0 + 120, author="customer"))
    m = f.metrics(at=T0 + 200)
    assert m.get1("contactpulse_tickets_open", status="open", **B) == 1  # an agent has picked it up ...
    assert m.get1("contactpulse_tickets_awaiting_first_response", **B) == 1  # ... but not answered
    f.run(f.note("t1", T0 + 300))
    fr = f.window("i", T0)["fr"]  # T0+300 is still in the interval T0-500..T0+400
    assert (fr["n"], fr["sum"], fr["h"]) == (1, 300.0, frt_hist(1))  # exactly 300 is "le 300"


def test_reply_before_created_counts_once_created_arrives():
    f = Feed()
    f.run(f.note("t1", T0 + 120))
    assert f.window("i", T0) is None  # nothing to count until `created` arrives
    f.run(f.created("t1", T0))
    fr = f.window("i", T0 + 120)["fr"]
    assert (fr["n"], fr["sum"], fr["x"]) == (1, 120.0, [120.0])
    f.run(f.created("t1", T0), f.note("t1", T0 + 120))  # both delivered again
    assert f.window("i", T0 + 120)["fr"]["n"] == 1 and f.stats()["dup"] == 2


def test_an_earlier_reply_arriving_later_replaces_the_first_response():
    f = Feed()
    # Ticket 1: the later reply (T0+500, next interval) arrives first, then the earlier one (T0+90).
    f.run(f.created("t1", T0), f.note("t1", T0 + 500, event_id="r2"))
    assert f.window("i", T0 + 500)["fr"]["n"] == 1
    f.run(f.note("t1", T0 + 90, event_id="r1"))
    assert f.window("i", T0 + 500)["fr"] == {"n": 0, "sum": 0.0, "h": frt_hist(), "x": [], "k": {}, "z": 0}
    fr = f.window("i", T0 + 90)["fr"]
    assert (fr["n"], fr["sum"], fr["x"], fr["h"]) == (1, 90.0, [90.0], frt_hist(1))
    # Ticket 2: both replies in the same interval: one message retracts 200 and adds 150 to one window.
    f.run(f.created("t2", T0 + 10), f.note("t2", T0 + 210, event_id="s2"), f.note("t2", T0 + 160, event_id="s1"))
    fr = f.window("i", T0)["fr"]
    assert (fr["n"], fr["sum"], sorted(fr["x"])) == (2, 240.0, [90.0, 150.0])  # 90 + 150
    assert f.window("d", T0)["fr"]["n"] == 2
    assert f.stats()["acc"] == {"created": 2, "message": 4} and f.stats()["dup"] == 0


# -- resolution, reopen, auto-solve -------------------------------------------------------------------

def test_reopen_retracts_the_solve_and_the_final_solve_counts_once():
    f = Feed(now=T0 + 11000)
    f.run(f.created("t1", T0), f.note("t1", T0 + 60), f.msg("solved", "t1", T0 + 3600, solved_by="agent"))
    assert f.window("d", T0)["rs"]["agent"]["n"] == 1
    assert f.window("i", T0 + 3600)["rs"]["agent"]["sum"] == 3600.0
    f.run(f.note("t1", T0 + 7200, author="customer"), f.msg("reopened", "t1", T0 + 7200))
    day = f.window("d", T0)
    assert (day["rs"]["agent"]["n"], day["rs"]["agent"]["sum"], day["ro"]) == (0, 0.0, 1)
    assert f.window("i", T0 + 3600)["rs"]["agent"]["n"] == 0  # retracted from the solve's interval too
    m = f.metrics(at=T0 + 7300)
    assert m.get1("contactpulse_tickets_open", status="open", **B) == 1  # the customer wrote last
    assert m.get1("contactpulse_tickets_awaiting_first_response", **B) == 0  # FRT is only the first reply
    f.run(f.msg("solved", "t1", T0 + 10800, solved_by="agent"))
    day = f.window("d", T0)
    assert (day["rs"]["agent"]["n"], day["rs"]["agent"]["sum"], day["rs"]["agent"]["x"]) == (1, 10800.0, [10800.0])
    assert (day["rr"], day["ro"], day["cr"]) == ({"agent": 1, "auto": 0}, 1, 1)
    m = f.metrics(at=T0 + 10900)  # T0+10800 and T0+10900 share the interval T0+10400..T0+11300
    for window, reopens in (("today", 1), ("interval", 0)):
        L = dict(window=window, **B)
        assert m.get1("contactpulse_tickets_solved", solved_by="agent", **L) == 1
        assert m.get1("contactpulse_tickets_solved_after_reopen", solved_by="agent", **L) == 1
        assert m.get1("contactpulse_tickets_resolution_seconds_gsum", solved_by="agent", **L) == 10800.0
        assert m.get1("contactpulse_tickets_resolution_mean_seconds", solved_by="all", **L) == 10800.0
        assert m.get1("contactpulse_tickets_reopen_ratio", **L) == 1.0
        assert m.get1("contactpulse_tickets_reopened", **L) == reopens  # the reopen was at T0+7200
    f.run(f.msg("reopened", "t1", T0 + 7200))  # the reopen delivered again: nothing moves
    assert f.window("d", T0)["rs"]["agent"]["n"] == 1 and f.stats()["dup"] == 1


def test_auto_solve_after_inactivity_and_the_auto_solved_share():
    f = Feed(now=T0 + DAY + 700)
    f.run(f.created("a", T0), f.created("b", T0 + 300), f.note("a", T0 + 60), f.note("b", T0 + 360))
    f.run(f.msg("solved", "a", T0 + DAY, solved_by="auto"), f.msg("solved", "b", T0 + DAY + 100, solved_by="agent"))
    # a: 345600 s (4 days) auto; b: 345700 - 300 = 345400 s by an agent. Both in the interval T0+DAY-500..+400.
    m = f.metrics(at=T0 + DAY + 300)
    for window in ("interval", "today", "trailing"):
        L = dict(window=window, **B)
        assert m.get1("contactpulse_tickets_solved", solved_by="auto", **L) == 1
        assert m.get1("contactpulse_tickets_solved", solved_by="agent", **L) == 1
        assert m.get1("contactpulse_tickets_auto_solved_ratio", **L) == 0.5
        assert m.get1("contactpulse_tickets_resolution_mean_seconds", solved_by="auto", **L) == 345600.0
        assert m.get1("contactpulse_tickets_resolution_mean_seconds", solved_by="all", **L) == 345500.0
        # exact, interpolated: median of {345400, 345600} = 345500; p90 = 345400 + 0.9 * 200 = 345580
        assert m.get1("contactpulse_tickets_resolution_median_seconds", solved_by="all", **L) == 345500.0
        assert m.get1("contactpulse_tickets_resolution_p90_seconds", solved_by="all", **L) == pytest.approx(345580.0)
        # 259200 < 345600 <= 604800
        assert m.get1("contactpulse_tickets_resolution_seconds_bucket", solved_by="auto", le="259200", **L) == 0
        assert m.get1("contactpulse_tickets_resolution_seconds_bucket", solved_by="auto", le="604800", **L) == 1
    assert m.get1("contactpulse_tickets_open", status="solved", **B) == 2


def test_quantiles_are_exact_up_to_the_cap_then_from_the_sketch():
    exact, capped = Feed(), Feed(ticket_exact_values=3)
    for f in (exact, capped):
        for i, frt in enumerate((100, 200, 300, 400, 500)):
            f.run(f.created(f"t{i}", T0 - 400), f.note(f"t{i}", T0 - 400 + frt))
    assert exact.window("i", T0)["fr"]["x"] == [100.0, 200.0, 300.0, 400.0, 500.0]
    assert capped.window("i", T0)["fr"]["x"] is None  # a 4th value did not fit: the sketch takes over
    L = dict(window="interval", **B)
    m = exact.metrics(at=T0 + 100)
    assert m.get1("contactpulse_tickets_first_response_median_seconds", **L) == 300.0
    assert m.get1("contactpulse_tickets_first_response_p90_seconds", **L) == 460.0  # 400 + 0.6 * 100
    m = capped.metrics(at=T0 + 100)
    assert m.get1("contactpulse_tickets_first_response_mean_seconds", **L) == 300.0  # from count and sum
    # The sketch returns the value at rank q*(n-1) (median rank 2 -> 300; p90 rank 3.6 -> the 4th, 400) to 1%.
    assert m.get1("contactpulse_tickets_first_response_median_seconds", **L) == pytest.approx(300, rel=0.01)
    assert m.get1("contactpulse_tickets_first_response_p90_seconds", **L) == pytest.approx(400, rel=0.01)
    assert exact_quantile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5


# -- live backlog -----------------------------------------------------------------------------------

def test_live_backlog_by_status_and_labels_follow_the_newest_event():
    f = Feed()
    f.run(f.created("new", T0 - 300),
          f.created("open", T0 - 200), f.msg("assigned", "open", T0 - 100, agent_id="a1", queue="vip", priority="high"),
          f.created("pend", T0), f.note("pend", T0 + 10),
          f.created("solv", T0), f.note("solv", T0 + 20), f.msg("solved", "solv", T0 + 30, solved_by="agent"),
          f.created("gone", T0), f.msg("solved", "gone", T0 + 40, solved_by="auto"), f.msg("closed", "gone", T0 + 50),
          f.msg("reopened", "orphan", T0 + 60))  # its `created` is unknown: not in the live gauges
    m = f.metrics(at=T0 + 100)
    assert m.series("contactpulse_tickets_open") == {
        tuple(sorted({**labels, "status": s}.items())): n
        for labels, counts in ((B, {"new": 1, "pending": 1, "solved": 1, "open": 0}),
                               (dict(queue="vip", channel="email", priority="high"),
                                {"new": 0, "pending": 0, "solved": 0, "open": 1}))
        for s, n in counts.items()}
    assert m.get1("contactpulse_tickets_awaiting_first_response", **B) == 1
    assert m.get1("contactpulse_tickets_oldest_awaiting_first_response_age_seconds", **B) == 400.0
    assert m.get1("contactpulse_tickets_awaiting_first_response", queue="vip", channel="email", priority="high") == 1
    # The age grows with the clock, without any new event.
    assert f.metrics(at=T0 + 160).get1("contactpulse_tickets_oldest_awaiting_first_response_age_seconds", **B) == 460.0


# -- bad input, duplicates, lateness, replay --------------------------------------------------------

BASE = {"event_id": "e", "ts": int(T0 * 1000), "ticket_id": "t", "queue": "q", "channel": "email"}


@pytest.mark.parametrize("event, reason", [
    ({**BASE, "type": "created", "priority": "critical"}, "wrong_type"),
    ({**BASE, "type": "message", "author_type": "robot", "public": True}, "wrong_type"),
    ({**BASE, "type": "message", "author_type": "agent"}, "missing_field"),  # public or internal?
    ({**BASE, "type": "message", "author_type": "agent", "public": "yes"}, "wrong_type"),
    ({**BASE, "type": "message", "public": True}, "missing_field"),
    ({**BASE, "type": "solved"}, "missing_field"),
    ({**BASE, "type": "solved", "solved_by": "magic"}, "wrong_type"),
    ({**BASE, "type": "assigned"}, "missing_field"),  # assigned to whom?
    ({**BASE, "type": "merged"}, "unknown_type"),
    ({**BASE, "type": "created", "channel": "fax"}, "unknown_channel"),
    ({**BASE, "type": "created", "ticket_id": None}, "missing_field"),
    ({**BASE, "type": "created", "queue": "|bad"}, "wrong_type"),
    ({**BASE, "type": "created", "customer": "ann@example.com"}, "wrong_type"),
    ({**BASE, "type": "created", "ts": "2026-11-18T11:08:20"}, "bad_timestamp"),  # naive local time
])
def test_bad_input_reasons(event, reason):
    got = parse_ticket(orjson.dumps(event), T0)
    assert got.reason == reason


def test_rejections_are_counted_and_dead_lettered():
    f = Feed()
    bad = [Message("ticket-events", 0, 1, b"t", b"{not json"),
           Message("ticket-events", 0, 2, b"t", b"\xff\xfe"),
           Message("ticket-events", 0, 3, b"t", orjson.dumps({**BASE, "type": "solved"})),
           Message("ticket-events", 0, 4, b"t", orjson.dumps({**BASE, "type": "created", "ts": int((T0 + 9000) * 1000)}))]
    result = f.run(*bad)
    assert [r.reason for _, r in result.dead_letters] == ["malformed_json", "invalid_utf8", "missing_field",
                                                         "future_timestamp"]
    assert f.stats()["rej"] == {"malformed_json": 1, "invalid_utf8": 1, "missing_field": 1, "future_timestamp": 1}
    assert f.stats()["acc"] == {}


def test_duplicates_and_repeated_one_time_steps():
    f = Feed()
    f.run(f.created("t1", T0, event_id="c1"), f.created("t1", T0, event_id="c1"),
          f.created("t1", T0 + 5, event_id="c2"),  # a second `created` under another id: the first wins
          f.msg("closed", "t1", T0 + 60, event_id="x1"), f.msg("closed", "t1", T0 + 70, event_id="x2"))
    assert f.stats()["dup"] == 3 and f.stats()["acc"] == {"created": 1, "closed": 1}
    assert f.window("i", T0)["cr"] == 1 and f.table["0|t|t1"]["cr"][0] == T0


def test_wrong_key_is_sent_again_with_the_ticket_id():
    f = Feed()
    m = f.created("t1", T0)
    result = f.run(m._replace(key=b"other"))
    assert result.outputs == [("ticket-events", b"t1", m.value)] and f.stats()["rekey"] == 1
    assert f.window("i", T0) is None


def test_late_measure_is_rejected_but_the_live_state_keeps_the_event():
    f = Feed(allowed_lateness_seconds=60)
    f.run(f.created("x", T0 + 900))  # the partition's newest event: interval T0-500..T0+400 closed at T0+460
    result = f.run(f.created("t1", T0), f.note("t1", T0 + 10))
    assert [r.reason for _, r in result.dead_letters] == ["too_late", "too_late"]
    assert f.window("i", T0) is None and f.stats()["rej"] == {"too_late": 2}
    m = f.metrics(at=T0 + 1000)
    assert m.get1("contactpulse_tickets_open", status="pending", **B) == 1


def test_replay_after_crash_counts_nothing_twice():
    f = Feed(now=T0 + 11000)
    batch = [f.created("t1", T0), f.note("t1", T0 + 90), f.msg("solved", "t1", T0 + 3600, solved_by="agent"),
             f.msg("reopened", "t1", T0 + 7200), f.msg("solved", "t1", T0 + 9000, solved_by="auto")]
    f.run(*batch)
    snapshot = orjson.dumps(f.table, option=orjson.OPT_SORT_KEYS)
    f.run(*batch)
    assert orjson.dumps(f.table, option=orjson.OPT_SORT_KEYS) == snapshot


def test_replay_after_partial_write_retracts_once():
    """Crash after the windows of a reopen were written but before the ticket record: replay must not
    retract the solve a second time (that would leave -1 solved)."""
    f = Feed(now=T0 + 11000)
    f.run(f.created("t1", T0), f.msg("solved", "t1", T0 + 3600, solved_by="agent"))
    reopen = f.msg("reopened", "t1", T0 + 7200)
    changelog = orjson.loads(orjson.dumps(f.table))  # what the changelog held before the batch
    view, _ = f.proc.apply([reopen])  # (apply() changes the in-memory values in place)
    for key in list(view.dirty):  # the crash: only the windows reached the changelog
        if "|w|" in key:
            changelog[key] = orjson.loads(orjson.dumps(view.values[key]))
    f.table.clear()
    f.table.update(changelog)  # the restarted worker recovers its table from the changelog ...
    f.run(reopen)  # ... and the uncommitted message comes again
    day = f.window("d", T0)
    assert (day["rs"]["agent"]["n"], day["ro"]) == (0, 1)
    assert f.stats()["acc"] == {"created": 1, "solved": 1, "reopened": 1}


def test_expire_drops_old_windows_closed_and_silent_tickets():
    f = Feed(max_open_ticket_seconds=3600, dedupe_horizon_seconds=600)
    f.run(f.created("closed", T0), f.msg("solved", "closed", T0 + 10, solved_by="agent"),
          f.msg("closed", "closed", T0 + 20), f.created("silent", T0))
    assert f.proc.expire(None, now=T0 + 20 + 601) == 1  # the closed ticket only kept its ids for 600 s
    assert "0|t|closed" not in f.table and "0|t|silent" in f.table
    # The interval window T0-500..T0+400 is kept for interval + lateness + interval = 2700 s after its start.
    assert f.window("i", T0) is not None
    f.proc.expire(None, now=T0 - 500 + 2701)
    assert f.window("i", T0) is None and f.window("d", T0) is not None and "0|t|silent" in f.table
    f.proc.expire(None, now=T0 + 3601)  # no event for max_open_ticket_seconds: given up and counted
    assert "0|t|silent" not in f.table and f.stats()["expired"] == 1


# -- business hours ---------------------------------------------------------------------------------

def test_business_seconds_over_a_weekend_and_a_dst_change():
    utc = parse_schedule("mon-fri 09:00-17:00")
    fri = datetime(2026, 11, 20, 16, 30, tzinfo=timezone.utc).timestamp()
    mon = datetime(2026, 11, 23, 9, 45, tzinfo=timezone.utc).timestamp()
    assert business_seconds(fri, mon, utc, ZoneInfo("UTC")) == 30 * 60 + 45 * 60
    riga = ZoneInfo("Europe/Riga")  # clocks go from UTC+2 to UTC+3 on Sunday 2026-03-29
    fri = datetime(2026, 3, 27, 16, 0, tzinfo=riga).timestamp()  # 14:00Z
    mon = datetime(2026, 3, 30, 10, 0, tzinfo=riga).timestamp()  # 07:00Z; 09:00 local is 06:00Z
    assert business_seconds(fri, mon, utc, riga) == 3600 + 3600
    assert parse_schedule("sat-mon 10:00-12:00,13:00-24:00") == {
        d: ((600, 720), (780, 1440)) for d in (5, 6, 0)}
    with pytest.raises(ConfigError, match="business_hours"):
        load_settings(env={}, business_hours="weekdays 9-5")


def test_first_response_in_business_hours():
    f = Feed(now=T0 + 86400, business_hours="mon-fri 09:00-17:00")
    reply = T0 - 40100 + 86400 + 10 * 3600  # Thursday 10:00Z
    f.run(f.created("t1", T0), f.note("t1", reply))
    # Calendar: Wed 11:08:20 -> Thu 10:00:00 = 82300 s; business: 11:08:20-17:00 (21100) + 09:00-10:00 (3600).
    w = f.window("d", reply)
    assert (w["fr"]["sum"], w["fb"]["sum"]) == (82300.0, 24700.0)
    m = f.metrics(at=reply + 60)
    assert m.get1("contactpulse_tickets_first_response_business_mean_seconds", window="today", **B) == 24700.0


# -- exposition -------------------------------------------------------------------------------------

def test_families_shared_with_the_contact_pipeline_are_merged():
    f = Feed()
    f.run(f.created("t1", T0))
    registry = CollectorRegistry(auto_describe=False)
    contacts = {"0|s": {"o": 0, "wm": T0, "acc": {"offered": 2}, "rej": {}, "dup": 0, "rekey": 0, "queues": [],
                        "expired": 0}}
    registry.register(ContactCollector(f.settings, contacts, lambda: None, clock=lambda: T0))
    registry.register(TicketCollector(f.settings, f.table, lambda: None, clock=lambda: T0))
    text = generate_latest(MergedRegistry(registry)).decode()
    assert text.count("# TYPE contactpulse_events_accepted_total counter") == 1
    m = Metrics(parse_metrics(text))
    assert m.series("contactpulse_events_accepted_total") == {
        (("topic", "contact-events"), ("type", "offered")): 2, (("topic", "ticket-events"), ("type", "created")): 1}


def test_replay_after_records_but_before_bookkeeping_counts_accepted_not_duplicate():
    f = Feed()
    f.run(f.created("t1", T0))
    reply = f.note("t1", T0 + 60)
    changelog = orjson.loads(orjson.dumps(f.table))
    view, _ = f.proc.apply([reply])
    for key in list(view.dirty):  # windows and the ticket record were written, the "|s" stats were not
        if not key.endswith("|s"):
            changelog[key] = orjson.loads(orjson.dumps(view.values[key]))
    f.table.clear()
    f.table.update(changelog)
    f.run(reply)
    assert f.stats()["acc"] == {"created": 1, "message": 1} and f.stats()["dup"] == 0
    assert f.window("i", T0)["fr"]["n"] == 1


@hyp_settings(max_examples=300, deadline=None)
@given(values=st.lists(st.floats(0, 3e6), min_size=1, max_size=300), q=st.sampled_from([0.5, 0.9]))
def test_sketch_quantile_is_within_its_relative_accuracy(values, q):
    """The documented bound: within 1% of the sorted value at 0-based rank floor(q * (n - 1))."""
    values = [round(v, 3) for v in values]
    d = new_dist(len(FRT_BUCKETS))
    for v in values:
        dist_add(d, v, FRT_BUCKETS, cap=0, accuracy=0.01)  # cap 0: exact values are never kept
    assert d["x"] is None
    true = sorted(values)[math.floor(q * (len(values) - 1))]
    assert abs(sketch_quantile(d, q, 0.01) - true) <= 0.01 * true + 1e-12


@pytest.mark.prometheus
def test_exposition_passes_promtool_lint():
    """No duplicate families, no `_sum` gauges, no `quantile` label outside a summary (promtool's rules)."""
    import shutil
    import subprocess
    if shutil.which("promtool") is None:
        pytest.skip("promtool is not installed (./dev test installs it)")
    f = Feed(now=T0 + 11000, business_hours="mon-fri 09:00-17:00")
    f.run(f.created("t1", T0), f.note("t1", T0 + 60), f.msg("solved", "t1", T0 + 3600, solved_by="agent"),
          f.msg("reopened", "t1", T0 + 7200), f.msg("solved", "t1", T0 + 10800, solved_by="auto"), f.created("t2", T0))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ContactCollector(f.settings, {}, lambda: None, clock=lambda: T0 + 10900))
    registry.register(TicketCollector(f.settings, f.table, lambda: None, clock=lambda: T0 + 10900))
    text = generate_latest(MergedRegistry(registry))
    assert b"contactpulse_tickets_resolution_p90_seconds" in text
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True)
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()

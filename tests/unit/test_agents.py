"""Agent states and per-agent handle time on plain dicts: interval boundaries, out-of-order events,
duplicates, lateness, budgets, replay after a crash, and what a scrape exports."""
from datetime import datetime
from zoneinfo import ZoneInfo

import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from harness import Metrics, parse_metrics
from metrics.agents import AgentCollector, AgentHandleCollector
from metrics.kpi import split_by_window
from metrics.merge import MergedRegistry
from streams.agents import AgentProcessor
from streams.config import load_settings
from streams.contacts import ContactProcessor
from streams.events import parse_agent_event
from streams.pipeline import Message

UTC = ZoneInfo("UTC")
T0 = 1_795_000_100.0  # 2026-11-18T11:11:40Z: 500 s into a 15-minute interval (T0 % 900 == 500)
B = T0 + 400  # 11:15:00Z, an interval boundary
DAY = B - 40500  # 2026-11-18T00:00:00Z


def settings(**kw):
    return load_settings(env={}, **kw)


def scrape(*collectors) -> Metrics:
    reg = CollectorRegistry(auto_describe=False)
    for c in collectors:
        reg.register(c)
    return Metrics(parse_metrics(generate_latest(MergedRegistry(reg)).decode()))


class AgentFeed:
    def __init__(self, now: float, **kw):
        self.now = now
        self.table: dict = {}
        self.s = settings(**kw)
        self.proc = AgentProcessor(self.s, self.table, clock=lambda: self.now)
        self.offset = 0

    def msg(self, agent, state, ts, partition=0, event_id=None, key=None, **fields):
        queues = fields.pop("queues", ["sales"])  # None: the event names no queues
        ev = {"event_id": event_id or f"{agent}-{state}-{ts}", "type": "state", "ts": int(round(ts * 1000)),
              "agent_id": agent, "state": state, **fields}
        if queues is not None:
            ev["queues"] = queues
        self.offset += 1
        return Message("agent-events", partition, self.offset, agent.encode() if key is None else key,
                       orjson.dumps(ev))

    def run(self, *msgs):
        return self.proc.process_batch(list(msgs))

    def seconds(self, kind, start, queue="sales", partition=0) -> dict:
        w = self.table.get(f"{partition}|w|{kind}|{int(start)}|{queue}")
        return {k: v for k, v in (w or {"t": {}})["t"].items() if v}

    def stats(self, partition=0):
        return self.table[f"{partition}|s"]

    def metrics(self) -> Metrics:
        return scrape(AgentCollector(self.s, self.table, lambda: None, clock=lambda: self.now))


# -- the pure split ------------------------------------------------------------------------------------
def test_split_by_window_at_an_interval_boundary():
    # 11:14:30-11:16:00 -> 30 s in the 11:00 interval, 60 s in the 11:15 one
    assert split_by_window(B - 30, B + 60, "i", 900, UTC) == [(B - 900, 30.0), (B, 60.0)]
    # minutes: 11:14:30-11:16:00 -> 30 s of 11:14, 60 s of 11:15
    assert split_by_window(B - 30, B + 60, "m", 900, UTC) == [(B - 60, 30.0), (B, 60.0)]
    assert split_by_window(B, B, "i", 900, UTC) == []


def test_split_by_window_across_a_23_hour_local_day():
    riga = ZoneInfo("Europe/Riga")
    ts = lambda s: datetime.fromisoformat(s).timestamp()  # noqa: E731
    # 29 March 2026 in Riga lasts 23 h (clocks jump 03:00 -> 04:00). 23:00 -> 01:00 the next day is
    # 2 h: 1 h in the 29th (which started at 00:00+02:00) and 1 h in the 30th (00:00+03:00).
    got = split_by_window(ts("2026-03-29T23:00:00+03:00"), ts("2026-03-30T01:00:00+03:00"), "d", 900, riga)
    assert got == [(ts("2026-03-29T00:00:00+02:00"), 3600.0), (ts("2026-03-30T00:00:00+03:00"), 3600.0)]


# -- the state timeline ----------------------------------------------------------------------------------
STEPS = [("available", B - 100), ("on_contact", B + 50), ("after_contact_work", B + 200), ("available", B + 230)]


def in_order(f: AgentFeed, order=(0, 1, 2, 3)):
    """Messages for STEPS[i] in the given arrival order (offsets grow in arrival order, as in Kafka)."""
    return [f.msg("a1", *STEPS[i]) for i in order]


def windows(f: AgentFeed) -> dict:
    """Stored seconds per window and state, leaving out zeros (a state moved away leaves 0.0 behind)."""
    out = {k: {st: x for st, x in v["t"].items() if x} for k, v in f.table.items() if "|w|" in k}
    return {k: v for k, v in out.items() if v}


def test_time_in_state_is_split_at_the_interval_boundary():
    f = AgentFeed(now=B + 300)
    f.run(*in_order(f))
    # available 11:13:20-11:15:50: 100 s before the boundary, 50 s after it
    assert f.seconds("i", B - 900) == {"available": 100.0}
    # after it: on contact 11:15:50-11:18:20 = 150 s, wrap-up 11:18:20-11:18:50 = 30 s; the available
    # state since 11:18:50 is still open, so it is not stored yet
    assert f.seconds("i", B) == {"available": 50.0, "on_contact": 150.0, "after_contact_work": 30.0}
    assert f.seconds("d", DAY) == {"available": 150.0, "on_contact": 150.0, "after_contact_work": 30.0}
    assert f.seconds("m", B - 60) == {"available": 60.0}  # the minute 11:14
    assert f.seconds("m", B + 180) == {"on_contact": 20.0, "after_contact_work": 30.0}  # 11:18; the open state is not stored


def test_scrape_adds_the_open_state_up_to_now():
    f = AgentFeed(now=B + 300)
    f.run(*in_order(f))
    m = f.metrics()
    L = dict(queue="sales", window="interval")
    # busy = 150 + 30 = 180; available = 50 stored + 70 open (11:18:50 -> now 11:20:00) = 120
    assert m.get1("contactpulse_agent_busy_seconds", **L) == 180.0
    assert m.get1("contactpulse_agent_available_seconds", **L) == 120.0
    assert m.get1("contactpulse_agent_occupancy_ratio", **L) == pytest.approx(180 / 300)
    # today: available 150 stored + 70 open = 220; the previous interval is not in "interval"
    assert m.get1("contactpulse_agent_available_seconds", queue="sales", window="today") == 220.0
    # trailing = the minute slots 10:21..11:20: everything since 11:13:20
    assert m.get1("contactpulse_agent_busy_seconds", queue="sales", window="trailing") == 180.0
    assert m.get1("contactpulse_agent_available_seconds", queue="sales", window="trailing") == 220.0
    assert m.get1("contactpulse_agent_state_seconds", queue="sales", state="after_contact_work", window="interval") == 30.0
    assert m.get1("contactpulse_agents", queue="sales", state="available") == 1
    assert m.get1("contactpulse_agents", queue="sales", state="on_contact") == 0
    # ten seconds later, with no new event, the open state has grown by ten seconds
    f.now += 10
    assert f.metrics().get1("contactpulse_agent_available_seconds", **L) == 130.0


def test_out_of_order_events_give_the_same_windows_and_the_newest_state_wins():
    ordered = AgentFeed(now=B + 300)
    ordered.run(*in_order(ordered))
    shuffled = AgentFeed(now=B + 300)
    a, a2, oc, acw = in_order(shuffled, (0, 3, 1, 2))
    # available, then the final available (closes 330 s of "available"), then the on_contact and the
    # wrap-up that happened in between: each moves [its ts, next change) from the previous state to its own
    shuffled.run(a, a2)
    assert shuffled.seconds("i", B) == {"available": 230.0}
    shuffled.run(oc)
    assert shuffled.seconds("i", B) == {"available": 50.0, "on_contact": 180.0}
    shuffled.run(acw)
    assert windows(shuffled) == windows(ordered)
    m = shuffled.metrics()
    assert m.get1("contactpulse_agents", queue="sales", state="available") == 1  # the older events did not win
    assert m.get1("contactpulse_agents", queue="sales", state="after_contact_work") == 0
    assert shuffled.stats()["acc"] == {"state": 4}


def test_any_arrival_order_within_the_lateness_gives_the_in_order_windows():
    """40 changes of 3 agents over 20 minutes, delivered in 5 random orders: the stored windows equal
    those of in-order delivery (all changes are newer than the cutoff, so none is clipped)."""
    import random
    rng = random.Random(7)
    changes = []
    for i in range(40):
        agent = f"a{i % 3}"
        st = rng.choice(["available", "on_contact", "after_contact_work", "away", "logged_out"])
        changes.append((agent, st, B - 600 + 30 * i + rng.randrange(30), f"e{i}"))

    def feed(order):
        f = AgentFeed(now=B + 700)
        f.run(*[f.msg(agent, st, ts, event_id=eid, queues=["sales", agent]) for agent, st, ts, eid in order])
        return f

    expected = windows(feed(sorted(changes, key=lambda c: c[2])))
    assert sum(len(v) for v in expected.values()) > 40  # the scenario does fill many windows
    for _ in range(5):
        shuffled = changes[:]
        rng.shuffle(shuffled)
        assert windows(feed(shuffled)) == expected


def test_duplicates_count_once():
    f = AgentFeed(now=B + 300)
    first = in_order(f)
    f.run(*first)
    snapshot = windows(f)
    again = f.msg("a1", "on_contact", B + 50)  # same event_id, new offset
    f.run(again, f.msg("a1", "on_contact", B + 50))  # and twice in one batch
    assert windows(f) == snapshot
    assert f.stats()["dup"] == 2 and f.stats()["acc"] == {"state": 4}


def test_a_change_only_to_closed_intervals_is_too_late_and_the_cutoff_clips_older_changes():
    f = AgentFeed(now=B + 1300, allowed_lateness_seconds=60)
    f.run(f.msg("y", "available", B + 10), f.msg("y", "away", B + 100),
          f.msg("other", "available", B + 1000))  # the partition's newest event: 11:31:40
    # cutoff = start of the interval holding 11:31:40 - 60 s = 11:30 (B + 900): the 11:15 interval is final
    result = f.run(f.msg("y", "on_contact", B + 50))  # would move 11:15:50-11:16:40 from available
    assert [r.reason for _, r in result.dead_letters] == ["too_late"]
    assert f.seconds("i", B) == {"available": 90.0}
    # y comes back at 11:35 (newest for y: the whole away time counts: 800 s before 11:30, 300 s after)
    f.run(f.msg("y", "available", B + 1200))
    assert f.seconds("i", B) == {"available": 90.0, "away": 800.0}
    assert f.seconds("i", B + 900) == {"away": 300.0}
    # an on_contact at 11:23:20 arrives late: only its part after the cutoff (11:30-11:35) moves
    assert f.run(f.msg("y", "on_contact", B + 500)).dead_letters == []
    assert f.seconds("i", B) == {"available": 90.0, "away": 800.0}
    assert f.seconds("i", B + 900) == {"on_contact": 300.0}
    assert f.stats()["rej"] == {"too_late": 1} and f.stats()["acc"] == {"state": 5}


def test_queues_live_counts_and_queue_budget():
    f = AgentFeed(now=B + 300, max_queues=2)
    f.run(f.msg("a1", "available", B, queues=["sales", "support"]),
          f.msg("a2", "on_contact", B, queues=["sales", "billing"]),  # billing is the 3rd queue: over budget
          f.msg("a3", "away", B, queues=[]),
          f.msg("a1", "on_contact", B + 60, queues=None))  # no "queues": a1 keeps sales and support
    assert f.seconds("i", B, "support") == {"available": 60.0}
    m = f.metrics()
    got = {(dict(k)["queue"], dict(k)["state"]): v for k, v in m.series("contactpulse_agents").items() if v}
    assert got == {("sales", "on_contact"): 2, ("support", "on_contact"): 1, ("__overflow__", "on_contact"): 1,
                   ("__none__", "away"): 1}
    assert m.get1("contactpulse_label_overflow_total", topic="agent-events", label="queue") == 1
    f.run(f.msg("a2", "on_contact", B, queues=["sales", "billing"]))  # the same event again: not counted again
    assert f.stats()["dup"] == 1 and f.stats()["ovf"] == 1
    # a3 away since 11:15 with no queue: 300 s under __none__ at now = 11:20
    assert m.get1("contactpulse_agent_state_seconds", queue="__none__", state="away", window="interval") == 300.0


def test_bad_agent_events_are_rejected_with_a_reason():
    now = B
    ok = {"event_id": "e", "type": "state", "ts": int(B * 1000), "agent_id": "a1", "state": "away"}
    cases = [({**ok, "state": "sleeping"}, "wrong_type"), ({k: v for k, v in ok.items() if k != "agent_id"}, "missing_field"),
             ({**ok, "queues": "sales"}, "wrong_type"), ({**ok, "type": "login"}, "unknown_type"),
             ({k: v for k, v in ok.items() if k != "state"}, "missing_field"), ({**ok, "queues": ["|bad"]}, "wrong_type")]
    for obj, reason in cases:
        assert parse_agent_event(orjson.dumps(obj), now).reason == reason, obj
    ev = parse_agent_event(orjson.dumps({**ok, "queues": ["q", "q"], "reason": "Lunch"}), now)
    assert (ev.queues, ev.reason, ev.ts) == (("q",), "Lunch", B)
    f = AgentFeed(now=B + 300)
    result = f.run(Message("agent-events", 0, 0, b"a1", b"{nope"),
                   f.msg("a1", "available", B, key=b"wrong"))
    assert [r.reason for _, r in result.dead_letters] == ["malformed_json"]
    assert result.outputs == [("agent-events", b"a1", orjson.dumps({"event_id": f"a1-available-{B}", "type": "state",
                               "ts": int(B * 1000), "agent_id": "a1", "state": "available", "queues": ["sales"]}))]
    assert f.stats()["rekey"] == 1 and f.stats()["rej"] == {"malformed_json": 1}


def test_replay_after_crash_counts_nothing_twice():
    f = AgentFeed(now=B + 300)
    a, oc, a2, acw = in_order(f, (0, 1, 3, 2))
    f.run(a, oc, a2)
    snapshot = orjson.dumps(f.table, option=orjson.OPT_SORT_KEYS)
    f.run(a, a2, oc)  # the same offsets again
    assert orjson.dumps(f.table, option=orjson.OPT_SORT_KEYS) == snapshot
    # Crash after the windows were written but before the agent record and stats: the replay completes
    # the record and counts the events once.
    view, _ = f.proc.apply([acw])
    for key in list(view.dirty):
        if "|w|" in key:
            f.table[key] = view.values[key]
    f.run(acw)
    assert f.seconds("i", B) == {"available": 50.0, "on_contact": 150.0, "after_contact_work": 30.0}
    assert f.stats()["acc"] == {"state": 4} and f.stats()["dup"] == 0


def test_the_agent_record_keeps_flat_lists_and_reads_the_earlier_layout():
    f = AgentFeed(now=B + 300)
    a, oc, acw, a2 = in_order(f)
    f.run(a, oc)
    # Flat lists (one per field, not one per entry: see new_agent_record), offsets 1 and 2 as delivered.
    assert f.table["0|a|a1"] == {"o": 2, "tt": [B - 100, B + 50], "ts": ["available", "on_contact"],
                                 "tq": ["sales", "sales"], "ie": ["a1-available-" + str(B - 100),
                                                                  "a1-on_contact-" + str(B + 50)],
                                 "it": [B - 100, B + 50], "io": [1, 2]}
    # The same record as an earlier version wrote it: a list per timeline entry and per event id.
    old = AgentFeed(now=B + 300)
    old.table.update(orjson.loads(orjson.dumps(f.table)))
    rec = old.table["0|a|a1"]
    old.table["0|a|a1"] = {"o": 2, "tl": [[t, st, q.split(",")] for t, st, q in zip(rec["tt"], rec["ts"], rec["tq"])],
                           "ids": [[e, t, o] for e, t, o in zip(rec["ie"], rec["it"], rec["io"])]}
    assert old.metrics().get1("contactpulse_agents", queue="sales", state="on_contact") == 1
    old.offset = 2  # the wrap-up and the last change at offsets 3 and 4, as in f
    old.run(*[old.msg("a1", *STEPS[i]) for i in (2, 3)])
    f.run(acw, a2)
    assert old.table == f.table  # converted on first write, then the same windows, record and stats
    assert f.seconds("i", B) == {"available": 50.0, "on_contact": 150.0, "after_contact_work": 30.0}


def test_expire_drops_old_windows_and_forgotten_agents():
    f = AgentFeed(now=B + 300)
    f.run(*in_order(f))
    # interval windows live interval + lateness + interval = 2700 s after their start; minute windows
    # trailing + lateness + 60 = 4560 s; day windows two days + lateness
    f.proc.expire(None, now=B + 4561 + 180)
    assert f.seconds("i", B) == {} and f.seconds("m", B + 180) == {}
    assert f.seconds("d", DAY) != {} and "0|a|a1" in f.table
    f.proc.expire(None, now=B + 230 + 7 * 86400 + 1)  # no event for max_event_age_seconds
    assert "0|a|a1" not in f.table and not [k for k in f.table if "|w|" in k]


# -- handle time per agent (contacts pipeline) -------------------------------------------------------------
class ContactFeed:
    def __init__(self, **kw):
        self.table: dict = {}
        self.s = settings(**kw)
        self.proc = ContactProcessor(self.s, self.table, clock=lambda: T0 + 300)
        self.offset = 0

    def msg(self, etype, cid, ts, agent="a1", **fields):
        ev = {"event_id": f"{cid}-{etype}", "type": etype, "ts": int(ts * 1000), "contact_id": cid,
              "queue": "sales", "channel": "voice", **fields}
        if etype in ("answered", "ended"):
            ev["agent_id"] = agent
        self.offset += 1
        return Message("contact-events", 0, self.offset, cid.encode(), orjson.dumps(ev))

    def contact(self, cid, agent, answered, ended, holds=(), transfer=None, wrapup=None):
        out = [self.msg("offered", cid, T0), self.msg("answered", cid, T0 + answered, agent)]
        for start, end in holds:
            out.append(self.msg("hold_started", cid, T0 + start, event_id=f"{cid}-h{start}"))
            if end is not None:
                out.append(self.msg("hold_ended", cid, T0 + end))
        if transfer is not None:
            out.append(self.msg("transferred", cid, T0 + transfer, to_queue="support"))
        extra = {} if wrapup is None else {"wrapup_seconds": wrapup}
        out.append(self.msg("ended", cid, T0 + ended, agent, **extra))
        return out

    def run(self, *msgs):
        return self.proc.process_batch(list(msgs))

    def metrics(self) -> Metrics:
        return scrape(AgentHandleCollector(self.s, self.table, lambda: None, clock=lambda: T0 + 300))


def test_handle_time_hold_and_transfers_per_agent():
    f = ContactFeed()
    f.run(*f.contact("c1", "a1", answered=20, ended=80, holds=[(30, 45)], transfer=60, wrapup=10),
          *f.contact("c2", "a1", answered=5, ended=65),
          *f.contact("c3", "a2", answered=10, ended=40, holds=[(20, None)]))
    m = f.metrics()
    for window in ("interval", "today", "trailing"):
        a1 = dict(queue="sales", agent="a1", window=window)
        assert m.get1("contactpulse_agent_contacts_handled", **a1) == 2
        # c1: 80 - 20 = 60 talk + hold, + 10 wrap-up = 70; c2: 65 - 5 = 60 -> 130
        assert m.get1("contactpulse_agent_handle_seconds_sum", **a1) == 130.0
        assert m.get1("contactpulse_agent_hold_seconds_sum", **a1) == 15.0  # 30 -> 45
        assert m.get1("contactpulse_agent_holds", **a1) == 1
        assert m.get1("contactpulse_agent_transfers", **a1) == 1
        assert m.get1("contactpulse_agent_after_contact_work_seconds_sum", **a1) == 10.0
        a2 = dict(queue="sales", agent="a2", window=window)
        assert m.get1("contactpulse_agent_handle_seconds_sum", **a2) == 30.0  # 40 - 10
        assert m.get1("contactpulse_agent_hold_seconds_sum", **a2) == 20.0  # never ended: 20 -> the end at 40
    assert m.get1("contactpulse_label_overflow_total", topic="contact-events", label="agent") == 0
    # c3's hold_ended (at 25 s) arrives after the contact was counted: a2's hold shrinks from 20 to 5 s
    f.run(f.msg("hold_ended", "c3", T0 + 25))
    m = f.metrics()
    assert m.get1("contactpulse_agent_hold_seconds_sum", queue="sales", agent="a2", window="interval") == 5.0
    assert m.get1("contactpulse_agent_holds", queue="sales", agent="a2", window="interval") == 1


def test_agents_past_the_budget_are_summed_under_overflow():
    f = ContactFeed(max_agents=2)
    f.run(*f.contact("c1", "a1", 5, 65), *f.contact("c2", "a2", 5, 35),
          *f.contact("c3", "a3", 5, 25), *f.contact("c4", "a4", 5, 15))
    m = f.metrics()
    agents = {dict(k)["agent"] for k in m.series("contactpulse_agent_contacts_handled")}
    assert agents == {"a1", "a2", "__overflow__"}
    o = dict(queue="sales", agent="__overflow__", window="interval")
    assert m.get1("contactpulse_agent_contacts_handled", **o) == 2
    assert m.get1("contactpulse_agent_handle_seconds_sum", **o) == 30.0  # (25 - 5) + (15 - 5)
    assert m.get1("contactpulse_label_overflow_total", topic="contact-events", label="agent") == 2
    # the replay of the same messages changes nothing (the budget record remembers the offsets it counted)
    before = orjson.dumps(f.table, option=orjson.OPT_SORT_KEYS)
    f.offset = 0
    f.run(*f.contact("c1", "a1", 5, 65), *f.contact("c2", "a2", 5, 35),
          *f.contact("c3", "a3", 5, 25), *f.contact("c4", "a4", 5, 15))
    assert orjson.dumps(f.table, option=orjson.OPT_SORT_KEYS) == before

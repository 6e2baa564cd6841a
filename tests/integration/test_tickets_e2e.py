"""Issue 3 end to end: scripted ticket events -> real broker -> real worker -> /metrics, every value checked,
then a hard kill and a restart that must show the same numbers (nothing lost, nothing counted twice)."""
import time

import orjson
import pytest

from harness import Worker, consume_all, create_topics, one_window, produce, quiet_clock

pytestmark = pytest.mark.broker

BILLING = dict(queue="billing", channel="email", priority="normal")
SUPPORT = dict(queue="support", channel="chat", priority="high")
# The killed worker's group membership ends after the session timeout (Faust's default: 60 s, which the
# restarted worker would sit out before it gets the partitions back); 6 s keeps the restart short.
FAST_REJOIN = {"BROKER_SESSION_TIMEOUT": "6", "BROKER_HEARTBEAT_INTERVAL": "0.5"}


def tev(etype: str, tid: str, ts: float, labels: dict = BILLING, event_id: str | None = None, key: str | None = None,
        **fields) -> tuple:
    ev = {"event_id": event_id or f"{tid}-{etype}-{int(ts)}", "type": etype, "ts": int(ts * 1000), "ticket_id": tid,
          **labels, **fields}
    return ((key or tid).encode(), orjson.dumps(ev), None)


def reply(tid: str, ts: float, author: str = "agent", public: bool = True, **kw) -> tuple:
    if author == "agent":
        kw.setdefault("agent_id", "a1")
    return tev("message", tid, ts, author_type=author, public=public, **kw)


def scripted(T: float) -> list:
    return [
        # t1: auto-acknowledgement and bot first, the agent at +40: FRT 40; solved by the agent at +100.
        tev("created", "t1", T), reply("t1", T + 1, author="system"), reply("t1", T + 5, author="bot"),
        reply("t1", T + 40), tev("solved", "t1", T + 100, solved_by="agent"),
        # t2: internal note at +20 does not count, the public reply at +70 does: FRT 60. Its `created` comes
        # with the wrong key: the worker sends it again keyed by ticket_id, so it arrives after the reply.
        reply("t2", T + 20, public=False), reply("t2", T + 70), tev("created", "t2", T + 10, key="not-t2"),
        # t3: the reply (+50) arrives before `created` (+0): FRT 50.
        reply("t3", T + 50), tev("created", "t3", T),
        # t4: FRT 30; solved at +60 by an agent, reopened at +90, solved automatically at +150: resolution 150.
        tev("created", "t4", T), reply("t4", T + 30), tev("solved", "t4", T + 60, solved_by="agent"),
        tev("reopened", "t4", T + 90), tev("solved", "t4", T + 150, solved_by="auto"),
        # t5: nobody has answered yet.
        tev("created", "t5", T + 20),
        # t6: another queue, assigned but not answered.
        tev("created", "t6", T + 30, SUPPORT), tev("assigned", "t6", T + 35, SUPPORT, agent_id="a2"),
        # t7: solved automatically at +120 without any reply: resolution 115.
        tev("created", "t7", T + 5), tev("solved", "t7", T + 120, solved_by="auto"),
        # the agent's reply to t1 delivered twice
        reply("t1", T + 40),
    ]


def bad(T: float) -> list:
    base = {"event_id": "x", "ts": int(T * 1000), "ticket_id": "t9", **BILLING}
    return [(b"t9", b"{not json", None),
            (b"t9", orjson.dumps({**base, "type": "solved"}), None),  # solved_by missing
            (b"t9", orjson.dumps({**base, "type": "merged"}), None),
            (b"t9", orjson.dumps({**base, "type": "created", "priority": "critical"}), None)]


def check(m, T: float, before: float, after: float) -> None:
    for window in ("interval", "trailing", "today"):
        L = dict(window=window, **BILLING)
        assert m.get1("contactpulse_tickets_created", **L) == 6  # t1 t2 t3 t4 t5 t7
        assert m.get1("contactpulse_tickets_created", window=window, **SUPPORT) == 1
        # FRT: t1 40, t2 60, t3 50, t4 30 -> n 4, sum 180, mean 45, median (40+50)/2 = 45,
        # p90 at rank 0.9 * 3 = 2.7 of [30, 40, 50, 60] = 50 + 0.7 * 10 = 57
        assert m.get1("contactpulse_tickets_first_responses", **L) == 4
        assert m.get1("contactpulse_tickets_first_response_seconds_gcount", **L) == 4
        assert m.get1("contactpulse_tickets_first_response_seconds_gsum", **L) == 180.0
        assert m.get1("contactpulse_tickets_first_response_seconds_bucket", le="60", **L) == 4  # 60 is "le 60"
        assert m.get1("contactpulse_tickets_first_response_seconds_bucket", le="+Inf", **L) == 4
        assert m.get1("contactpulse_tickets_first_response_mean_seconds", **L) == 45.0
        assert m.get1("contactpulse_tickets_first_response_median_seconds", **L) == 45.0
        assert m.get1("contactpulse_tickets_first_response_p90_seconds", **L) == pytest.approx(57.0)
        assert m.get1("contactpulse_tickets_first_responses", window=window, **SUPPORT) == 0
        # Resolution: agent t1 100; auto t4 150 (its agent solve was retracted by the reopen) and t7 115.
        assert m.get1("contactpulse_tickets_solved", solved_by="agent", **L) == 1
        assert m.get1("contactpulse_tickets_solved", solved_by="auto", **L) == 2
        assert m.get1("contactpulse_tickets_resolution_seconds_gsum", solved_by="agent", **L) == 100.0
        assert m.get1("contactpulse_tickets_resolution_seconds_gsum", solved_by="auto", **L) == 265.0
        assert m.get1("contactpulse_tickets_resolution_seconds_bucket", solved_by="auto", le="3600", **L) == 2
        assert m.get1("contactpulse_tickets_resolution_mean_seconds", solved_by="auto", **L) == 132.5
        assert m.get1("contactpulse_tickets_resolution_mean_seconds", solved_by="all", **L) == pytest.approx(365 / 3)
        # all: [100, 115, 150] -> median 115, p90 at rank 1.8 = 115 + 0.8 * 35 = 143
        assert m.get1("contactpulse_tickets_resolution_median_seconds", solved_by="all", **L) == 115.0
        assert m.get1("contactpulse_tickets_resolution_p90_seconds", solved_by="all", **L) == pytest.approx(143.0)
        assert m.get1("contactpulse_tickets_solved_after_reopen", solved_by="auto", **L) == 1
        assert m.get1("contactpulse_tickets_solved_after_reopen", solved_by="agent", **L) == 0
        assert m.get1("contactpulse_tickets_reopened", **L) == 1
        assert m.get1("contactpulse_tickets_auto_solved_ratio", **L) == pytest.approx(2 / 3)
        assert m.get1("contactpulse_tickets_reopen_ratio", **L) == pytest.approx(1 / 3)
    # Live: billing t5 new; t2, t3 pending (an agent wrote last); t1, t4, t7 solved. support: t6 open.
    statuses = {(dict(k)["queue"], dict(k)["status"]): v for k, v in m.series("contactpulse_tickets_open").items()}
    assert statuses == {("billing", "new"): 1, ("billing", "open"): 0, ("billing", "pending"): 2,
                        ("billing", "solved"): 3, ("support", "new"): 0, ("support", "open"): 1,
                        ("support", "pending"): 0, ("support", "solved"): 0}
    assert m.get1("contactpulse_tickets_awaiting_first_response", **BILLING) == 1
    assert m.get1("contactpulse_tickets_awaiting_first_response", **SUPPORT) == 1
    age = m.get1("contactpulse_tickets_oldest_awaiting_first_response_age_seconds", **BILLING)
    assert before - (T + 20) - 0.01 <= age <= after - (T + 20) + 0.01
    age = m.get1("contactpulse_tickets_oldest_awaiting_first_response_age_seconds", **SUPPORT)
    assert before - (T + 30) - 0.01 <= age <= after - (T + 30) + 0.01
    # Bookkeeping: 20 accepted by type, 1 duplicate, 1 re-keyed, 4 rejected by reason.
    acc = {dict(k)["type"]: v for k, v in m.series("contactpulse_events_accepted_total").items()
           if dict(k)["topic"] == "ticket-events"}
    assert acc == {"created": 7, "message": 7, "solved": 4, "reopened": 1, "assigned": 1}
    assert m.get1("contactpulse_events_duplicate_total", topic="ticket-events") == 1
    assert m.get1("contactpulse_events_rekeyed_total", topic="ticket-events") == 1
    rej = {dict(k)["reason"]: v for k, v in m.series("contactpulse_events_rejected_total").items()
           if dict(k)["topic"] == "ticket-events"}
    assert rej == {"malformed_json": 1, "missing_field": 1, "unknown_type": 1, "wrong_type": 1}
    # The contact pipeline's families are merged with these, not repeated.
    assert m.get1("contactpulse_events_duplicate_total", topic="contact-events") == 0


def ticket_events_done(m) -> bool:
    acc = sum(v for k, v in m.series("contactpulse_events_accepted_total").items()
              if dict(k)["topic"] == "ticket-events")
    rej = sum(v for k, v in m.series("contactpulse_events_rejected_total").items()
              if dict(k)["topic"] == "ticket-events")
    return acc == 20 and rej == 4


def test_tickets_end_to_end_and_after_a_hard_restart(worker_factory):
    # An hour interval with "now" >= 15 min from its edges (quiet_clock): the events (180 s back), both
    # workers' checks and the restart between them fall in one interval and one local day, without waiting.
    clock = quiet_clock()
    w: Worker = worker_factory(partitions=2, **clock)
    w.env.update(FAST_REJOIN)
    create_topics(w.prefix, 2)
    w.start()
    w.wait_for(lambda m: m.get1("contactpulse_partitions_assigned", topic=w.prefix + "ticket-events") == 2,
               what="both ticket-events partitions assigned")
    now = time.time()
    T = float(int(now) - 180)  # whole seconds: every duration below is exact
    assert one_window(clock, T, now + 300), clock
    produce(w.prefix + "ticket-events", scripted(T) + bad(T))
    w.wait_for(ticket_events_done, timeout=60, what="24 ticket events")
    before = time.time()
    m = w.metrics()
    after = time.time()
    check(m, T, before, after)
    time.sleep(2.0)
    age = w.metrics().get1("contactpulse_tickets_oldest_awaiting_first_response_age_seconds", **BILLING)
    assert age - (after - (T + 20)) >= 1.9, "the oldest age must grow with the clock, without new events"
    dead = [orjson.loads(r.value) for r in consume_all(w.prefix + "contactpulse-dead-letters")]
    assert sorted(d["reason"] for d in dead) == ["malformed_json", "missing_field", "unknown_type", "wrong_type"]
    assert w.proc.poll() is None, "bad input must never stop the worker"

    # Hard kill: the state comes back from the changelog, uncommitted input is processed again.
    w.kill()
    w2: Worker = worker_factory(prefix=w.prefix, app_id=w.app_id, partitions=2, **clock)
    w2.env.update(FAST_REJOIN)
    w2.start(timeout=120)
    lag = {("partition", "0"), ("partition", "1")}
    w2.wait_for(lambda m: ticket_events_done(m)
                and m.get1("contactpulse_partitions_assigned", topic=w.prefix + "ticket-events") == 2
                and {k[0]: v for k, v in m.series("contactpulse_consumer_lag_messages").items()
                     if ("topic", w.prefix + "ticket-events") in k} == dict.fromkeys(lag, 0),
                timeout=60, what="the same 24 ticket events after the restart, all input read again")
    before = time.time()
    m = w2.metrics()
    after = time.time()
    check(m, T, before, after)

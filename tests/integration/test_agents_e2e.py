"""Issue 4 (agents) end to end: agent state events and contact events -> real broker -> real worker -> /metrics."""
import time

import httpx
import orjson
import pytest

from harness import Worker, consume_all, create_topics, event, one_window, produce, quiet_clock

pytestmark = pytest.mark.broker


def state(agent: str, st: str, ts: float, queues=None, event_id=None, **fields) -> dict:
    ev = {"event_id": event_id or f"{agent}-{st}-{int(ts * 1000)}", "type": "state", "ts": int(round(ts * 1000)),
          "agent_id": agent, "state": st, **fields}
    if queues is not None:
        ev["queues"] = queues
    return ev


def keyed(ev: dict, key: bytes | None = None, partition: int | None = None):
    return (key if key is not None else ev["agent_id"].encode(), orjson.dumps(ev), partition)


def test_agents_end_to_end(worker_factory):
    # An hour interval with "now" >= 15 min from its edges (quiet_clock): the events (100 s back), the
    # checks and the restart at the end all fall in one interval and one local day, without waiting.
    clock = quiet_clock()
    w: Worker = worker_factory(partitions=2, max_agents=2, **clock)
    create_topics(w.prefix, 2)
    w.start()
    now = time.time()
    T = now - 100
    assert one_window(clock, T, now + 300), clock
    S, SS, SU = ["sales"], ["sales", "support"], ["support"]
    a4_oncontact = state("a4", "on_contact", T + 30, S)
    agents = [
        # a1: available 10 s, on contact 60 s, wrap-up 10 s, then logged out (no open time)
        keyed(state("a1", "available", T + 0, S)), keyed(state("a1", "on_contact", T + 10, S)),
        keyed(state("a1", "after_contact_work", T + 70, S)), keyed(state("a1", "logged_out", T + 80, S)),
        keyed(state("a1", "on_contact", T + 10, S)),  # the same event again: a duplicate
        # a2 in two queues: available 30 s in each, then away (open, not summed in busy/available)
        keyed(state("a2", "available", T + 0, SS)), keyed(state("a2", "away", T + 30, reason="Lunch")),
        # a4: its on_contact at T+30 arrives after the away at T+60 -> available 30 s, on contact 30 s
        keyed(state("a4", "available", T + 0, S)), keyed(state("a4", "away", T + 60, S)), keyed(a4_oncontact),
        # a3: available since T+40 and still open; sent with the wrong key first (re-keyed by the worker)
        keyed(state("a3", "available", T + 40, SU), key=b"not-a3"),
        (b"a9", b"{not json", None),
        keyed(state("a9", "sleeping", T + 5, S)),
    ]
    produce(w.prefix + "agent-events", agents)
    s = dict(queue="sales", channel="voice")
    contacts = [  # all on partition 0, in this order, so the max_agents=2 budget admits a1 and a4 and not a5
        event("offered", "c1", T + 0, **s), event("answered", "c1", T + 10, agent_id="a1", **s),
        event("hold_started", "c1", T + 20, **s), event("hold_ended", "c1", T + 35, **s),
        event("transferred", "c1", T + 50, to_queue="support", **s),
        event("ended", "c1", T + 70, agent_id="a1", wrapup_seconds=10, **s),
        event("offered", "c2", T + 5, **s), event("answered", "c2", T + 30, agent_id="a4", **s),
        event("ended", "c2", T + 60, agent_id="a4", **s),
        event("offered", "c3", T + 0, **s), event("answered", "c3", T + 2, agent_id="a5", **s),
        event("ended", "c3", T + 12, agent_id="a5", **s),
    ]
    produce(w.prefix + "contact-events", [(e["contact_id"].encode(), orjson.dumps(e), 0) for e in contacts])

    def done(m):
        acc = {dict(k)["topic"]: 0 for k in m.series("contactpulse_events_accepted_total")}
        for k, v in m.series("contactpulse_events_accepted_total").items():
            acc[dict(k)["topic"]] += v
        rej = sum(v for k, v in m.series("contactpulse_events_rejected_total").items()
                  if dict(k)["topic"] == "agent-events")
        return acc.get("agent-events") == 10 and acc.get("contact-events") == 12 and rej == 2

    w.wait_for(done, what="10 agent events, 12 contact events, 2 rejections")
    before = time.time()
    m = w.metrics()
    after = time.time()
    for window in ("interval", "trailing", "today"):
        L = dict(queue="sales", window=window)
        # busy: a1 60 on contact + 10 wrap-up, a4 30 on contact; available: a1 10 + a2 30 + a4 30
        assert m.get1("contactpulse_agent_busy_seconds", **L) == pytest.approx(100.0)
        assert m.get1("contactpulse_agent_available_seconds", **L) == pytest.approx(70.0)
        assert m.get1("contactpulse_agent_occupancy_ratio", **L) == pytest.approx(100 / 170)
        assert m.get1("contactpulse_agent_state_seconds", state="after_contact_work", **L) == pytest.approx(10.0)
        assert m.get1("contactpulse_agent_state_seconds", state="on_contact", **L) == pytest.approx(90.0)
        # support: a2's closed 30 s plus a3's open available time since T+40, up to the scrape
        got = m.get1("contactpulse_agent_available_seconds", queue="support", window=window)
        assert before - T - 10 - 0.01 <= got <= after - T - 10 + 0.01
        assert m.get1("contactpulse_agent_busy_seconds", queue="support", window=window) == 0
        # per agent: c1 = 60 s talk + hold (10 -> 70) + 10 s wrap-up, 15 s hold, 1 transfer; c2 = 30 s
        a1 = dict(queue="sales", agent="a1", window=window)
        assert m.get1("contactpulse_agent_contacts_handled", **a1) == 1
        assert m.get1("contactpulse_agent_handle_seconds_sum", **a1) == pytest.approx(70.0)
        assert m.get1("contactpulse_agent_hold_seconds_sum", **a1) == pytest.approx(15.0)
        assert m.get1("contactpulse_agent_holds", **a1) == 1
        assert m.get1("contactpulse_agent_transfers", **a1) == 1
        assert m.get1("contactpulse_agent_after_contact_work_seconds_sum", **a1) == pytest.approx(10.0)
        a4 = dict(queue="sales", agent="a4", window=window)
        assert m.get1("contactpulse_agent_contacts_handled", **a4) == 1
        assert m.get1("contactpulse_agent_handle_seconds_sum", **a4) == pytest.approx(30.0)
        assert m.get1("contactpulse_agent_holds", **a4) == 0
        ovf = dict(queue="sales", agent="__overflow__", window=window)  # a5, past max_agents=2
        assert m.get1("contactpulse_agent_contacts_handled", **ovf) == 1
        assert m.get1("contactpulse_agent_handle_seconds_sum", **ovf) == pytest.approx(10.0)
    assert {dict(k)["agent"] for k in m.series("contactpulse_agent_contacts_handled")} == {"a1", "a4", "__overflow__"}
    assert m.get1("contactpulse_label_overflow_total", topic="contact-events", label="agent") == 1
    assert m.get1("contactpulse_label_overflow_total", topic="agent-events", label="queue") == 0
    # Live states: a1 logged out, a2 away (in both its queues), a4 away (its older on_contact did not win),
    # a3 available in support.
    live = {(dict(k)["queue"], dict(k)["state"]): v for k, v in m.series("contactpulse_agents").items() if v}
    assert live == {("sales", "logged_out"): 1, ("sales", "away"): 2, ("support", "away"): 1,
                    ("support", "available"): 1}
    assert m.get1("contactpulse_agents", queue="sales", state="on_contact") == 0
    time.sleep(2.0)
    got2 = w.metrics().get1("contactpulse_agent_available_seconds", queue="support", window="interval")
    assert got2 - got >= 1.9, "the open state's time must grow with the clock, without new events"
    # Bookkeeping for agent-events: 10 accepted, 1 duplicate, 1 re-keyed, 2 rejected by reason.
    assert m.get1("contactpulse_events_accepted_total", topic="agent-events", type="state") == 10
    assert m.get1("contactpulse_events_duplicate_total", topic="agent-events") == 1
    assert m.get1("contactpulse_events_rekeyed_total", topic="agent-events") == 1
    rej = {dict(k)["reason"]: v for k, v in m.series("contactpulse_events_rejected_total").items()
           if dict(k)["topic"] == "agent-events"}
    assert rej == {"malformed_json": 1, "wrong_type": 1}
    dead = [orjson.loads(r.value) for r in consume_all(w.prefix + "contactpulse-dead-letters")]
    assert sorted(d["reason"] for d in dead if d["topic"].endswith("agent-events")) == ["malformed_json", "wrong_type"]
    # One HELP/TYPE block per family although two pipelines export contactpulse_label_overflow_total.
    text = httpx.get(w.url + "/metrics", timeout=5.0).text
    assert text.count("# TYPE contactpulse_label_overflow_total counter") == 1
    assert text.count("# TYPE contactpulse_events_accepted_total counter") == 1
    assert w.proc.poll() is None, "bad input must never stop the worker"

    # A restart restores the tables from their changelogs: nothing lost, nothing counted twice.
    w.stop()
    w.start()
    m2 = w.wait_for(lambda m: m.get1("contactpulse_events_accepted_total", topic="agent-events", type="state") == 10
                    and m.get1("contactpulse_agent_contacts_handled", queue="sales", agent="a1", window="today") == 1,
                    timeout=60, what="state restored after a restart")
    assert m2.get1("contactpulse_agent_busy_seconds", queue="sales", window="interval") == pytest.approx(100.0)
    assert m2.get1("contactpulse_agent_available_seconds", queue="sales", window="interval") == pytest.approx(70.0)
    assert m2.get1("contactpulse_agent_handle_seconds_sum", queue="sales", agent="a1", window="interval") == pytest.approx(70.0)
    assert m2.get1("contactpulse_events_duplicate_total", topic="agent-events") == 1
    assert m2.get1("contactpulse_label_overflow_total", topic="contact-events", label="agent") == 1
    assert {(dict(k)["queue"], dict(k)["state"]): v for k, v in m2.series("contactpulse_agents").items() if v} == live

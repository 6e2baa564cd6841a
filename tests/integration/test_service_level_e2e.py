"""Issue 2 end to end: scripted call events -> real broker -> real worker -> /metrics, every value checked."""
import time

import httpx
import orjson
import pytest

from harness import Worker, consume_all, create_topics, event, one_window, parse_metrics, produce, quiet_clock

pytestmark = pytest.mark.broker


def scripted(T: float) -> list:
    s, c = dict(queue="sales", channel="voice"), dict(queue="support", channel="chat")
    return [
        event("offered", "c1", T + 0, **s), event("answered", "c1", T + 20, agent_id="a1", **s),
        event("hold_started", "c1", T + 30, **s), event("hold_ended", "c1", T + 45, **s),
        event("ended", "c1", T + 80, agent_id="a1", wrapup_seconds=10, resolved=True, **s),
        event("offered", "c2", T + 0, **s), event("answered", "c2", T + 5, agent_id="a2", **s),
        event("offered", "c3", T + 0, **s), event("abandoned", "c3", T + 5, **s),  # exactly 5 s: short
        event("offered", "c4", T + 0, **s), event("abandoned", "c4", T + 30, **s),
        event("offered", "c5", T + 10, **s), event("answered", "c5", T + 31, agent_id="a3", **s),
        event("offered", "c6", T + 40, **s),  # still waiting
        event("offered", "c7", T + 50, **c),  # still waiting, other queue
        event("answered", "c8", T + 60, agent_id="a4", **s),  # arrives before its offer
        event("offered", "c8", T + 50, **s),
        event("answered", "c2", T + 5, agent_id="a2", **s),  # the same event delivered twice
    ]


def test_service_level_end_to_end(worker_factory):
    # An hour interval in a zone where "now" is >= 15 min from its edges and midnight is hours away:
    # the events (100 s back) and the checks (a minute or so) share one interval and one day, no waiting.
    clock = quiet_clock()
    w: Worker = worker_factory(partitions=2, **clock)
    create_topics(w.prefix, 2)
    w.start()
    now = time.time()
    T = now - 100
    assert one_window(clock, T, now + 300), clock
    produce(w.prefix + "contact-events", scripted(T))
    bad = [(b"c9", b"{not json", None),
           (b"c9", orjson.dumps({"event_id": "x1", "type": "offered", "ts": int(T * 1000), "contact_id": "c9",
                                 "channel": "voice"}), None),
           (b"c9", orjson.dumps({"event_id": "x2", "type": "teleported", "ts": int(T * 1000),
                                 "contact_id": "c9", "queue": "sales", "channel": "voice"}), None)]
    produce(w.prefix + "contact-events", bad)

    m = w.wait_for(lambda m: sum(m.series("contactpulse_events_accepted_total").values()) == 17
                   and sum(m.series("contactpulse_events_rejected_total").values()) == 3, what="21 events")
    before = time.time()
    m = w.metrics()
    after = time.time()
    for window in ("interval", "trailing", "today"):
        L = dict(queue="sales", channel="voice", window=window)
        assert m.get1("contactpulse_contacts_offered", **L) == 5
        assert m.get1("contactpulse_contacts_answered", **L) == 4
        assert m.get1("contactpulse_contacts_answered_within", threshold=20, **L) == 3
        assert m.get1("contactpulse_contacts_answered_within", threshold=10, **L) == 2
        assert m.get1("contactpulse_contacts_abandoned", **L) == 1
        assert m.get1("contactpulse_contacts_short_abandoned", **L) == 1
        assert m.get1("contactpulse_contacts_sl_denominator", **L) == 5
        assert m.get1("contactpulse_contacts_sl_numerator", threshold=20, **L) == 3
        assert m.get1("contactpulse_service_level_ratio", threshold=20, **L) == pytest.approx(0.6)
        assert m.get1("contactpulse_service_level_ratio", threshold=10, **L) == pytest.approx(0.4)
        assert m.get1("contactpulse_answer_wait_seconds_sum", **L) == pytest.approx(56.0)
        assert m.get1("contactpulse_asa_seconds", **L) == pytest.approx(14.0)
        assert m.get1("contactpulse_answer_wait_max_seconds", **L) == pytest.approx(21.0)
        assert m.get1("contactpulse_abandon_ratio", **L) == pytest.approx(0.2)
        assert m.get1("contactpulse_abandon_wait_seconds_sum", **L) == pytest.approx(30.0)
        assert m.get1("contactpulse_contacts_handled", **L) == 1
        assert m.get1("contactpulse_handle_seconds_sum", **L) == pytest.approx(70.0)  # 60 talk+hold + 10 wrap-up
        assert m.get1("contactpulse_hold_seconds_sum", **L) == pytest.approx(15.0)
        assert m.get1("contactpulse_holds", **L) == 1
        assert m.get1("contactpulse_contacts_resolved_by_agent", **L) == 1
        # Histogram: waits 5, 10, 20, 21 -> le=5:1, le=10:2, le=20:3, le=30:4
        assert m.get1("contactpulse_answer_wait_seconds_bucket", le="5", **L) == 1
        assert m.get1("contactpulse_answer_wait_seconds_bucket", le="10", **L) == 2
        assert m.get1("contactpulse_answer_wait_seconds_bucket", le="20", **L) == 3
        assert m.get1("contactpulse_answer_wait_seconds_bucket", le="30", **L) == 4
        assert m.get1("contactpulse_answer_wait_seconds_bucket", le="+Inf", **L) == 4
    assert m.get1("contactpulse_service_level_target_ratio", queue="sales", threshold=20) == 0.8
    assert m.get1("contactpulse_service_level_target_ratio", queue="sales", threshold=10) == 0.9
    # Live gauges: c6 waits in sales/voice since T+40, c7 in support/chat since T+50.
    assert m.get1("contactpulse_contacts_waiting", queue="sales", channel="voice") == 1
    assert m.get1("contactpulse_contacts_waiting", queue="support", channel="chat") == 1
    age = m.get1("contactpulse_oldest_waiting_age_seconds", queue="sales", channel="voice")
    assert before - (T + 40) - 0.01 <= age <= after - (T + 40) + 0.01
    time.sleep(2.0)
    age2 = w.metrics().get1("contactpulse_oldest_waiting_age_seconds", queue="sales", channel="voice")
    assert age2 - age >= 1.9, "the oldest-waiting age must grow with the clock, without new events"
    # Bookkeeping: 17 accepted by type, 1 duplicate, 3 rejected by reason.
    acc = {dict(k)["type"]: v for k, v in m.series("contactpulse_events_accepted_total").items()}
    assert acc == {"offered": 8, "answered": 4, "abandoned": 2, "hold_started": 1, "hold_ended": 1, "ended": 1}
    assert m.get1("contactpulse_events_duplicate_total", topic="contact-events") == 1
    rej = {dict(k)["reason"]: v for k, v in m.series("contactpulse_events_rejected_total").items()}
    assert rej == {"malformed_json": 1, "missing_field": 1, "unknown_type": 1}
    # /metrics?name[]=...: those series only, with the values of the full scrape.
    only = parse_metrics(httpx.get(w.url + "/metrics?name[]=contactpulse_events_accepted_total"
                                           "&name[]=contactpulse_events_duplicate_total", timeout=5.0).text)
    assert only == {k: v for k, v in m.items()
                    if k[0] in ("contactpulse_events_accepted_total", "contactpulse_events_duplicate_total")}
    assert len(only) == 6 + 5  # six types accepted; duplicates for each of the five input topics
    dead = [orjson.loads(r.value) for r in consume_all(w.prefix + "contactpulse-dead-letters")]
    assert sorted(d["reason"] for d in dead) == ["malformed_json", "missing_field", "unknown_type"]
    assert w.proc.poll() is None, "bad input must never stop the worker"

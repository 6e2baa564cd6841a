"""Issue 4 (repeat contacts, FCR, CSAT) end to end: two real workers sharing two partitions on the real
broker. A contact and its repeat land on different contact-events partitions, so different workers
handle them; the re-partition by customer hash brings them together and the repeat is still detected."""
import time
import uuid

import httpx
import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner

from harness import Metrics, Worker, consume_all, create_topics, event, one_window, produce, quiet_clock

pytestmark = pytest.mark.broker

W = 3600  # repeat window for this test: contacts from two days ago are final, today's provisional


def partition_of(key: str, partitions: int = 2) -> int:
    """The partition the default (murmur2) partitioner gives a key: what producers and the worker use."""
    return DefaultPartitioner()(key.encode(), list(range(partitions)), list(range(partitions)))


def ids_on(partition: int, prefix: str) -> str:
    return next(f"{prefix}-{i}" for i in range(1000) if partition_of(f"{prefix}-{i}") == partition)


def owned(w: Worker) -> list[int]:
    return httpx.get(w.url + "/healthz", timeout=2.0).json()["partitions"]


def summed(workers: list[Worker]) -> Metrics:
    """Cluster view: each worker exports only its partitions, so the sum over workers is exact."""
    out = Metrics()
    for w in workers:
        for k, v in w.metrics().items():
            out[k] = out.get(k, 0) + v
    return out


def handled(cid, start, queue, channel, agent, resolved, **fields):
    return [event("offered", cid, start, queue=queue, channel=channel, **fields),
            event("answered", cid, start + 10, queue=queue, channel=channel, agent_id=agent),
            event("ended", cid, start + 70, queue=queue, channel=channel, agent_id=agent, resolved=resolved)]


def test_repeat_detected_across_partitions_and_workers(worker_factory):
    prefix = f"t{uuid.uuid4().hex[:8]}."
    # A site clock whose local midnight is hours away (quiet_clock): "today" holds the contacts of the last
    # two minutes for the whole test, without waiting for midnight to pass.
    clock = quiet_clock()
    settings = dict(partitions=2, repeat_window_seconds=W, identity_secret="e2e-secret", default_region="LV",
                    **clock)
    w1 = worker_factory(prefix=prefix, **settings)
    create_topics(prefix, 2)
    w1.start(timeout=90)
    w2 = worker_factory(prefix=prefix, app_id=w1.app_id, **settings).start(timeout=120, expect_partitions=1)
    deadline = time.time() + 90
    while not (len(owned(w1)) == 1 and len(owned(w2)) == 1) and time.time() < deadline:
        time.sleep(0.5)
    assert sorted(owned(w1) + owned(w2)) == [0, 1], "each worker must own one contact-events partition"

    now = time.time()
    assert one_window(clock, now - 120, now + 300), clock
    old = now - 2 * 86400  # two days ago: only in last_7_days, and final (hour end + 1 h + 900 s is past)
    a1, b1 = ids_on(0, "a1"), ids_on(1, "b1")
    assert partition_of(a1) != partition_of(b1)
    events = (
        # Customer X: voice call on one partition, the same number written nationally in a chat 30 min
        # later on the other partition: a repeat (30 min <= 1 h window), voice -> chat.
        handled(a1, old, "sales", "voice", "a1", True, customer={"phone": "+371 21234567"})
        + handled(b1, old + 1800, "support", "chat", "a2", True, customer={"phone": "21234567"})
        # Customer Z today: a call, then an e-mail a minute later (still waiting): a repeat, voice -> email.
        + handled("c1", now - 120, "sales", "voice", "a1", True, customer={"id": "cust-9"})
        + [event("offered", "c2", now - 60, queue="sales", channel="email", customer={"id": "cust-9"})]
        # No identifier: counted as unknown, never matched.
        + handled("d1", now - 100, "sales", "voice", "a3", None)
    )
    produce(prefix + "contact-events", events)
    workers = [w1, w2]

    def internal(m, kind):
        return m.get1("contactpulse_customer_contact_records_total", topic="contactpulse-customer-contacts", type=kind)

    # 4 start records (a1, b1, c1, c2: identified, offered) and 4 handled (a1, b1, c1, and d1 unknown).
    deadline = time.time() + 90
    while time.time() < deadline:
        m = summed(workers)
        if internal(m, "start") == 4 and internal(m, "handled") == 4:
            break
        time.sleep(0.5)
    assert (internal(m, "start"), internal(m, "handled")) == (4, 4)

    # Surveys: c1's without queue (joined to c1's record in the contacts table, on c1's partition),
    # a1's with its queue and agent (a1's record is gone: its interval closed two days ago).
    produce(prefix + "survey-events", [
        {"event_id": "s1", "type": "survey", "ts": int((now - 30) * 1000), "contact_id": "c1", "csat": 5,
         "resolved": False},
        {"event_id": "s2", "type": "survey", "ts": int((now - 20) * 1000), "contact_id": a1, "csat": 3,
         "queue": "sales", "channel": "voice", "agent_id": "a1"},
    ])
    deadline = time.time() + 60
    while time.time() < deadline:
        m = summed(workers)
        if m.get1("contactpulse_events_accepted_total", topic="survey-events", type="survey") == 2:
            break
        time.sleep(0.5)

    V = dict(queue="sales", channel="voice")
    # Two days ago, sales/voice: a1's call was repeated by b1's chat -> 1 final contact, 0 resolved.
    assert m.get1("contactpulse_fcr_contacts", window="last_7_days", status="final", **V) == 1
    assert m.get1("contactpulse_fcr_resolved", window="last_7_days", status="final", **V) == 0
    # b1 (support/chat) was not repeated: resolved on first contact.
    C = dict(queue="support", channel="chat", window="last_7_days", status="final")
    assert m.get1("contactpulse_fcr_contacts", **C) == 1
    assert m.get1("contactpulse_fcr_resolved", **C) == 1
    # Today, sales/voice: c1 was repeated by c2 a minute later -> provisional 1 contact, 0 resolved.
    assert m.get1("contactpulse_fcr_contacts", window="today", status="provisional", **V) == 1
    assert m.get1("contactpulse_fcr_resolved", window="today", status="provisional", **V) == 0
    assert m.get1("contactpulse_fcr_contacts", window="today", status="final", **V) == 0
    assert m.get1("contactpulse_fcr_contacts", window="last_7_days", status="provisional", **V) == 1
    # Agents marked a1 and c1 resolved; the customers came back after both.
    assert m.get1("contactpulse_fcr_agent_marked_resolved", window="last_7_days", **V) == 2
    assert m.get1("contactpulse_fcr_agent_marked_resolved_repeated", window="last_7_days", **V) == 2
    assert m.get1("contactpulse_fcr_unknown_customer", window="today", **V) == 1
    pairs = {(dict(lv)["from_channel"], dict(lv)["to_channel"], dict(lv)["window"]): v
             for lv, v in m.series("contactpulse_repeat_contacts").items()}
    assert pairs == {("voice", "chat", "last_7_days"): 1, ("voice", "email", "last_7_days"): 1,
                     ("voice", "email", "today"): 1}
    A = dict(queue="sales", agent="a1")
    assert m.get1("contactpulse_agent_fcr_contacts", window="last_7_days", status="final", **A) == 1
    assert m.get1("contactpulse_agent_fcr_contacts", window="today", status="provisional", **A) == 1
    assert m.get1("contactpulse_agent_fcr_resolved", window="last_7_days", status="final", queue="support",
                  agent="a2") == 1
    # CSAT today on sales/voice: 5 (c1, joined) and 3 (a1): 2 responses, 1 satisfied, score sum 8.
    T = dict(window="today", **V)
    assert m.get1("contactpulse_csat_responses", **T) == 2
    assert m.get1("contactpulse_csat_satisfied", **T) == 1
    assert m.get1("contactpulse_csat_points", **T) == 8
    assert m.get1("contactpulse_survey_resolved_responses", **T) == 1
    assert m.get1("contactpulse_survey_resolved_yes", **T) == 0
    assert m.get1("contactpulse_agent_csat_responses", queue="sales", agent="a1", window="today") == 2

    # Privacy: neither the phone number nor the customer id is in the tables' changelogs or the logs.
    for table in ("contacts", "repeats"):
        records = consume_all(f"{w1.app_id}-{table}-changelog")
        assert records, f"{table} changelog is empty"
        assert not any(b"2123" in (r.value or b"") + (r.key or b"") or b"cust-9" in (r.value or b"")
                       for r in records)
    for r in consume_all(prefix + "contactpulse-customer-contacts"):
        assert b"2123" not in r.key + r.value and b"cust-9" not in r.key + r.value
    for w in workers:
        assert w.proc.poll() is None
        assert b"2123" not in w.log_path.read_bytes()
    assert orjson.loads(httpx.get(w1.url + "/healthz").content)["status"] == "ok"

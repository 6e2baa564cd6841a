"""Issue 6: kill -9 the worker mid-stream, again and again; after it recovers, every number is exact.

Two workers read the same deterministic workload from their own topics at the same time: a reference that
runs undisturbed, and a victim that is killed with SIGKILL three times while the traffic is being produced
and restarted with the same app id (so it recovers its tables from the changelog and resumes from its
committed offsets). At the end every contactpulse_* series of the victim must equal the reference's, the
reference must equal the in-process model and the independent tiny model, and every produced message must
be accounted for exactly once (accepted + rejected + duplicate + rekeyed == produced).
"""
import time

import orjson
import pytest

import fault_support as fs
from harness import Worker, consume_all, create_topics, produce

pytestmark = pytest.mark.broker

# A killed worker's group membership ends after the session timeout; 6 s keeps each restart short.
FAST_REJOIN = {"BROKER_SESSION_TIMEOUT": "6", "BROKER_HEARTBEAT_INTERVAL": "0.5"}


def make_worker(worker_factory, settings: dict) -> Worker:
    w = worker_factory(partitions=2, **settings)
    w.env.update(FAST_REJOIN)
    return w


def test_kill_9_mid_stream_loses_nothing_and_counts_nothing_twice(worker_factory):
    # The whole test takes ~70 s; the simulated traffic reaches ~5 min back. Both must fit in one interval.
    now, settings = fs.site_settings(before=330, after=200)
    wl = fs.Workload(seed=11, contacts=2000, now=now)
    records = wl.records()
    produced = len(records)

    ref = make_worker(worker_factory, settings)
    victim = make_worker(worker_factory, settings)
    for w in (ref, victim):
        create_topics(w.prefix, 2)
    ref.start()
    victim.start()
    produce(ref.prefix + fs.TOPIC, records)

    # Produce to the victim in 6 slices of ~1000 messages. After every second slice, watch it work through
    # the backlog and kill it as soon as it has made progress -- mid-stream -- then start it again.
    slices = [records[i * produced // 6:(i + 1) * produced // 6] for i in range(6)]
    sent, done, kills = 0, 0, []
    for i, part in enumerate(slices):
        produce(victim.prefix + fs.TOPIC, part)
        sent += len(part)
        if i % 2 == 1:
            deadline = time.time() + 30
            while (now_done := sum(fs.accounting(victim.metrics()).values())) <= done and time.time() < deadline:
                time.sleep(0.01)
            victim.kill()
            kills.append((done, now_done, sent))
            started = time.time()
            victim.start(timeout=90)
            kills[-1] += (round(time.time() - started, 1),)
            done = sum(fs.accounting(victim.metrics()).values())  # what survived the crash
    assert len(kills) == 3
    # At least one kill landed mid-stream: progress seen, backlog left (the scrape precedes the kill).
    assert any(before < at < sent_then for before, at, sent_then, _ in kills), kills
    ref_m, ref_sizes = fs.wait_settled(ref)
    victim_m, victim_sizes = fs.wait_settled(victim)

    # 1. The victim equals the uninterrupted reference, series by series -- except that a crash may send an
    #    internal copy (a re-keyed event, a record for the repeat-contact pipeline) a second time; the
    #    receiver recognises it by its id and counts it as a duplicate. So the duplicate counters may only
    #    exceed the reference's by exactly the extra copies that are in the victim's topics.
    dup = "contactpulse_events_duplicate_total"
    same = lambda m: {k: v for k, v in fs.data_series(m).items() if k[0] != dup}
    assert fs.diff(same(ref_m), same(victim_m)) == []
    for topic in (fs.TOPIC, fs.INTERNAL):
        extra_copies = victim_sizes[topic] - ref_sizes[topic]
        assert victim_m.get1(dup, topic=topic) - ref_m.get1(dup, topic=topic) == extra_copies >= 0
    # 2. Accounting: nothing lost, nothing twice. Hand count of the workload: 2000 simulated contacts;
    #    the tail adds 25 duplicates, 6 late events, 8 wrongly keyed events, 12 malformed/future/old/
    #    oversize messages and 6 extra-queue offers. The 8 re-keyed ones come back once more each.
    assert produced == len(wl.events) + 25 + 6 + 8 + 12 + 6
    assert ref_sizes[fs.TOPIC] == produced + 8
    acc = fs.accounting(ref_m)
    assert acc["duplicate"] == 25 and acc["rekeyed"] == 8
    assert sum(acc.values()) == produced + 8
    assert sum(fs.accounting(victim_m).values()) == victim_sizes[fs.TOPIC]
    rejected = {dict(k)["reason"]: v for k, v in victim_m.series("contactpulse_events_rejected_total").items()
                if dict(k)["topic"] == fs.TOPIC}
    expected = fs.expected_exposition(settings, wl.by_partition())
    expected_rejected = {dict(k)["reason"]: v for k, v in expected.series("contactpulse_events_rejected_total").items()}
    assert rejected == expected_rejected
    # 12 malformed & co (one per reason below) + 3 late answers + queue-budget rejections
    assert {r: n for r, n in rejected.items() if r != "queue_budget_exceeded"} == {
        "malformed_json": 1, "invalid_utf8": 1, "not_an_object": 2, "missing_field": 1, "wrong_type": 1,
        "unknown_type": 1, "unknown_channel": 1, "bad_timestamp": 1, "future_timestamp": 1, "too_old": 1,
        "oversize": 1, "too_late": 3}
    # 3. The reference equals the in-process model (same code, no Kafka) and the tiny model (no shared code).
    worker_contacts = {k: v for k, v in fs.data_series(ref_m).items()
                       if k in expected or k[0].startswith(("contactpulse_contacts_", "contactpulse_answer_"))}
    assert fs.diff(fs.data_series(expected), worker_contacts) == []
    model = fs.tiny_model(wl.model_events)
    for (queue, channel), n in model.items():
        L = dict(queue=queue, channel=channel, window="today")
        assert victim_m.get1("contactpulse_contacts_offered", **L) == n["offered"]
        assert victim_m.get1("contactpulse_contacts_answered", **L) == n["answered"]
        assert victim_m.get1("contactpulse_contacts_answered_within", threshold=20, **L) == n["within20"]
        assert victim_m.get1("contactpulse_contacts_abandoned", **L) == n["abandoned"]
        assert victim_m.get1("contactpulse_contacts_short_abandoned", **L) == n["short"]
        assert victim_m.get1("contactpulse_contacts_handled", **L) == n["handled"]
    assert sum(n["offered"] + n["short"] for n in model.values()) == 2000 + 4
    # 4. Dead letters: at least once, never lost; deduplicated by (partition, offset) they match 1:1.
    dead = [orjson.loads(r.value) for r in consume_all(victim.prefix + "contactpulse-dead-letters")]
    unique = {(d["partition"], d["offset"]): d["reason"] for d in dead}
    assert len(unique) == sum(rejected.values())
    assert sorted(unique.values()) == sorted(r for r, n in rejected.items() for _ in range(int(n)))
    print(f"\nkill -9 at (accounted before, at kill, produced, restart s) {kills}: {produced} messages, {len(dead)} dead letters "
          f"({len(unique)} unique), {len(same(victim_m))} series equal to the reference, extra copies "
          f"{ {t: victim_sizes[t] - ref_sizes[t] for t in victim_sizes} }, read back after the last restart: "
          f"{victim_m.get1('contactpulse_messages_read_back_total')}")

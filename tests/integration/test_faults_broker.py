"""Issue 6: stop the broker for 30 s in the middle of the traffic; the worker reconnects by itself, /metrics
keeps answering (and says it is stale), and once it has caught up every number is exact.

The outage needs a broker of its own (the shared one on 9092 must stay up for everyone else): it runs on
a free port with its own state directory and is wiped at the end. The uninterrupted reference worker reads
the same workload from the shared broker.
"""
import shutil
import subprocess
import time

import httpx
import pytest

import fault_support as fs
from harness import BROKER, Worker, create_topics, own_broker_env, produce

pytestmark = pytest.mark.broker

OUTAGE_SECONDS = 30


@pytest.fixture
def own_broker(tmp_path_factory):
    state = tmp_path_factory.mktemp("kafka-outage")
    port, env = own_broker_env(state)

    def broker(action: str) -> None:
        subprocess.run([str(BROKER), action], check=True, env=env, stdout=subprocess.DEVNULL, timeout=120)

    broker("start")
    broker.bootstrap = f"127.0.0.1:{port}"
    yield broker
    broker("stop")
    shutil.rmtree(state, ignore_errors=True)


def test_broker_outage_of_30_s(worker_factory, own_broker, kafka):
    now, settings = fs.site_settings(before=330, after=200)
    wl = fs.Workload(seed=23, contacts=1200, now=now)
    records = wl.records()
    first, second = records[: len(records) // 2], records[len(records) // 2:]

    ref: Worker = worker_factory(partitions=2, **settings)
    victim: Worker = worker_factory(partitions=2, bootstrap=own_broker.bootstrap, **settings)
    create_topics(ref.prefix, 2)
    create_topics(victim.prefix, 2, bootstrap=own_broker.bootstrap)
    ref.start()
    victim.start()
    produce(ref.prefix + fs.TOPIC, records)

    # Traffic, then the broker goes away while the worker is still working through it.
    assert victim.metrics().get1("contactpulse_broker_connected") == 1
    produce(victim.prefix + fs.TOPIC, first, bootstrap=own_broker.bootstrap)
    deadline = time.time() + 30
    while (at_stop := sum(fs.accounting(victim.metrics()).values())) == 0 and time.time() < deadline:
        time.sleep(0.01)
    own_broker("stop")  # as soon as the worker has made progress: mid-stream
    stopped = time.time()
    scrapes, disconnected_at = [], None
    while time.time() - stopped < OUTAGE_SECONDS:
        t0 = time.time()
        r = httpx.get(victim.url + "/metrics", timeout=5)  # must answer all along
        scrapes.append((r.status_code, time.time() - t0))
        m = fs.Metrics(fs.parse_metrics(r.text))
        if disconnected_at is None and m.get1("contactpulse_broker_connected") == 0:
            disconnected_at = time.time() - stopped
            # Staleness is visible: the last batch is older than the outage, and it stops moving.
            last_batch = m.get1("contactpulse_last_batch_timestamp_seconds")
            assert 0 < last_batch <= time.time()
        time.sleep(1.0)
    assert victim.proc.poll() is None, "the worker must survive a broker outage"
    assert all(code == 200 for code, _ in scrapes) and len(scrapes) >= OUTAGE_SECONDS // 2
    assert max(seconds for _, seconds in scrapes) < 2.0
    assert disconnected_at is not None and disconnected_at < 15, disconnected_at
    assert m.get1("contactpulse_last_batch_timestamp_seconds") == last_batch  # nothing processed meanwhile

    own_broker("start")
    restarted = time.time()
    victim.wait_for(lambda m: m.get1("contactpulse_broker_connected") == 1, timeout=60, what="reconnected")
    reconnected_after = time.time() - restarted
    produce(victim.prefix + fs.TOPIC, second, bootstrap=own_broker.bootstrap)

    ref_m, ref_sizes = fs.wait_settled(ref)
    victim_m, victim_sizes = fs.wait_settled(victim, timeout=120, bootstrap=own_broker.bootstrap)
    dup = "contactpulse_events_duplicate_total"
    same = lambda m: {k: v for k, v in fs.data_series(m).items() if k[0] != dup}
    assert fs.diff(same(ref_m), same(victim_m)) == []
    for topic in (fs.TOPIC, fs.INTERNAL):  # as in test_faults_kill: extra duplicates == extra copies
        assert victim_m.get1(dup, topic=topic) - ref_m.get1(dup, topic=topic) == \
            victim_sizes[topic] - ref_sizes[topic] >= 0
    # Nothing lost: every produced message (and every re-keyed copy) accounted for exactly once.
    assert sum(fs.accounting(victim_m).values()) == victim_sizes[fs.TOPIC] >= len(records)
    assert victim_m.get1("contactpulse_broker_connected") == 1
    victim.stop()  # while its broker is still up (a clean shutdown talks to it)
    print(f"\nbroker outage {OUTAGE_SECONDS} s (stopped with {at_stop:.0f} of {len(first)} messages accounted): {len(scrapes)} scrapes all 200 (slowest "
          f"{max(s for _, s in scrapes):.3f} s), broker_connected 0 after {disconnected_at:.1f} s, "
          f"reconnected {reconnected_after:.1f} s after the broker came back")

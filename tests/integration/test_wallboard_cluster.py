"""Issue 9, several workers: each wallboard shows what the cluster knows, through a real Prometheus
(Debian's binary) scraping both workers; without Prometheus a worker shows its own partitions, and says so."""
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest

from harness import ROOT, Worker, create_topics, event, free_port, one_window, produce, quiet_clock

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy"))
from promserver import PromServer  # noqa: E402

pytestmark = [pytest.mark.broker, pytest.mark.prometheus]

COUNTS = ("offered", "answered", "abandoned", "sl_numerator", "sl_denominator", "service_level", "sl_status",
          "waiting", "asa_seconds", "abandon_ratio", "agents_available", "frt_backlog")


def on(partition: int, ev: dict, key_field: str = "contact_id") -> tuple:
    """The event on a chosen partition, keyed as the worker expects: each worker owns one partition."""
    return (ev[key_field].encode(), orjson.dumps(ev), partition)


def agent(agent_id: str, ts: float) -> dict:
    return {"event_id": f"{agent_id}-avail", "type": "state", "ts": int(ts * 1000), "agent_id": agent_id,
            "state": "available", "queues": ["sales"]}


def ticket(ticket_id: str, ts: float) -> dict:
    return {"event_id": f"{ticket_id}-created", "type": "created", "ts": int(ts * 1000), "ticket_id": ticket_id,
            "queue": "sales", "channel": "email", "priority": "normal"}


# By hand, per partition (SL 80% in 20 s):
#   partition 0, sales/voice: a1 answered after 5 s, a2 abandoned after 40 s, a3 waiting since T+30;
#                agent x1 available; ticket k1 unanswered.
#   partition 1, sales/chat: b1 answered after 10 s, b2 after 50 s, b3 waiting since T+20;
#                support/voice: b4 answered after 2 s; agent x2 available; ticket k2 unanswered.
LOCAL = {
    0: {"sales": dict(offered=2, answered=1, abandoned=1, sl_numerator=1, sl_denominator=2, service_level=0.5,
                      sl_status="red", waiting=1, asa_seconds=5.0, abandon_ratio=0.5, agents_available=1,
                      frt_backlog=1)},
    1: {"sales": dict(offered=2, answered=2, abandoned=0, sl_numerator=1, sl_denominator=2, service_level=0.5,
                      sl_status="red", waiting=1, asa_seconds=30.0, abandon_ratio=0.0, agents_available=1,
                      frt_backlog=1),
        "support": dict(offered=1, answered=1, abandoned=0, sl_numerator=1, sl_denominator=1, service_level=1.0,
                        sl_status="green", waiting=0, asa_seconds=2.0, abandon_ratio=0.0, agents_available=None,
                        frt_backlog=None)},
}
# The cluster: counts added, then divided: sales 2 of 4 within 20 s; ASA (5 + 10 + 50) / 3; 1 abandon of 4.
CLUSTER = {
    "sales": dict(offered=4, answered=3, abandoned=1, sl_numerator=2, sl_denominator=4, service_level=0.5,
                  sl_status="red", waiting=2, asa_seconds=65 / 3, abandon_ratio=0.25, agents_available=2,
                  frt_backlog=2),
    "support": LOCAL[1]["support"],
}


def snapshot(w: Worker) -> dict:
    r = httpx.get(f"{w.url}/wallboard/snapshot.json", params={"queues": "sales,support"}, timeout=10)
    r.raise_for_status()
    return r.json()


def numbers(snap: dict) -> dict:
    return {t["queue"]: {k: t[k] for k in COUNTS} for t in snap["queues"]}


def test_each_wallboard_shows_the_whole_cluster_through_prometheus(worker_factory, tmp_path):
    ports = [free_port(), free_port()]
    prom = PromServer(tmp_path / "prom", [f"127.0.0.1:{p}" for p in ports], rule_files=[])
    # An hour interval with "now" >= 15 min from its edges (quiet_clock): the events (60 s back) and every
    # board read below fall in one interval, without waiting for a boundary.
    clock = quiet_clock()
    common = dict(partitions=2, wallboard_prometheus_url=prom.url, **clock)
    w1: Worker = worker_factory(port=ports[0], **common)
    w2: Worker = worker_factory(prefix=w1.prefix, app_id=w1.app_id, port=ports[1],
                                data_dir=str(ROOT / ".contactpulse" / f"{w1.app_id}-2"), **common)
    create_topics(w1.prefix, 2)
    w1.start(timeout=90)
    w2.start(timeout=120, expect_partitions=1)
    deadline = time.time() + 60
    while len(httpx.get(w1.url + "/healthz").json()["partitions"]) != 1:  # the rebalance reaches w1 too
        assert time.time() < deadline, "the two workers did not split the partitions"
        time.sleep(0.5)
    owner = {httpx.get(w.url + "/healthz").json()["partitions"][0]: w for w in (w1, w2)}
    assert set(owner) == {0, 1}

    now = time.time()
    T = float(int(now) - 60)
    assert one_window(clock, T, now + 300), clock
    sv, sc, su = dict(queue="sales", channel="voice"), dict(queue="sales", channel="chat"), dict(queue="support", channel="voice")
    produce(w1.prefix + "contact-events", [
        on(0, event("offered", "a1", T, **sv)), on(0, event("answered", "a1", T + 5, agent_id="x1", **sv)),
        on(0, event("offered", "a2", T, **sv)), on(0, event("abandoned", "a2", T + 40, **sv)),
        on(0, event("offered", "a3", T + 30, **sv)),
        on(1, event("offered", "b1", T, **sc)), on(1, event("answered", "b1", T + 10, agent_id="x2", **sc)),
        on(1, event("offered", "b2", T, **sc)), on(1, event("answered", "b2", T + 50, agent_id="x2", **sc)),
        on(1, event("offered", "b3", T + 20, **sc)),
        on(1, event("offered", "b4", T, **su)), on(1, event("answered", "b4", T + 2, agent_id="x2", **su)),
    ])
    produce(w1.prefix + "agent-events", [on(0, agent("x1", T), "agent_id"), on(1, agent("x2", T), "agent_id")])
    produce(w1.prefix + "ticket-events", [on(0, ticket("k1", T), "ticket_id"), on(1, ticket("k2", T), "ticket_id")])

    # Without Prometheus yet, each worker's board falls back to its own partition, and says so.
    for partition, w in owner.items():
        snap = None
        deadline = time.time() + 60
        while time.time() < deadline:
            snap = snapshot(w)
            got = {q: n for q, n in numbers(snap).items() if n["offered"] or n["waiting"]}
            if got == LOCAL[partition]:
                break
            time.sleep(0.5)
        assert {q: n for q, n in numbers(snap).items() if n["offered"] or n["waiting"]} == LOCAL[partition]
        assert snap["source"] == "worker" and snap["scope"] == f"this worker: partitions {partition} of 2"
        assert snap["warning"].startswith("Prometheus unreachable (")
        oldest = snap["queues"][0]["oldest_wait_seconds"]
        since = T + 30 if partition == 0 else T + 20  # a3 or b3
        assert snap["generated_at"] - since - 0.01 <= oldest <= snap["generated_at"] - since + 0.5

    with prom:
        prom.wait_for('count(up{job="contactpulse"} == 1) == 2', timeout=60)
        for w in (w1, w2):  # both boards: the same cluster numbers, from Prometheus
            deadline = time.time() + 60
            while True:
                snap = snapshot(w)
                if snap["source"] == "prometheus" and numbers(snap) == CLUSTER:
                    break
                assert time.time() < deadline, (snap["source"], snap["warning"], numbers(snap))
                time.sleep(0.5)
            assert snap["warning"] is None and snap["scope"] == "cluster (all workers, via Prometheus)"
            # b3 (since T+20) is the oldest in the cluster; the age is brought forward from the scrape
            oldest = snap["queues"][0]["oldest_wait_seconds"]
            assert snap["generated_at"] - (T + 20) - 0.6 <= oldest <= snap["generated_at"] - (T + 20) + 0.6
    # Prometheus gone: back to this worker's own numbers, with the warning on the page.
    time.sleep(1.0)  # past the half-second the boards share one set of samples
    snap = snapshot(owner[1])
    assert snap["source"] == "worker" and snap["warning"].startswith("Prometheus unreachable (")
    assert {q: n for q, n in numbers(snap).items() if n["offered"] or n["waiting"]} == LOCAL[1]

"""Issue 7, scale-out: two workers in one consumer group share a 4-partition topic; a real Prometheus
(Debian's binary) scrapes whichever workers are running, and its per-queue sums stay exact through a
scale-out (A alone -> A + B) and a scale-in (B stopped with SIGTERM -> A alone again).

Stages, each with its own batch of contact events on all four partitions:
  1. worker A alone owns partitions 0-3 and processes batch 1;
  2. worker B joins (same app_id and prefix = same consumer group): each owns 2 partitions, both process
     batch 2 — including answers to contacts offered in batch 1, whose records B must have recovered
     from the changelog;
  3. B stops: A takes all 4 partitions back (recovering B's from the changelog) and processes batch 3 —
     including answers to batch-2 contacts B held, and batch-1 events delivered again (duplicates).
"""
import itertools
import json
import os
import shutil
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
import yaml
from aiokafka.partitioner import murmur2

import harness
from harness import ROOT, Worker, create_topics, event, free_port, produce

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy"))
from promserver import PromServer  # noqa: E402

pytestmark = [pytest.mark.broker, pytest.mark.prometheus]

PARTITIONS = 4
INPUTS = ("contact-events", "ticket-events", "agent-events", "survey-events", "contactpulse-customer-contacts")


def partition_for(key: str) -> int:
    """Kafka's default partitioner for a keyed message (murmur2), as the producer in produce() uses it."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % PARTITIONS


def contact_on(partition: int, name: str) -> str:
    """A contact id that lands on `partition` (deterministic: the first suffix that does)."""
    return next(f"{name}-{i}" for i in range(10_000) if partition_for(f"{name}-{i}") == partition)


def batch(b: int, t0: float) -> list[dict]:
    """Batch b (1-3): on EVERY partition, the same seven patterns (waits in seconds; SL thresholds 20, 10;
    short-abandon threshold 5 s):
      sales:   A answered after 5 s, B answered after 15 s
      support: C answered after 40 s, D abandoned after 25 s
      billing: E abandoned after 3 s (short: excluded from offered), F offered and still waiting,
               G offered in batch b and answered 50 s later in batch b + 1 (batches 1 and 2 only),
               so the record crosses a rebalance.
    Batch 3 also delivers batch 1's "answered" of A again on each partition (same event_id): duplicates."""
    base = t0 + (b - 1) * 100  # batch 1 at t0..t0+60, batch 2 at t0+100.., batch 3 at t0+200..
    per_partition = []
    for p in range(PARTITIONS):
        out: list[dict] = []
        per_partition.append(out)
        def cid(name, batch_no=b):
            return contact_on(p, f"b{batch_no}{name}")
        a, bb, c, d, e, f, g = (cid(n) for n in "ABCDEFG")
        out += [event("offered", a, base, queue="sales"), event("answered", a, base + 5, queue="sales", agent_id=f"s{p}"),
                event("offered", bb, base, queue="sales"), event("answered", bb, base + 15, queue="sales", agent_id=f"s{p}"),
                event("offered", c, base, queue="support"), event("answered", c, base + 40, queue="support", agent_id=f"u{p}"),
                event("offered", d, base, queue="support"), event("abandoned", d, base + 25, queue="support"),
                event("offered", e, base, queue="billing"), event("abandoned", e, base + 3, queue="billing"),
                event("offered", f, base, queue="billing")]
        if b < 3:
            out.append(event("offered", g, base + 10, queue="billing"))
        if b > 1:  # the previous batch's G, answered 50 s after it was offered
            out.append(event("answered", cid("G", b - 1), base - 100 + 60, queue="billing", agent_id=f"g{p}"))
        if b == 3:
            out.append(event("answered", cid("A", 1), t0 + 5, queue="sales", agent_id=f"s{p}"))
    # Interleaved (partition 0, 1, 2, 3, 0, ...), so any slice of the batch touches every partition;
    # each contact's events stay in order.
    return [e for group in itertools.zip_longest(*per_partition) for e in group if e is not None]


def reference(events: list[dict], thresholds=(10, 20), short_abandon=5.0) -> dict:
    """Independent tiny model: per-queue counts straight from the events (first copy of an event_id counts)."""
    seen, contacts, accepted, duplicates = set(), {}, {}, 0
    for e in events:
        if e["event_id"] in seen:
            duplicates += 1
            continue
        seen.add(e["event_id"])
        accepted[e["type"]] = accepted.get(e["type"], 0) + 1
        contacts.setdefault(e["contact_id"], {"queue": e["queue"]})[e["type"]] = e["ts"] / 1000
    q = {}
    for c in contacts.values():
        n = q.setdefault(c["queue"], {"offered": 0, "answered": 0, "abandoned": 0, "short": 0, "wait_sum": 0,
                                      "waiting": 0, **{f"within{t}": 0 for t in thresholds}})
        if "answered" in c:
            wait = c["answered"] - c["offered"]
            n["offered"] += 1
            n["answered"] += 1
            n["wait_sum"] += wait
            for t in thresholds:
                n[f"within{t}"] += wait <= t
        elif "abandoned" in c:
            if c["abandoned"] - c["offered"] <= short_abandon:
                n["short"] += 1
            else:
                n["offered"] += 1
                n["abandoned"] += 1
        else:
            n["waiting"] += 1
    return {"queues": q, "accepted": accepted, "duplicates": duplicates}


def q(offered, answered, abandoned, short, wait_sum, waiting, within10, within20):
    return dict(offered=offered, answered=answered, abandoned=abandoned, short=short, wait_sum=wait_sum,
                waiting=waiting, within10=within10, within20=within20)


# By hand (4 partitions x the patterns of batch()):
#  after batch 1: sales 4x(A,B): offered 8, answered 8, within 10 s 4 (A), within 20 s 8, wait 4x(5+15)=80;
#     support 4x(C,D): offered 8, answered 4, abandoned 4, none within 20 s, wait 4x40=160;
#     billing: 4 short abandons (E), waiting 4 F + 4 G1 = 8, nothing offered yet.
#     accepted: offered 7 per partition = 28; answered A,B,C = 12; abandoned D,E = 8.
#  after batch 2: sales and support double; billing: G1 answered after 50 s -> offered 4, answered 4,
#     wait 200; short 8; waiting 4+4 F + 4 G2 = 12. accepted: offered 28+28=56, answered 12+12+4=28, abandoned 16.
#  after batch 3: sales/support triple; billing: G2 answered too -> offered 8, wait 400; short 12; waiting
#     12 F (no G3). accepted: offered 56+24=80, answered 28+12+4=44, abandoned 24; 4 duplicates (A1 again).
EXPECTED = {
    1: {"queues": {"sales": q(8, 8, 0, 0, 80, 0, 4, 8), "support": q(8, 4, 4, 0, 160, 0, 0, 0),
                   "billing": q(0, 0, 0, 4, 0, 8, 0, 0)},
        "accepted": {"offered": 28, "answered": 12, "abandoned": 8}, "duplicates": 0},
    2: {"queues": {"sales": q(16, 16, 0, 0, 160, 0, 8, 16), "support": q(16, 8, 8, 0, 320, 0, 0, 0),
                   "billing": q(4, 4, 0, 8, 200, 12, 0, 0)},
        "accepted": {"offered": 56, "answered": 28, "abandoned": 16}, "duplicates": 0},
    3: {"queues": {"sales": q(24, 24, 0, 0, 240, 0, 12, 24), "support": q(24, 12, 12, 0, 480, 0, 0, 0),
                   "billing": q(8, 8, 0, 12, 400, 12, 0, 0)},
        "accepted": {"offered": 80, "answered": 44, "abandoned": 24}, "duplicates": 4},
}

# PromQL -> how to read the expected value for a queue from EXPECTED (default SL variant abandons_count:
# numerator = answered within T, denominator = answered + abandoned after the short threshold = offered).
PER_QUEUE = {
    'sum by (queue) (contactpulse_contacts_offered{window="%(w)s"})': "offered",
    'sum by (queue) (contactpulse_contacts_answered{window="%(w)s"})': "answered",
    'sum by (queue) (contactpulse_contacts_abandoned{window="%(w)s"})': "abandoned",
    'sum by (queue) (contactpulse_contacts_short_abandoned{window="%(w)s"})': "short",
    'sum by (queue) (contactpulse_answer_wait_seconds_sum{window="%(w)s"})': "wait_sum",
    'sum by (queue) (contactpulse_contacts_answered_within{window="%(w)s", threshold="10"})': "within10",
    'sum by (queue) (contactpulse_contacts_answered_within{window="%(w)s", threshold="20"})': "within20",
    'sum by (queue) (contactpulse_contacts_sl_numerator{window="%(w)s", threshold="20"})': "within20",
    'sum by (queue) (contactpulse_contacts_sl_denominator{window="%(w)s"})': "offered",
    "sum by (queue) (contactpulse_contacts_waiting)": "waiting",
}


def cluster_view(prom: PromServer) -> dict:
    """What Prometheus says now: {(window, queue, query): value} plus the accepted/duplicate totals."""
    out: dict = {}
    for w in ("today", "interval", "trailing"):  # all events are in this interval, so all windows agree
        for expr in PER_QUEUE:
            for row in prom.query(expr % {"w": w}):
                out[(w, row["metric"]["queue"], expr % {"w": w})] = float(row["value"][1])
    for row in prom.query('sum by (type) (contactpulse_events_accepted_total{topic="contact-events"})'):
        out[("accepted", row["metric"]["type"])] = float(row["value"][1])
    for row in prom.query('sum(contactpulse_events_duplicate_total{topic="contact-events"})'):
        out[("duplicates",)] = float(row["value"][1])
    return out


def want_view(expected: dict) -> dict:
    out = {(w, queue, expr % {"w": w}): float(n[field])
           for w in ("today", "interval", "trailing") for expr, field in PER_QUEUE.items()
           for queue, n in expected["queues"].items()}
    out.update({("accepted", etype): float(v) for etype, v in expected["accepted"].items()})
    out[("duplicates",)] = float(expected["duplicates"])
    return out


def diff(got: dict, want: dict) -> str:
    return "\n".join(f"  {k}: got {got.get(k)}, want {want.get(k)}"
                     for k in sorted(set(got) | set(want), key=str) if got.get(k) != want.get(k))


def healthz(w: Worker) -> list[int]:
    return httpx.get(w.url + "/healthz", timeout=3.0).json()["partitions"]


def wait_owned(workers: dict[str, Worker], want: dict[str, int], timeout: float = 90.0) -> dict[str, list[int]]:
    """Until each worker serves exactly `want[name]` partitions (recovered) and together they cover 0-3 once."""
    deadline, owned = time.time() + timeout, {}
    while time.time() < deadline:
        try:
            owned = {name: healthz(w) for name, w in workers.items()}
        except (httpx.HTTPError, ValueError):
            owned = {}
        if owned and all(len(owned[n]) == want[n] for n in want) and \
                sorted(p for ps in owned.values() for p in ps) == list(range(PARTITIONS)):
            return owned
        time.sleep(0.3)
    raise AssertionError(f"partitions not settled as {want} in {timeout} s: {owned}")


class ScaleProm(PromServer):
    """PromServer whose targets come from a file_sd file, rewritten as workers start and stop (as in
    deploy/prometheus/prometheus.yml): a removed target's series are marked stale at once."""

    def __init__(self, workdir: Path):
        super().__init__(workdir, targets=[], rule_files=[])
        self.targets_path = self.workdir / "workers.json"
        self.set_targets([])
        config = yaml.safe_load(self.config_path.read_text())
        config["scrape_configs"][0].pop("static_configs")
        config["scrape_configs"][0]["file_sd_configs"] = [{"files": [str(self.targets_path)], "refresh_interval": "1s"}]
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def set_targets(self, targets: list[str]) -> None:
        tmp = self.targets_path.with_suffix(".tmp")
        tmp.write_text(json.dumps([{"targets": targets}]))
        os.replace(tmp, self.targets_path)  # atomic, so Prometheus never reads half a file


def rocksdict_installed() -> bool:
    try:
        import rocksdict  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("store", ["memory://", pytest.param("rocksdb://", marks=pytest.mark.skipif(
    not rocksdict_installed(), reason="store=rocksdb:// needs `pip install rocksdict`"))])
def test_two_workers_share_partitions_and_prometheus_sums_stay_exact(worker_factory, tmp_path, store):
    clock = harness.quiet_clock()  # "now" >= 15 min from the hour interval's edges, midnight hours away
    prefix = f"t{uuid.uuid4().hex[:8]}."
    app_id = f"cp-{prefix.rstrip('.')}"
    common = dict(prefix=prefix, app_id=app_id, partitions=PARTITIONS, store=store, **clock)
    a: Worker = worker_factory(port=free_port(), **common)
    b: Worker = worker_factory(port=free_port(), data_dir=str(ROOT / ".contactpulse" / f"{app_id}-b"), **common)
    try:
        run_stages(a, b, prefix, tmp_path)
    finally:
        for w in (a, b):  # then their local state (RocksDB files) can go
            w.stop()
            shutil.rmtree(w.data_dir, ignore_errors=True)


def run_stages(a: Worker, b: Worker, prefix: str, tmp_path: Path) -> None:
    prom = ScaleProm(tmp_path / "prom")
    create_topics(prefix, PARTITIONS)
    t0 = time.time() - 420  # batches at t0..t0+260: inside the current interval, never in the future
    produced: list[dict] = []

    def stage_events(n: int) -> tuple[list[dict], list[dict]]:
        """Batch n, split: two thirds to send while the group changes, the rest once it has settled."""
        events = batch(n, t0)
        produced.extend(events)
        assert reference(produced) == EXPECTED[n], "the event list no longer matches the hand-made numbers"
        cut = len(events) * 2 // 3
        return events[:cut], events[cut:]

    def trickle(events: list[dict], seconds: float = 6.0, chunks: int = 12) -> threading.Thread:
        """Produce in chunks over `seconds` from a thread: traffic keeps arriving during the rebalance."""
        def run():
            try:
                size = -(-len(events) // chunks)
                for i in range(0, len(events), size):
                    produce(prefix + "contact-events", events[i:i + size])
                    time.sleep(seconds / chunks)
            except BaseException as exc:  # reported by the test thread after join()
                errors.append(exc)
        errors: list[BaseException] = []
        thread = threading.Thread(target=run, daemon=True)
        thread.errors = errors
        thread.start()
        return thread

    def joined(thread: threading.Thread) -> None:
        thread.join(timeout=60)
        assert not thread.is_alive() and not thread.errors, thread.errors

    def check_cluster(n: int, running: dict[str, Worker], timeout: float = 60.0) -> None:
        """Prometheus' sums equal stage n's numbers; each worker exports exactly its own partitions."""
        want = want_view(EXPECTED[n])
        deadline = time.time() + timeout
        while True:
            got = cluster_view(prom)
            if got == want:
                break
            assert time.time() < deadline, f"stage {n}: Prometheus sums differ:\n{diff(got, want)}"
            time.sleep(0.5)
        # One copy of every series per running worker: a stopped worker's series are gone (stale), and
        # every running worker holds a share of every queue (all queues are on every partition).
        counts = {r["metric"]["queue"]: int(float(r["value"][1]))
                  for r in prom.query('count by (queue) (contactpulse_contacts_offered{window="today"})')}
        assert counts == {queue: len(running) for queue in EXPECTED[n]["queues"]}
        # No partition exported twice: each worker's own counts are those of the partitions /healthz says
        # it owns (every partition carries the same events, so a quarter of the total per partition), and
        # it is assigned exactly those partitions of every input topic.
        owned = {name: healthz(w) for name, w in running.items()}
        assert sorted(p for ps in owned.values() for p in ps) == list(range(PARTITIONS)), owned
        for name, w in running.items():
            m = w.metrics()
            for etype, total in EXPECTED[n]["accepted"].items():
                got_w = m.get1("contactpulse_events_accepted_total", topic="contact-events", type=etype)
                assert got_w == total * len(owned[name]) / PARTITIONS, (name, owned[name], etype, got_w)
            assigned = {dict(lv)["topic"]: v for lv, v in m.series("contactpulse_partitions_assigned").items()}
            assert assigned == {prefix + t: len(owned[name]) for t in INPUTS}, (name, assigned)
            assert m.get1("contactpulse_recovering") == 0

    with prom:
        # Stage 1: A alone.
        a.start(timeout=90, expect_partitions=PARTITIONS)
        prom.set_targets([f"127.0.0.1:{a.port}"])
        first, rest = stage_events(1)
        produce(prefix + "contact-events", first + rest)
        check_cluster(1, {"A": a})

        # Stage 2: B joins the group while batch 2 is arriving; the partitions are split 2 + 2.
        first, rest = stage_events(2)
        sending = trickle(first)
        b.start(timeout=120, expect_partitions=2)
        prom.set_targets([f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"])
        owned = wait_owned({"A": a, "B": b}, {"A": 2, "B": 2})
        joined(sending)
        batches_before = {name: w.metrics().get1("contactpulse_batches_total") for name, w in (("A", a), ("B", b))}
        produce(prefix + "contact-events", rest)  # touches all four partitions
        check_cluster(2, {"A": a, "B": b})
        for name, w in (("A", a), ("B", b)):  # both did work on batch 2
            assert w.metrics().get1("contactpulse_batches_total") > batches_before[name], name

        # Stage 3: B stops (SIGTERM: it leaves the group) while batch 3 is arriving; A takes B's partitions
        # back, recovering them from the changelog.
        first, rest = stage_events(3)
        sending = trickle(first, seconds=4.0)
        time.sleep(1.0)
        b.stop()
        assert b.proc.returncode is not None
        prom.set_targets([f"127.0.0.1:{a.port}"])
        wait_owned({"A": a}, {"A": PARTITIONS})
        joined(sending)
        produce(prefix + "contact-events", rest)
        check_cluster(3, {"A": a})
        assert sorted(owned["A"] + owned["B"]) == list(range(PARTITIONS))

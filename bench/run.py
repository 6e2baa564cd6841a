"""contactpulse benchmark: one command, one local broker, figures printed (see docs/performance.md).

    python bench/run.py [--events 1000000] [--partitions 4] [--latency-rate 5000] [--latency-seconds 30]
                         [--scrape-interval 15]

1. Produces N realistic events (the simulated centre: calls, the agent states they imply, surveys, and
   e-mail tickets) to fresh topics (a unique prefix, so runs never mix).
2. Baselines: raw aiokafka consumption of the same messages (the Python floor), the same with an orjson
   parse per message, and a Faust agent that takes batches of them and does nothing (bench/faust_floor.py).
3. The contactpulse worker (a real worker process) processing them: input events/s from its first to its
   last batch, measured through its own /metrics (accepted + rejected + duplicate + rekeyed on the input
   topics; the internal customer-contacts records are work, not events, and are not counted; read every
   0.5 s with /metrics?name[]=...), peak RSS (VmHWM) and state size.
4. The cost of a full scrape of that state (what Prometheus costs the worker every scrape_interval).
5. Event-to-metric latency at a steady offered load: call events are produced at --latency-rate per
   second for --latency-seconds; the outcome counters are read every 100 ms (/metrics?name[]=..., which
   costs the worker next to nothing) while a full scrape every --scrape-interval seconds plays Prometheus;
   an event's latency is the time from its send until the worker's counters cover it. Prints p50/p99.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import harness  # noqa: E402  (the test harness runs the real worker the same way)
from streams.simulator import QueueModel, simulate_centre  # noqa: E402
from streams.topics import AGENT_EVENTS, CONTACT_EVENTS, SURVEY_EVENTS, TICKET_EVENTS  # noqa: E402

INPUT_TOPICS = (CONTACT_EVENTS, TICKET_EVENTS, AGENT_EVENTS, SURVEY_EVENTS)


def machine() -> str:
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, Python {platform.python_version()}"


def make_events(n: int, seed: int = 7) -> list[tuple[str, bytes, bytes]]:
    """(logical topic, key, value) of the first n events of the simulated centre: 8 call/chat queues of 60
    agents each at ~90% occupancy, with the agent states and surveys they imply, and e-mail tickets; the
    timestamps end just before now (1M events span ~5 hours of the centre's day)."""
    from datetime import datetime
    from itertools import islice

    queues = [QueueModel(f"q{i}", "voice" if i % 4 else "chat", 60, 1.8) for i in range(8)]
    # One customer per ~4 events (~2 contacts): most call once, some again (repeat contacts, FCR).
    raw = list(islice(simulate_centre(seed, queues, 0.0, ticket_rate=2.0, mean_handle=30.0,
                                      mean_patience=40.0, customers=max(100, n // 4)), n))
    stamps = [datetime.fromisoformat(ev["ts"]).timestamp() for _, _, ev in raw]
    shift = time.time() - 5 - max(stamps)
    out = []
    for (topic, key, ev), ts in zip(raw, stamps):
        ev["ts"] = int((ts + shift) * 1000)
        out.append((topic, key.encode(), orjson.dumps(ev)))
    return out


async def produce_all(prefix: str, records: list[tuple[str, bytes, bytes]]) -> float:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=harness.BOOTSTRAP, acks=1, linger_ms=20,
                                max_batch_size=512 * 1024, compression_type=None)
    await producer.start()
    t0 = time.perf_counter()
    try:
        pending = []
        for topic, key, value in records:
            pending.append(await producer.send(prefix + topic, value, key=key))
            if len(pending) >= 20000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.perf_counter() - t0


async def raw_consume(topics: list[str], n: int, parse: bool) -> float:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=harness.BOOTSTRAP, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None, max_partition_fetch_bytes=4 * 2**20)
    await consumer.start()
    seen = 0
    t0 = time.perf_counter()
    try:
        while seen < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10000)
            for msgs in batch.values():
                for m in msgs:
                    if parse:
                        orjson.loads(m.value)
                seen += sum(len(v) for v in batch.values())
        return time.perf_counter() - t0
    finally:
        await consumer.stop()


OUTCOME_FAMILIES = ("contactpulse_events_accepted_total", "contactpulse_events_rejected_total",
                    "contactpulse_events_duplicate_total", "contactpulse_events_rekeyed_total")
# Only the outcome counters (/metrics?name[]=...): a full scrape of a busy worker costs it ~0.1-0.2 s, which a
# poller would otherwise add to the figures it measures.
OUTCOMES_URL = "/metrics?" + "&".join(f"name[]={name}" for name in OUTCOME_FAMILIES)
OUTCOME_LINE = re.compile(rb"^contactpulse_events_(?:accepted|rejected|duplicate|rekeyed)_total\{([^}]*)\} (\S+)$", re.M)


def outcomes_in(text: bytes) -> float:
    """Input events the worker has dealt with (every outcome), read straight off the exposition: parsing
    all of it would cost the poller (and the producer sharing its event loop) ~0.2 s per poll, which the
    latency figure would then include."""
    return sum(float(v) for labels, v in OUTCOME_LINE.findall(text)
               if any(b'topic="%s"' % t.encode() in labels for t in INPUT_TOPICS))


def outcomes(w) -> float:
    return outcomes_in(httpx.get(w.url + OUTCOMES_URL, timeout=5.0).content)


def full_scrape(w) -> tuple[float, int, int]:
    """(seconds, series, bytes) of the fastest of three full scrapes, what Prometheus costs the worker."""
    best = None
    for _ in range(3):
        t = time.perf_counter()
        body = httpx.get(w.url + "/metrics", timeout=30.0).content
        took = time.perf_counter() - t
        if best is None or took < best[0]:
            best = (took, sum(1 for line in body.splitlines() if line and not line.startswith(b"#")), len(body))
    return best


def vm_hwm_mib(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return float("nan")


def faust_floor(topics: list[str], n: int) -> tuple[float, float]:
    """(events/s, events/CPU-s) of a Faust agent that only takes batches of the events."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "faust_floor.py"), ",".join(topics), str(n),
                             harness.BOOTSTRAP, str(harness.free_port()), "worker", "-l", "warn"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd="/tmp")
    try:
        for line in proc.stdout:
            if "FLOOR" in line:
                wall, per_cpu = line.split("FLOOR", 1)[1].split()
                return float(wall), float(per_cpu)
        raise RuntimeError("the Faust floor run ended without figures")
    finally:
        proc.kill()
        proc.wait()


def own_cpu() -> float:
    import resource
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def cpu_seconds(pid: int) -> float:
    """user + system CPU time of a process: a figure other load on the machine cannot inflate."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def worker_throughput(n: int, prefix: str, partitions: int) -> tuple[float, float, float, object]:
    w = harness.Worker(prefix=prefix, partitions=partitions, batch_size=5000)
    w.start(timeout=120)
    # Time from the first processed event to the last, read from the worker's own counters.
    first = last = None
    while True:
        done = outcomes(w)
        now = time.perf_counter()
        if first is None and done > 0:
            first = (now, done, cpu_seconds(w.proc.pid))
        if done >= n:
            last = (now, done, cpu_seconds(w.proc.pid))
            break
        time.sleep(0.5)
    rate = (last[1] - first[1]) / (last[0] - first[0])
    per_cpu_second = (last[1] - first[1]) / max(1e-9, last[2] - first[2])
    return rate, per_cpu_second, vm_hwm_mib(w.proc.pid), w


async def steady_latency(w, topic: str, rate: int, seconds: float, records, scrape_every: float) -> list[float]:
    """Produce at `rate`/s; return per-event latency (s) from send to visible in the outcome counters,
    polled every 100 ms, while a full scrape every `scrape_every` s plays Prometheus."""
    from aiokafka import AIOKafkaProducer

    base = outcomes(w)
    producer = AIOKafkaProducer(bootstrap_servers=harness.BOOTSTRAP, acks=1, linger_ms=2)
    await producer.start()
    sent_at: list[float] = []
    seen_at: dict[int, float] = {}
    stop = False

    async def poll():
        async with httpx.AsyncClient() as client:
            while not stop or len(seen_at) < len(sent_at):
                r = await client.get(w.url + OUTCOMES_URL)
                count = int(outcomes_in(r.content) - base)
                t = time.perf_counter()
                for i in range(len(seen_at), min(count, len(sent_at))):
                    seen_at[i] = t
                await asyncio.sleep(0.1)

    async def prometheus():
        async with httpx.AsyncClient(timeout=30.0) as client:
            while not stop:
                await client.get(w.url + "/metrics")
                await asyncio.sleep(scrape_every)

    poller = asyncio.create_task(poll())
    scraper = asyncio.create_task(prometheus())
    t0 = time.perf_counter()
    total = int(rate * seconds)
    tick = 0.01
    calls = [(key, value) for t, key, value in records if t == CONTACT_EVENTS]
    for i in range(total):
        due = t0 + i / rate
        delay = due - time.perf_counter()
        if delay > tick:
            await asyncio.sleep(delay)
        key, value = calls[i % len(calls)]
        ev = orjson.loads(value)
        ev["event_id"] = f"lat-{i}"
        ev["contact_id"] = f"lat-{i // 3}"
        ev["ts"] = int(time.time() * 1000)
        sent_at.append(time.perf_counter())
        await producer.send(topic, orjson.dumps(ev), key=ev["contact_id"].encode())
    await producer.flush()
    stop = True
    await asyncio.wait_for(poller, timeout=120)
    scraper.cancel()
    await producer.stop()
    return sorted(seen_at[i] - sent_at[i] for i in range(len(sent_at)))


def pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--latency-rate", type=int, default=5000)
    ap.add_argument("--latency-seconds", type=float, default=30.0)
    ap.add_argument("--scrape-interval", type=float, default=15.0,
                    help="a full /metrics scrape this often during the latency run, as Prometheus would")
    args = ap.parse_args()
    harness.broker("start")
    prefix = f"bench{int(time.time())}."
    harness.create_topics(prefix, args.partitions)
    topic = prefix + CONTACT_EVENTS
    topics = [prefix + t for t in INPUT_TOPICS]
    print(f"machine: {machine()}")
    t = time.perf_counter()
    records = make_events(args.events)
    n = len(records)
    mix = {t: sum(1 for r in records if r[0] == t) for t in INPUT_TOPICS}
    print(f"generated {n} events in {time.perf_counter() - t:.1f} s "
          f"({sum(len(v) for _, _, v in records) / n:.0f} bytes each on average): "
          + ", ".join(f"{t} {c}" for t, c in mix.items()))
    secs = asyncio.run(produce_all(prefix, records))
    print(f"produced: {n / secs:,.0f} events/s")
    c0 = own_cpu()
    raw = n / asyncio.run(raw_consume(topics, n, parse=False))
    raw_per_cpu = n / (own_cpu() - c0)
    parsed = n / asyncio.run(raw_consume(topics, n, parse=True))
    print(f"baseline raw aiokafka consume:          {raw:>10,.0f} events/s  ({raw_per_cpu:,.0f} events/CPU-s)")
    print(f"baseline aiokafka consume + orjson:     {parsed:>10,.0f} events/s")
    floor_wall, floor_cpu = faust_floor(topics, n)
    print(f"baseline Faust agent doing nothing:     {floor_wall:>10,.0f} events/s  ({floor_cpu:,.0f} events/CPU-s)")
    rate, per_cpu, rss, w = worker_throughput(n, prefix, args.partitions)
    print(f"contactpulse worker (1 process):        {rate:>10,.0f} events/s  = {rate / raw:.1%} of raw aiokafka")
    print(f"contactpulse worker per CPU-second:     {per_cpu:>10,.0f} events/CPU-s = {per_cpu / raw_per_cpu:.1%} "
          f"of raw aiokafka per CPU-second (immune to other load)")
    print(f"contactpulse worker vs the Faust floor: {per_cpu / floor_cpu:.0%} per CPU-second")
    print(f"load average during the run: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print(f"worker peak RSS after {n} events:       {rss:>10,.0f} MiB")
    m = w.metrics()
    open_contacts = sum(v for (name, _), v in m.items() if name == "contactpulse_contacts_waiting")
    print(f"contacts waiting at the end: {open_contacts:.0f}")
    took, series, size = full_scrape(w)
    print(f"a full scrape of that state: {took * 1000:,.0f} ms for {series:,} series ({size / 2**20:.1f} MiB)")
    try:
        lat = asyncio.run(steady_latency(w, topic, args.latency_rate, args.latency_seconds, records,
                                         args.scrape_interval))
        print(f"event-to-metric latency at {args.latency_rate}/s for {args.latency_seconds:.0f} s "
              f"(a full scrape every {args.scrape_interval:g} s): "
              f"p50 {pct(lat, 0.5) * 1000:.0f} ms, p99 {pct(lat, 0.99) * 1000:.0f} ms, max {lat[-1] * 1000:.0f} ms")
    finally:
        w.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

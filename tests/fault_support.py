"""Shared by the fault-injection tests: a deterministic workload and the numbers it must produce.

The workload is simulator traffic (seeded, so the same events every run) ending just before now, plus a
tail of duplicates, events too late for their interval, events in the future, and malformed messages of
every rejection reason. Two independent references say what the worker must export for it:
  * `expected_exposition`: the processor and collector run in-process over the same messages, in the
    partition order Kafka delivers them (murmur2 partitioner), on a plain dict instead of a Faust table;
  * `tiny_model`: twenty lines that count offered/answered/abandoned/handled straight from the events,
    sharing no code with the worker.
"""
from __future__ import annotations

import random
import re
import time
from datetime import datetime

import orjson
from aiokafka.partitioner import murmur2
from prometheus_client import CollectorRegistry, generate_latest

from harness import Metrics, parse_metrics

INTERVAL = 3600  # long intervals keep "the current interval" stable for the length of a fault test
TOPIC = "contact-events"
SETTINGS = dict(interval_seconds=INTERVAL, allowed_lateness_seconds=900, max_queues=4)
# Series that describe the worker process, not the data: they legitimately differ between two runs.
PROCESS_LOCAL = re.compile(
    r"^contactpulse_(batches|broker_connected|consumer_lag|partitions_assigned|last_batch|recovering|messages_read_back|oldest_waiting_age"
    r"|.*_age_seconds|build|process|scrape|web_)")


def wait_for_room(before: float, after: float, interval: int = INTERVAL) -> float:
    """Sleep until `before` s of the current interval have passed and `after` s remain (UTC); return now."""
    while True:
        now = time.time()
        into = now % interval
        if into >= before and interval - into >= after:
            return now
        time.sleep(max(0.1, min(interval - into + 0.1, 5) if into >= before else before - into + 0.1))


def site_settings(before: float, after: float) -> tuple[float, dict]:
    """(now, worker settings) with a site clock whose current interval began >= `before` s ago and has
    >= `after` s left. Hour intervals start at :00 UTC in UTC and at :30 UTC in Asia/Kolkata (+05:30), so
    one of the two always fits (before + after <= 1800) and no test has to wait for a boundary to pass."""
    from zoneinfo import ZoneInfo

    from metrics.kpi import interval_start

    now = time.time()
    for tz in ("UTC", "Asia/Kolkata"):
        start = interval_start(now, INTERVAL, ZoneInfo(tz))
        if now - start >= before and start + INTERVAL - now >= after:
            return now, {**SETTINGS, "timezone": tz}
    return wait_for_room(before, after), dict(SETTINGS)


def partition_for(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner (what aiokafka's producer does for a keyed message)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def simulated(seed: int, contacts: int, end: float) -> list[dict]:
    """Simulator events for `contacts` contacts, shifted so the last one happens at `end`."""
    from streams.simulator import QueueModel, simulate

    # ~8 arrivals/s at about full occupancy: some answered at once, some waiting long, some abandoning.
    queues = [QueueModel("sales", "voice", 19, 4.0), QueueModel("support", "voice", 10, 2.0),
              QueueModel("webchat", "chat", 8, 2.0)]
    run = dict(mean_handle=5.0, mean_patience=20.0, mean_wrapup=2.0, max_contacts=contacts)
    last = max(datetime.fromisoformat(e["ts"]).timestamp() for e in simulate(seed, queues, 0.0, **run))
    return list(simulate(seed, queues, end - last, **run))


def ms(ts: float) -> int:
    return int(round(ts * 1000))


def rekeyed_events(now: float) -> list[dict]:
    """4 contacts answered after 9 s (within 10 and 20 s), in support/voice, sent with a wrong key."""
    out = []
    for n in range(4):
        cid = f"rk-{n}"
        for etype, dt in (("offered", -40), ("answered", -31)):
            out.append({"event_id": f"{cid}-{etype}", "type": etype, "ts": datetime.fromtimestamp(
                now + dt).astimezone().isoformat(timespec="milliseconds"), "contact_id": cid,
                "queue": "support", "channel": "voice", "agent_id": "support-agent-1"})
    return out


def tail(now: float, events: list[dict], seed: int, order_dependent: bool = True) -> list[tuple[bytes, bytes]]:
    """Duplicates, late, future and malformed messages, each keyed (so its partition is known).

    order_dependent=False leaves out what depends on arrival order by definition: lateness (relative to the
    newest event seen) and which queues fit the label budget first."""
    rng = random.Random(seed)
    out: list[tuple[bytes, bytes]] = []
    # The same event delivered again (same event_id): counted once, the copy as a duplicate.
    for ev in rng.sample(events, 25):
        out.append((ev["contact_id"].encode(), orjson.dumps(ev)))
    # A contact offered and answered two hours ago: its interval closed long before the partition's
    # newest event, so the answer is too_late (the offer alone completes nothing and is accepted).
    for n in range(3 if order_dependent else 0):
        cid = f"late-{n}"
        for etype, dt in (("offered", 0), ("answered", 12)):
            ev = {"event_id": f"{cid}-{etype}", "type": etype, "ts": ms(now - 7200 + dt), "contact_id": cid,
                  "queue": "sales", "channel": "voice", "agent_id": "sales-agent-1"}
            out.append((cid.encode(), orjson.dumps(ev)))
    base = {"type": "offered", "ts": ms(now - 30), "queue": "sales", "channel": "voice"}
    bad = [
        b"{not json", b"\xff\xfe\x00\x01", b"[1, 2, 3]", b'"just a string"',
        orjson.dumps({**base, "event_id": "bad-1", "contact_id": "bad-1", "queue": None}),  # missing_field
        orjson.dumps({**base, "event_id": 12345, "contact_id": "bad-2"}),  # wrong_type
        orjson.dumps({**base, "event_id": "bad-3", "contact_id": "bad-3", "type": "teleported"}),
        orjson.dumps({**base, "event_id": "bad-4", "contact_id": "bad-4", "channel": "fax"}),
        orjson.dumps({**base, "event_id": "bad-5", "contact_id": "bad-5", "ts": "2026-11-23T09:00:00"}),
        orjson.dumps({**base, "event_id": "bad-6", "contact_id": "bad-6", "ts": ms(now + 3600)}),  # future
        orjson.dumps({**base, "event_id": "bad-7", "contact_id": "bad-7", "ts": ms(now - 30 * 86400)}),  # too_old
        orjson.dumps({**base, "event_id": "bad-8", "contact_id": "bad-8", "pad": "x" * 70_000}),  # oversize
    ]
    out += [(f"bad-{i}".encode(), value) for i, value in enumerate(bad)]
    # Sent with the wrong key: the worker produces them again keyed by contact_id, then counts them.
    out += [(b"wrong-key", orjson.dumps(ev)) for ev in rekeyed_events(now)]
    # Queues past the budget (max_queues=4 per partition; the simulator uses 3): extra-1 fits, extra-2
    # and extra-3 do not wherever extra-1 got there first.
    for n, queue in enumerate(["extra-1", "extra-2", "extra-3"] * 2 if order_dependent else []):
        cid = f"xq-{n}"
        ev = {"event_id": f"{cid}-offered", "type": "offered", "ts": ms(now - 20), "contact_id": cid,
              "queue": queue, "channel": "voice"}
        out.append((cid.encode(), orjson.dumps(ev)))
    return out


class Workload:
    def __init__(self, seed: int = 7, contacts: int = 300, now: float | None = None, partitions: int = 2,
                 order_dependent: bool = True):
        self.now = time.time() if now is None else now
        self.partitions = partitions
        self.events = simulated(seed, contacts, self.now - 2.0)
        self.messages: list[tuple[bytes, bytes]] = [(e["contact_id"].encode(), orjson.dumps(e)) for e in self.events]
        self.messages += tail(self.now, self.events, seed, order_dependent)
        self.model_events = self.events + rekeyed_events(self.now)  # complete contacts, for tiny_model

    def records(self, messages=None) -> list[tuple[bytes, bytes, int]]:
        """(key, value, partition) for harness.produce, with the partition Kafka would pick."""
        return [(k, v, partition_for(k, self.partitions)) for k, v in (messages or self.messages)]

    def by_partition(self, messages=None) -> dict[int, list[tuple[bytes, bytes]]]:
        out: dict[int, list] = {}
        for k, v, p in self.records(messages):
            out.setdefault(p, []).append((k, v))
        return out


def expected_exposition(settings_kw: dict, messages_by_partition: dict[int, list[tuple[bytes, bytes]]],
                        clock=time.time, partitions: int = 2) -> Metrics:
    """What the contacts pipeline must export: the same processor + collector on a dict, in-process."""
    from metrics.exposition import ContactCollector
    from streams.config import load_settings
    from streams.contacts import ContactProcessor
    from streams.pipeline import Message

    settings = load_settings(env={}, **settings_kw)
    table: dict = {}
    proc = ContactProcessor(settings, table, clock=clock)
    logs = {p: list(messages_by_partition.get(p, [])) for p in range(partitions)}
    done = dict.fromkeys(logs, 0)
    while any(done[p] < len(log) for p, log in logs.items()):
        for p, log in logs.items():
            batch = [Message(TOPIC, p, o, k, v) for o, (k, v) in enumerate(log) if o >= done[p]]
            done[p] = len(log)
            for i in range(0, len(batch), 97):
                for topic, key, value in proc.process_batch(batch[i:i + 97]).outputs:
                    if topic == TOPIC:  # re-keyed: appended to the partition of the right key
                        logs[partition_for(key, partitions)].append((key, value))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ContactCollector(settings, table, lambda: None, clock=clock))
    return Metrics(parse_metrics(generate_latest(registry).decode()))


def tiny_model(events: list[dict], thresholds=(10, 20), short_abandon: float = 5.0) -> dict:
    """Counts per (queue, channel) straight from a list of simulator events (each contact complete)."""
    by_contact: dict[str, dict] = {}
    for e in events:
        by_contact.setdefault(e["contact_id"], {"q": e["queue"], "ch": e["channel"]})[e["type"]] = e
    out: dict[tuple[str, str], dict] = {}
    for c in by_contact.values():
        n = out.setdefault((c["q"], c["ch"]), {"offered": 0, "answered": 0, "abandoned": 0, "short": 0,
                                                "handled": 0, **{f"within{t}": 0 for t in thresholds}})
        t0 = datetime.fromisoformat(c["offered"]["ts"]).timestamp()
        if "answered" in c:
            wait = datetime.fromisoformat(c["answered"]["ts"]).timestamp() - t0
            n["offered"] += 1
            n["answered"] += 1
            for t in thresholds:
                n[f"within{t}"] += wait <= t
        elif "abandoned" in c:
            wait = datetime.fromisoformat(c["abandoned"]["ts"]).timestamp() - t0
            if wait <= short_abandon:
                n["short"] += 1
            else:
                n["offered"] += 1
                n["abandoned"] += 1
        n["handled"] += "ended" in c
    return out


def data_series(m: Metrics) -> dict:
    """Every contactpulse_* sample that describes the data (not the worker process)."""
    return {k: v for k, v in m.items() if k[0].startswith("contactpulse_") and not PROCESS_LOCAL.match(k[0])}


def diff(a: dict, b: dict, rel: float = 1e-9) -> list[str]:
    """Human-readable differences between two sample dicts (floats compared to a relative 1e-9)."""
    out = []
    for key in sorted(set(a) | set(b), key=str):
        x, y = a.get(key), b.get(key)
        if x is None or y is None or abs(x - y) > rel * max(1.0, abs(x), abs(y)):
            out.append(f"{key}: {x} != {y}")
    return out


def accounting(m: Metrics, topic: str = TOPIC) -> dict:
    def total(name):
        return sum(v for labels, v in m.series(name).items() if dict(labels).get("topic") == topic)
    # the internal topic's applied records are exported under their own name (metrics/fcr.py)
    return {"accepted": total("contactpulse_events_accepted_total") + total("contactpulse_customer_contact_records_total"),
            "rejected": total("contactpulse_events_rejected_total"),
            "duplicate": total("contactpulse_events_duplicate_total"),
            "rekeyed": total("contactpulse_events_rekeyed_total")}


INTERNAL = "contactpulse-customer-contacts"  # contact records re-partitioned by customer (repeat contacts)


def wait_settled(worker, timeout: float = 90.0, bootstrap: str | None = None) -> tuple[Metrics, dict]:
    """Wait until every message in the worker's contact and internal topics is accounted for exactly once
    (accepted + rejected + duplicate + rekeyed == messages in the topic) and nothing is left unread;
    returns the metrics and the topic sizes."""
    topics = [worker.prefix + TOPIC, worker.prefix + INTERNAL]
    deadline, last = time.time() + timeout, None
    while time.time() < deadline:
        try:
            m = worker.metrics()
        except Exception:
            time.sleep(0.5)
            continue
        sizes = topic_sizes(topics, bootstrap)
        lag = sum(m.series("contactpulse_consumer_lag_messages").values())
        counted = (sum(accounting(m, TOPIC).values()), sum(accounting(m, INTERNAL).values()))
        last = (counted, sizes, lag)
        if lag == 0 and counted == (sizes[topics[0]], sizes[topics[1]]):
            time.sleep(1.0)  # and still so a second later (nothing in flight)
            m2 = worker.metrics()
            if data_series(m2) == data_series(m):
                return m2, {TOPIC: sizes[topics[0]], INTERNAL: sizes[topics[1]]}
        time.sleep(0.5)
    health = {k: v for k, v in m.items() if re.match(r"contactpulse_(consumer_lag|partitions_assigned|recovering"
                                                      r"|broker_connected|batches)", k[0])}
    raise AssertionError(f"{worker.prefix} not settled in {timeout} s: (accounted, topic sizes, lag) = {last}; {health}")


async def _topic_sizes(bootstrap: str, topics: list[str]) -> dict[str, int]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        out = {}
        for topic in topics:
            tps = [TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic)
                                                      or await _partitions(consumer, topic))]
            start, end = await consumer.beginning_offsets(tps), await consumer.end_offsets(tps)
            out[topic] = sum(end[tp] - start[tp] for tp in tps)
        return out
    finally:
        await consumer.stop()


async def _partitions(consumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()
    return consumer._client.cluster.partitions_for_topic(topic) or set()


def topic_sizes(topics: list[str], bootstrap: str | None = None) -> dict[str, int]:
    """Messages in each topic (all partitions), e.g. to count copies produced again after a crash."""
    import asyncio

    from harness import BOOTSTRAP

    return asyncio.run(_topic_sizes(bootstrap or BOOTSTRAP, topics))


def fuzz_messages(seed: int, n: int, now: float) -> list[tuple[bytes, bytes]]:
    """n malformed-or-not messages, deterministic for a seed: byte corruptions of valid events, fields of
    the wrong type or missing, odd encodings, extreme sizes and timestamps. Keyed by their contact_id
    when they have a usable one (a wrong or missing key gets them re-keyed), else by a fixed key."""
    rng = random.Random(seed)
    odd_values = [None, True, 0, -1, 2**63, 1e308, "", " ", "x" * 300, "é", "\u0000", [], {}, {"id": 1},
                  "2026-11-18T08:00:00", "NaN", ms(now + 86400), ms(now - 30 * 86400), "fax", "offered"]
    out = []
    for i in range(n):
        cid = f"fz-{i % 40}"
        ev = {"event_id": f"fz-{i}", "type": rng.choice(["offered", "answered", "abandoned", "ended"]),
              "ts": ms(now - rng.uniform(1, 60)), "contact_id": cid, "queue": "sales", "channel": "voice",
              "agent_id": "sales-agent-1", "customer": {"phone": "+37120000000"}}
        kind = rng.randrange(6)
        if kind == 0:  # one field gets a value of another type
            ev[rng.choice(list(ev))] = rng.choice(odd_values)
            raw = orjson.dumps(ev, option=orjson.OPT_NON_STR_KEYS) if not isinstance(ev.get("x"), int) else b""
        elif kind == 1:  # one field missing
            del ev[rng.choice(list(ev))]
            raw = orjson.dumps(ev)
        elif kind == 2:  # bytes flipped, inserted, cut
            raw = bytearray(orjson.dumps(ev))
            for _ in range(rng.randint(1, 3)):
                j = rng.randrange(len(raw))
                raw[j:j + rng.randint(0, 2)] = bytes(rng.randrange(256) for _ in range(rng.randint(0, 2)))
            raw = bytes(raw)
        elif kind == 3:  # other encodings and shapes
            raw = rng.choice([orjson.dumps(ev).decode().encode("utf-16"), b"\xef\xbb\xbf" + orjson.dumps(ev),
                              orjson.dumps([ev]), b"null", b"", b"[" * 3000 + b"]" * 3000,
                              orjson.dumps({**ev, "pad": "y" * 70_000})])
        elif kind == 4:  # pure noise
            raw = bytes(rng.randrange(256) for _ in range(rng.randint(0, 120)))
        else:  # valid (so the batch mixes good and bad, and duplicates of earlier ids happen)
            ev["event_id"] = f"fz-{rng.randrange(n)}"
            raw = orjson.dumps(ev)
        key = cid.encode() if kind in (0, 1, 5) and rng.random() < 0.9 else f"fz-key-{i % 7}".encode()
        out.append((key, raw))
    return out

"""Test harness: the local Kafka broker, a real worker process, and /metrics read back as numbers."""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterable

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
BROKER = ROOT / "deploy" / "kafka" / "broker.sh"
KAFKA_PORT = int(os.environ.get("CONTACTPULSE_TEST_KAFKA_PORT", "9092"))
BOOTSTRAP = f"127.0.0.1:{KAFKA_PORT}"
ARTIFACTS = ROOT / "artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def own_broker_env(state_dir: Path) -> tuple[int, dict[str, str]]:
    """Port and environment for a second, private broker.sh broker (its own ports and state)."""
    port, controller = free_port(), free_port()
    while controller == port:
        controller = free_port()
    return port, {**os.environ, "KAFKA_PORT": str(port), "KAFKA_CONTROLLER_PORT": str(controller),
                  "KAFKA_STATE_DIR": str(state_dir)}


def broker(action: str) -> None:
    subprocess.run([str(BROKER), action], check=True, env={**os.environ, "KAFKA_PORT": str(KAFKA_PORT)},
                   stdout=subprocess.DEVNULL)


def parse_metrics(text: str) -> dict[tuple, float]:
    """{(sample name, (("label","value"), ...sorted)): value}"""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


class Metrics(dict):
    def get1(self, name: str, **labels) -> float | None:
        return self.get((name, tuple(sorted((k, str(v)) for k, v in labels.items()))))

    def series(self, name: str) -> dict[tuple, float]:
        return {labels: v for (n, labels), v in self.items() if n == name}


class Worker:
    """A real `contactpulse worker` process with its own app id, topic prefix and web port."""

    def __init__(self, prefix: str | None = None, partitions: int = 2, app_id: str | None = None,
                 port: int | None = None, bootstrap: str | None = None, **settings):
        self.prefix = prefix or f"t{uuid.uuid4().hex[:8]}."
        self.partitions = partitions
        self.app_id = app_id or f"cp-{self.prefix.rstrip('.')}"
        self.port = port or free_port()
        self.data_dir = ROOT / ".contactpulse" / self.app_id
        self.env = {
            **os.environ,
            "CONTACTPULSE_BROKER": f"kafka://{bootstrap or BOOTSTRAP}",
            "CONTACTPULSE_APP_ID": self.app_id,
            "CONTACTPULSE_TOPIC_PREFIX": self.prefix,
            "CONTACTPULSE_PARTITIONS": str(partitions),
            "CONTACTPULSE_WEB_PORT": str(self.port),
            "CONTACTPULSE_DATA_DIR": str(self.data_dir),
            **{f"CONTACTPULSE_{k.upper()}": str(v) for k, v in settings.items()},
        }
        self.proc: subprocess.Popen | None = None
        self.log_path = ARTIFACTS / f"worker-{self.app_id}-{self.port}.log"
        # web_basic_auth / web_tls_cert: the harness talks to the protected pages like Prometheus would
        user, _, password = str(settings.get("web_basic_auth", "")).partition(":")
        self.http = {"auth": (user, password) if user else None, "verify": False}

    @property
    def url(self) -> str:
        scheme = "https" if self.env.get("CONTACTPULSE_WEB_TLS_CERT") else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0, expect_partitions: int | None = None) -> "Worker":
        ARTIFACTS.mkdir(exist_ok=True)
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"], cwd=ROOT, env=self.env,
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        want = self.partitions if expect_partitions is None else expect_partitions
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}; see {self.log_path}")
            try:
                r = httpx.get(self.url + "/healthz", timeout=1.0, **self.http)
                if r.status_code == 200 and len(r.json()["partitions"]) >= want:
                    return self
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.3)
        raise TimeoutError(f"worker not ready in {timeout} s; see {self.log_path}")

    def metrics(self) -> Metrics:
        r = httpx.get(self.url + "/metrics", timeout=5.0, **self.http)
        r.raise_for_status()
        return Metrics(parse_metrics(r.text))

    def wait_for(self, predicate, timeout: float = 30.0, what: str = "condition") -> Metrics:
        deadline = time.time() + timeout
        m = None
        while time.time() < deadline:
            try:
                m = self.metrics()
                if predicate(m):
                    return m
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise AssertionError(f"timed out waiting for {what}; last metrics: "
                             f"{ {k: v for k, v in (m or {}).items() if 'contactpulse_events' in k[0]} }")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if getattr(self, "log", None):
            self.log.close()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


def event(etype: str, contact_id: str, ts: float, queue: str = "sales", channel: str = "voice",
          event_id: str | None = None, **fields) -> dict:
    return {"event_id": event_id or f"{contact_id}-{etype}", "type": etype, "ts": int(round(ts * 1000)),
            "contact_id": contact_id, "queue": queue, "channel": channel, **fields}


async def _produce(topic: str, records: Iterable[tuple[bytes | None, bytes | None, int | None]],
                   bootstrap: str | None = None) -> int:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap or BOOTSTRAP, acks="all", enable_idempotence=True,
                                max_request_size=2 * 1024 * 1024)
    await producer.start()
    n = 0
    try:
        futures = []
        for key, value, partition in records:
            futures.append(await producer.send(topic, value, key=key, partition=partition))
            n += 1
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return n


def produce(topic: str, records: Iterable, bootstrap: str | None = None) -> int:
    """records: dict events (keyed by contact_id) or (key, value bytes, partition) tuples."""
    prepared = []
    for r in records:
        if isinstance(r, dict):
            prepared.append((r["contact_id"].encode(), orjson.dumps(r), None))
        else:
            prepared.append(r)
    return asyncio.run(_produce(topic, prepared, bootstrap))


async def _consume_all(topic: str, timeout: float, bootstrap: str | None = None) -> list:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap or BOOTSTRAP, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    out = []
    try:
        # Done once every partition is read up to its end offset (asked whenever a fetch comes back empty),
        # so the usual call costs no idle wait; `timeout` s without a record still ends it otherwise.
        idle_since = time.monotonic()
        while True:
            batch = await consumer.getmany(timeout_ms=200)
            for msgs in batch.values():
                out.extend(msgs)
            if batch:
                idle_since = time.monotonic()
                continue
            assigned = list(consumer.assignment())
            if assigned:
                ends = await consumer.end_offsets(assigned)
                if all([await consumer.position(tp) >= end for tp, end in ends.items()]):
                    return out
            if time.monotonic() - idle_since >= timeout:
                return out
    finally:
        await consumer.stop()


def consume_all(topic: str, timeout: float = 2.0, bootstrap: str | None = None) -> list:
    return asyncio.run(_consume_all(topic, timeout, bootstrap))


def create_topics(prefix: str, partitions: int, bootstrap: str | None = None) -> None:
    sys.path.insert(0, str(ROOT))
    from streams.topics import ensure_topics

    asyncio.run(ensure_topics(bootstrap or BOOTSTRAP, partitions, prefix))


# Zones whose offsets shift the local minute by :00, :30 and :45, so one of them always puts "now" at
# least 15 minutes from an hour boundary; whole-hour zones then keep local midnight far away.
_ZONES = ["Etc/GMT+12", "Etc/GMT+11", "Etc/GMT+10", "Etc/GMT+9", "Etc/GMT+8", "Etc/GMT+7", "Etc/GMT+6",
          "Etc/GMT+5", "Etc/GMT+4", "Etc/GMT+3", "Etc/GMT+2", "Etc/GMT+1", "Etc/UTC", "Etc/GMT-1", "Etc/GMT-2",
          "Etc/GMT-3", "Etc/GMT-4", "Etc/GMT-5", "Etc/GMT-6", "Etc/GMT-7", "Etc/GMT-8", "Etc/GMT-9",
          "Etc/GMT-10", "Etc/GMT-11", "Etc/GMT-12", "Asia/Kolkata", "Asia/Kathmandu", "Australia/Eucla",
          "Pacific/Marquesas", "Asia/Kabul", "Asia/Yangon", "Pacific/Chatham", "Australia/Adelaide",
          "America/St_Johns", "Asia/Tehran"]


def quiet_clock(now: float | None = None, interval: int = 3600) -> dict[str, str]:
    """Worker settings (timezone, interval_seconds) that put `now` far from any interval or day boundary.

    Integration tests assert exact per-interval numbers for events stamped a few minutes before now; with
    these settings the current interval has >= 15 minutes of room on each side and local midnight is
    hours away, so no test has to wait for a boundary to pass. Returns env-style settings for Worker(**...).
    """
    from datetime import datetime
    from zoneinfo import ZoneInfo

    now = time.time() if now is None else now
    best, best_room = None, -1.0
    for name in _ZONES:
        local = datetime.fromtimestamp(now, ZoneInfo(name))
        into_day = local.hour * 3600 + local.minute * 60 + local.second
        into = into_day % interval
        room = min(into, interval - into)
        if not 2 * 3600 <= into_day <= 22 * 3600:
            room -= interval  # keep midnight hours away, whatever the interval
        if room > best_room:
            best, best_room = name, room
    return {"timezone": best, "interval_seconds": str(interval)}


def one_window(clock: dict[str, str], *timestamps: float) -> bool:
    """True when all timestamps fall in one interval and one local day of the site clock `clock`
    (quiet_clock's settings): the premise of a test's exact per-window numbers, checked, never waited for."""
    from zoneinfo import ZoneInfo

    from metrics.kpi import day_start, interval_start

    tz, interval = ZoneInfo(clock["timezone"]), int(clock["interval_seconds"])
    return (len({interval_start(t, interval, tz) for t in timestamps}) == 1
            and len({day_start(t, tz) for t in timestamps}) == 1)

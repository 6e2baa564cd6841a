"""HTTP ingest endpoint against a real Kafka broker (and `replay` into it).

Needs the local broker on 127.0.0.1:9092 (deploy/kafka/broker.sh start). Every test creates its own topics
with a unique suffix and deletes them afterwards. The outage test starts a dedicated broker of its own
(free port, its own state dir under /tmp), stops it and starts it again.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import socket
import subprocess
import time
import uuid
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from harness import free_port, own_broker_env
from streams import replay
from streams.ingest import KafkaSink, build_app

pytestmark = pytest.mark.broker

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "adapters"
BROKER_SH = ROOT / "deploy" / "kafka" / "broker.sh"
SHARED = os.environ.get("CONTACTPULSE_TEST_BROKER", "127.0.0.1:9092")
T = 1772442000  # the fixtures' 2026-03-02T09:00:00Z; the app's clock is set near it


def _port_open(hostport: str) -> bool:
    host, port = hostport.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def shared_broker():
    if not _port_open(SHARED):
        pytest.skip(f"no Kafka broker on {SHARED} (deploy/kafka/broker.sh start)")
    return SHARED


async def _admin(bootstrap: str) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    return admin


async def make_topics(bootstrap: str, partitions: int = 2) -> dict[str, str]:
    run = uuid.uuid4().hex[:10]
    names = {k: f"test-ingest-{k}-{run}" for k in ("contact", "ticket", "agent")}
    admin = await _admin(bootstrap)
    try:
        await admin.create_topics([NewTopic(n, partitions, 1) for n in names.values()])
    finally:
        await admin.close()
    return names


async def drop_topics(bootstrap: str, names: dict[str, str]) -> None:
    try:
        admin = await _admin(bootstrap)
        try:
            await admin.delete_topics(list(names.values()))
        finally:
            await admin.close()
    except Exception:
        pass  # best effort: unique names never collide anyway


async def consume_all(bootstrap: str, topic: str) -> list[tuple[bytes, dict]]:
    """Every message in the topic, up to its end offsets at call time."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        partitions = None
        for _ in range(50):  # a topic created a moment ago may not be in the metadata yet
            partitions = (await consumer._client.fetch_all_metadata()).partitions_for_topic(topic)
            if partitions:
                break
            await asyncio.sleep(0.2)
        assert partitions, f"topic {topic} never appeared in the metadata"
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        out = []
        deadline = time.monotonic() + 15
        while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
            assert time.monotonic() < deadline, "could not read the topic to its end"
            batch = await consumer.getmany(*tps, timeout_ms=500)
            for msgs in batch.values():
                out.extend((m.key, orjson.loads(m.value)) for m in msgs)
        return out
    finally:
        await consumer.stop()


class Ingest:
    def __init__(self, bootstrap: str, topics: dict[str, str], **kw):
        self.sink = KafkaSink(bootstrap, request_timeout_ms=kw.pop("request_timeout_ms", 10000))
        kw.setdefault("clock", lambda: T + 3600)
        self.app = build_app(self.sink, topics=topics, **kw)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    async def __aenter__(self):
        self.runner = web.AppRunner(self.app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        self.http = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc):
        await self.http.close()
        await self.runner.cleanup()

    async def post(self, source: str, body, *, ctype: str = "application/json", headers=None):
        data = body if isinstance(body, (bytes, str)) else orjson.dumps(body)
        async with self.http.post(f"{self.url}/ingest/{source}", data=data,
                                  headers={"Content-Type": ctype, **(headers or {})}) as resp:
            return resp.status, await resp.json(), resp.headers


def contact_event(event_id: str, contact_id: str = "c-1", ts: int = (T + 60) * 1000) -> dict:
    return {"event_id": event_id, "type": "offered", "ts": ts, "contact_id": contact_id, "queue": "support",
            "channel": "voice"}


# -- happy paths -----------------------------------------------------------------------------------------
async def test_event_acknowledged_then_retried_lands_once(shared_broker):
    topics = await make_topics(shared_broker)
    try:
        async with Ingest(shared_broker, topics) as ing:
            ev = contact_event("ev-" + uuid.uuid4().hex)
            for _ in range(3):  # the client retries (e.g. it never saw our 200): same event_id
                status, body, _ = await ing.post("contactpulse", ev)
                assert status == 200 and body == {"produced": 1, "event_ids": [ev["event_id"]]}
            status, body, _ = await ing.post("contactpulse", {"events": [contact_event("ev-2", "c-2"),
                                                                         contact_event("ev-3", "c-3")]})
            assert status == 200 and body["produced"] == 2
        got = await consume_all(shared_broker, topics["contact"])
        assert sorted((k, v["event_id"]) for k, v in got) == [(b"c-1", ev["event_id"]), (b"c-2", "ev-2"),
                                                               (b"c-3", "ev-3")]
        assert next(v for k, v in got if k == b"c-1") == ev
    finally:
        await drop_topics(shared_broker, topics)


async def test_sources_are_mapped_and_routed_by_kind(shared_broker):
    topics = await make_topics(shared_broker)
    twilio = json.loads((FIX / "twilio_taskrouter.json").read_text())
    zendesk = json.loads((FIX / "zendesk_webhooks.json").read_text())
    ctr_text = (FIX / "connect_ctr.firehose").read_text()
    agent_line = (FIX / "connect_agent_events.jsonl").read_text().splitlines()[1]
    try:
        async with Ingest(shared_broker, topics) as ing:
            assert (await ing.post("twilio", twilio[0]))[:2] == (200, {"produced": 1, "event_ids": [
                (await _ids(twilio[0]))[0]]})
            assert (await ing.post("twilio", twilio[2]))[0] == 200  # task-queue.entered -> offered
            from urllib.parse import urlencode
            status, body, _ = await ing.post("twilio", urlencode(twilio[4]),  # form-encoded, as Twilio posts
                                             ctype="application/x-www-form-urlencoded")
            assert status == 200 and body["produced"] == 1
            status, body, _ = await ing.post("twilio", twilio[3])  # reservation.created: nothing to produce
            assert (status, body) == (200, {"produced": 0, "event_ids": [], "skipped": "not_mapped"})
            assert (await ing.post("zendesk", zendesk[0]))[0] == 200
            firehose = {"requestId": "req-42", "timestamp": 1,
                        "records": [{"data": base64.b64encode(ctr_text.encode()).decode()}]}
            status, body, _ = await ing.post("connect", firehose)
            assert status == 200 and body["produced"] == 13 and body["requestId"] == "req-42"
            assert (await ing.post("connect", agent_line.encode()))[0] == 200
        contacts = await consume_all(shared_broker, topics["contact"])
        assert sorted(k for k, _ in contacts) == sorted([b"WT0001"] * 2 + [b"c0ffee01-0000-4000-8000-000000000001"] * 7
                                                        + [b"c0ffee01-0000-4000-8000-000000000002"] * 2
                                                        + [b"c0ffee01-0000-4000-8000-000000000005"] * 4)
        tickets = await consume_all(shared_broker, topics["ticket"])
        assert [(k, v["type"], v["priority"]) for k, v in tickets] == [(b"35436", "created", "high")]
        agents = await consume_all(shared_broker, topics["agent"])
        assert sorted((k, v["state"]) for k, v in agents) == [(b"WK0001", "available"), (b"agent-0001", "on_contact")]
    finally:
        await drop_topics(shared_broker, topics)


async def _ids(body) -> list[str]:
    from streams.adapters.twilio import TwilioAdapter

    return [em.event["event_id"] for em in TwilioAdapter().convert(body)]


# -- refusals --------------------------------------------------------------------------------------------
async def test_schema_errors_are_400_with_a_reason_and_produce_nothing(shared_broker):
    topics = await make_topics(shared_broker, partitions=1)
    try:
        async with Ingest(shared_broker, topics) as ing:
            status, body, _ = await ing.post("contactpulse", b"{not json")
            assert status == 400 and body["error"] == "schema" and body["reason"] == "malformed_json"
            bad = contact_event("ev-x")
            del bad["queue"]
            status, body, _ = await ing.post("contactpulse", [contact_event("ev-ok"), bad])
            assert status == 400 and (body["reason"], body["event_index"]) == ("missing_field", 1)
            status, body, _ = await ing.post("contactpulse", contact_event("ev-old", ts=T * 1000 - 8 * 86400 * 1000))
            assert status == 400 and body["reason"] == "too_old"
            status, body, _ = await ing.post("twilio", {"EventType": "task.canceled", "Timestamp": str(T)})
            assert status == 400 and body["reason"] == "missing_field" and "TaskSid" in body["detail"]
            status, body, _ = await ing.post("zendesk", {"type": "zen:event-type:ticket.created", "id": "z"})
            assert status == 400 and body["reason"] == "bad_timestamp"
            status, body, _ = await ing.post("connect", {"ContactId": "x", "Channel": "VOICE",
                                                         "Queue": {"Name": "S", "EnqueueTimestamp": "yesterday"}})
            assert status == 400 and body["reason"] == "bad_timestamp"
            status, body, _ = await ing.post("nosuchsource", contact_event("e"))
            assert status == 404
        assert await consume_all(shared_broker, topics["contact"]) == []  # the valid half of a bad batch too
    finally:
        await drop_topics(shared_broker, topics)


async def test_wrong_content_type_415_and_oversize_413(shared_broker):
    topics = await make_topics(shared_broker, partitions=1)
    try:
        async with Ingest(shared_broker, topics, max_body=1024) as ing:
            ev = contact_event("ev-ct")
            status, body, _ = await ing.post("contactpulse", orjson.dumps(ev), ctype="text/plain")
            assert status == 415 and body["error"] == "unsupported_media_type"
            status, _, _ = await ing.post("zendesk", b"a=b", ctype="application/x-www-form-urlencoded")
            assert status == 415  # form bodies only for Twilio
            status, _, _ = await ing.post("contactpulse", orjson.dumps(ev), ctype="application/xml")
            assert status == 415
            big = {"events": [contact_event(f"ev-{i}", f"c-{i}") for i in range(20)]}
            assert len(orjson.dumps(big)) > 1024
            status, body, _ = await ing.post("contactpulse", big)
            assert status == 413 and body["error"] == "too_large"

            async def chunks():  # no Content-Length: the limit is enforced while reading
                for _ in range(4):
                    yield b" " * 400
                yield orjson.dumps(ev)

            async with ing.http.post(f"{ing.url}/ingest/contactpulse", data=chunks(),
                                     headers={"Content-Type": "application/json"}) as resp:
                assert resp.status == 413 and (await resp.json())["error"] == "too_large"
            status, _, _ = await ing.post("contactpulse", ev)  # a small one still goes through
            assert status == 200
        got = await consume_all(shared_broker, topics["contact"])
        assert [v["event_id"] for _, v in got] == ["ev-ct"]
    finally:
        await drop_topics(shared_broker, topics)


async def test_token_and_zendesk_signature(shared_broker):
    topics = await make_topics(shared_broker, partitions=1)
    zendesk = json.loads((FIX / "zendesk_webhooks.json").read_text())[0]
    try:
        async with Ingest(shared_broker, topics, auth_token="s3cret", zendesk_secret="zsig") as ing:
            assert (await ing.post("contactpulse", contact_event("a1")))[0] == 401
            assert (await ing.post("contactpulse", contact_event("a1"),
                                   headers={"Authorization": "Bearer wrong"}))[0] == 401
            assert (await ing.post("contactpulse", contact_event("a1"),
                                   headers={"Authorization": "Bearer s3cret"}))[0] == 200
            basic = base64.b64encode(b"twilio:s3cret").decode()
            assert (await ing.post("contactpulse", contact_event("a2", "c-2"),
                                   headers={"Authorization": f"Basic {basic}"}))[0] == 200
            raw = orjson.dumps(zendesk)
            stamp = "2026-03-02T09:00:01Z"
            sig = base64.b64encode(hmac.new(b"zsig", stamp.encode() + raw, hashlib.sha256).digest()).decode()
            assert (await ing.post("zendesk", raw, headers={"X-Zendesk-Webhook-Signature": "bad",
                                                            "X-Zendesk-Webhook-Signature-Timestamp": stamp}))[0] == 401
            assert (await ing.post("zendesk", raw, headers={"X-Zendesk-Webhook-Signature": sig,
                                                            "X-Zendesk-Webhook-Signature-Timestamp": stamp}))[0] == 200
    finally:
        await drop_topics(shared_broker, topics)


async def test_kafka_unreachable_from_the_start_is_503():
    nowhere = f"127.0.0.1:{free_port()}"  # nothing listens here
    async with Ingest(nowhere, {"contact": "c", "ticket": "t", "agent": "a"}, ack_timeout=2) as ing:
        status, body, headers = await ing.post("contactpulse", contact_event("ev-503"))
        assert status == 503 and body["error"] == "kafka_unavailable" and headers["Retry-After"] == "2"
        async with ing.http.get(f"{ing.url}/healthz") as resp:
            assert resp.status == 503


# -- outage and recovery on a dedicated broker -------------------------------------------------------------
class DedicatedBroker:
    def __init__(self, tmp: Path):
        self.port, self.env = own_broker_env(tmp / "kafka")
        self.bootstrap = f"127.0.0.1:{self.port}"

    def run(self, what: str) -> None:
        subprocess.run([str(BROKER_SH), what], env=self.env, check=True, capture_output=True, timeout=90)


@pytest.fixture
def dedicated_broker(tmp_path, shared_broker):  # needs the same java/jars as the shared one
    broker = DedicatedBroker(tmp_path)
    broker.run("start")
    yield broker
    broker.run("wipe")


async def _wait_ready(bootstrap: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            admin = await _admin(bootstrap)
            await admin.list_topics()
            await admin.close()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.3)


async def test_outage_gives_503_and_a_retry_after_recovery_lands_exactly_once(dedicated_broker):
    b = dedicated_broker
    await _wait_ready(b.bootstrap)
    topics = await make_topics(b.bootstrap, partitions=1)
    async with Ingest(b.bootstrap, topics, ack_timeout=2, request_timeout_ms=5000) as ing:
        assert (await ing.post("contactpulse", contact_event("before", "c-0")))[0] == 200
        await asyncio.to_thread(b.run, "stop")
        ev = contact_event("during-outage", "c-1")
        status, body, headers = await ing.post("contactpulse", ev)
        assert status == 503 and body["error"] == "kafka_unavailable" and "Retry-After" in headers
        status, _, _ = await ing.post("contactpulse", ev)  # an impatient client retries during the outage
        assert status == 503
        await asyncio.to_thread(b.run, "start")
        deadline = time.monotonic() + 40
        while True:  # the client keeps retrying the same event until it is acknowledged
            status, body, _ = await ing.post("contactpulse", ev)
            if status == 200:
                break
            assert status == 503 and time.monotonic() < deadline, body
            await asyncio.sleep(0.5)
        assert body == {"produced": 1, "event_ids": ["during-outage"]}
        assert (await ing.post("contactpulse", ev))[0] == 200  # and once more after success
        # The message queued by the first (503) attempt was delivered after recovery; every retry waited
        # for that attempt instead of producing a second copy.
        assert ing.sink.sends == 2
    got = await consume_all(b.bootstrap, topics["contact"])
    assert [(k, v["event_id"]) for k, v in got] == [(b"c-0", "before"), (b"c-1", "during-outage")]


# -- replay into Kafka -------------------------------------------------------------------------------------
def test_replay_cli_produces_every_event_keyed_by_contact(shared_broker, capsys):
    topics = asyncio.run(make_topics(shared_broker))
    try:
        rc = replay.main([str(FIX / "queue_log.sample"), "--format", "queue_log", "--speed", "max",
                          "--broker", shared_broker, "--contact-topic", topics["contact"]])
        assert rc == 0
        assert "replayed 29 events (contact=29)" in capsys.readouterr().out
        got = asyncio.run(consume_all(shared_broker, topics["contact"]))
        from streams.adapters.queue_log import read_queue_log

        expected = [e.event for e in read_queue_log(FIX / "queue_log.sample")]
        assert len(got) == 29
        assert all(k.decode() == v["contact_id"] for k, v in got)
        for cid in {e["contact_id"] for e in expected}:  # per key, the log's order is kept
            assert [v for k, v in got if v["contact_id"] == cid] == [e for e in expected if e["contact_id"] == cid]
    finally:
        asyncio.run(drop_topics(shared_broker, topics))

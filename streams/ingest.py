"""HTTP ingest: `POST /ingest/{source}` (twilio | zendesk | connect | contactpulse) -> Kafka.

A request is answered 2xx only after Kafka acknowledged every event it produced (acks=all, idempotent
producer). Answers:
    200  {"produced": n, "event_ids": [...]}       (n may be 0 with "skipped": the reason, e.g. a
                                                    Zendesk event we do not map: no retry needed)
    400  {"error": "schema", "reason": ..., "detail": ...}   the body or an event it maps to is invalid
    401  missing/wrong token (only when a token or a Zendesk signing secret is configured)
    413  body larger than --max-body
    415  wrong Content-Type (application/json; Twilio may also send form-urlencoded)
    503  {"error": "kafka_unavailable"} + Retry-After: Kafka did not acknowledge within --ack-timeout

Retries lose nothing and duplicate nothing: every event_id is derived from the source's own ids (a retried
webhook maps to the same ids). Within one ingest process an event still in flight or recently acknowledged
is never produced twice: the retry waits for the first attempt's acknowledgement instead. Across
processes (restart, several replicas) a repeat can reach the topic and the worker drops it by event_id.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import logging
import os
import signal
import time
from collections import OrderedDict
from typing import Any, Callable, Mapping
from urllib.parse import parse_qs

import orjson
from aiohttp import web

from streams.adapters import AdapterError, Emitted, Skip
from streams.adapters import connect as connect_adapter
from streams.adapters import contactpulse as own
from streams.adapters.twilio import TwilioAdapter
from streams.adapters.zendesk import ZendeskAdapter

log = logging.getLogger("contactpulse.ingest")

DEFAULT_TOPICS = {"contact": "contact-events", "ticket": "ticket-events", "agent": "agent-events"}
JSON_TYPES = frozenset({"application/json", "application/cloudevents+json", "text/json"})
FORM_TYPE = "application/x-www-form-urlencoded"
SOURCES = ("twilio", "zendesk", "connect", "contactpulse")
COUNTS = web.AppKey("counts", dict)


class KafkaUnavailable(Exception):
    pass


class KafkaSink:
    """An idempotent aiokafka producer that remembers recent deliveries by event_id.

    deliver() either returns after every message is acknowledged or raises KafkaUnavailable. A message
    whose earlier attempt is still pending (or was acknowledged within acked_ttl) is not sent again:
    the caller waits for that attempt, so a client retry after a 503 cannot put a second copy in the topic.
    """

    def __init__(self, bootstrap: str, *, request_timeout_ms: int = 30000, acked_ttl: float = 3600.0,
                 memory: int = 200_000, producer_factory: Callable[..., Any] | None = None):
        self.bootstrap = bootstrap
        self.request_timeout_ms = request_timeout_ms
        self.acked_ttl = acked_ttl
        self.memory = memory
        self._factory = producer_factory
        self._producer = None
        self._start_lock = asyncio.Lock()
        self._sent: OrderedDict[str, asyncio.Future] = OrderedDict()
        self._acked_at: dict[str, float] = {}
        self.sends = 0  # messages handed to the producer (a retry that waits for an earlier attempt adds 0)

    @property
    def started(self) -> bool:
        return self._producer is not None

    def _new_producer(self):
        if self._factory is not None:
            return self._factory()
        from aiokafka import AIOKafkaProducer

        return AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True,
                                request_timeout_ms=self.request_timeout_ms, linger_ms=0,
                                client_id="contactpulse-ingest")

    async def ensure_started(self, timeout: float) -> None:
        if self._producer is not None:
            return
        async with self._start_lock:
            if self._producer is not None:
                return
            producer = self._new_producer()
            try:
                await asyncio.wait_for(producer.start(), timeout)
            except (Exception, asyncio.TimeoutError) as exc:
                try:
                    await asyncio.wait_for(producer.stop(), 5)
                except (Exception, asyncio.TimeoutError):
                    pass
                raise KafkaUnavailable(f"cannot connect to Kafka at {self.bootstrap}: "
                                       f"{type(exc).__name__}") from None
            self._producer = producer

    def _forget_old(self) -> None:
        """Drop the oldest remembered deliveries: acknowledged ones past acked_ttl or over the bound."""
        now = time.monotonic()
        while self._sent:
            eid, fut = next(iter(self._sent.items()))
            over = len(self._sent) > self.memory
            if (fut.done() and (over or self._expired(eid, now))) or len(self._sent) > 2 * self.memory:
                self._sent.pop(eid)
                self._acked_at.pop(eid, None)
            else:
                break

    def _expired(self, eid: str, now: float) -> bool:
        at = self._acked_at.get(eid)
        return at is not None and now - at > self.acked_ttl

    def _track(self, eid: str, fut: asyncio.Future) -> None:
        def done(f: asyncio.Future) -> None:
            if f.cancelled() or f.exception() is not None:
                if self._sent.get(eid) is f:
                    self._sent.pop(eid, None)  # a failed attempt may be retried by a new send
            else:
                self._acked_at[eid] = time.monotonic()

        self._sent[eid] = fut
        fut.add_done_callback(done)

    async def deliver(self, items: list[tuple[str, bytes, bytes, str]], timeout: float) -> int:
        """Produce (topic, key, value, event_id) items; returns how many were newly sent."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        await self.ensure_started(timeout)
        futs, new = [], 0
        try:
            for topic, key, value, eid in items:
                fut = self._sent.get(eid)
                if fut is None or (fut.done() and (fut.cancelled() or fut.exception() is not None)):
                    # Cancelling send() itself (timeout below) guarantees nothing was queued.
                    fut = await asyncio.wait_for(self._producer.send(topic, value, key=key),
                                                 max(0.001, deadline - loop.time()))
                    self._track(eid, fut)
                    self.sends += 1
                    new += 1
                else:
                    self._sent.move_to_end(eid)
                futs.append(fut)
            self._forget_old()
            results = await asyncio.wait_for(asyncio.shield(asyncio.gather(*futs, return_exceptions=True)),
                                             max(0.001, deadline - loop.time()))
        except asyncio.TimeoutError:
            raise KafkaUnavailable(f"Kafka did not acknowledge within {timeout:g} s") from None
        except KafkaUnavailable:
            raise
        except Exception as exc:  # KafkaError from send(): metadata, connection, ...
            raise KafkaUnavailable(f"Kafka error: {type(exc).__name__}: {exc}"[:300]) from None
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise KafkaUnavailable(f"Kafka refused {len(failed)} message(s): {type(failed[0]).__name__}")
        return new

    async def close(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            try:
                await asyncio.wait_for(producer.stop(), 10)
            except (Exception, asyncio.TimeoutError):
                log.warning("producer did not stop cleanly")


def connect_records(body: Any) -> list:
    """CTRs / agent events from a body: one object, an array, or a Kinesis Data Firehose HTTP delivery
    ({"requestId", "timestamp", "records": [{"data": base64}]}), whose data may hold several objects."""
    if isinstance(body, Mapping) and isinstance(body.get("records"), list):
        out = []
        for rec in body["records"]:
            data = rec.get("data") if isinstance(rec, Mapping) else None
            if not isinstance(data, str):
                raise AdapterError("missing_field", "every Firehose record needs base64 'data'")
            try:
                text = base64.b64decode(data, validate=True).decode("utf-8")
                out.extend(connect_adapter.iter_json_objects(text))
            except (ValueError, UnicodeDecodeError):
                raise AdapterError("malformed_json", "a Firehose record's data is not base64 JSON") from None
        return out
    return body if isinstance(body, list) else [body]


def make_converters(*, twilio: TwilioAdapter | None = None, zendesk: ZendeskAdapter | None = None,
                    connect_options: Mapping[str, Any] | None = None) -> dict[str, Callable[[Any], Any]]:
    twilio = twilio or TwilioAdapter()
    zendesk = zendesk or ZendeskAdapter()
    copts = dict(connect_options or {})

    def connect(body: Any) -> list[Emitted] | Skip:
        out: list[Emitted] = []
        skips = []
        for rec in connect_records(body):
            got = connect_adapter.convert(rec, **copts)
            if isinstance(got, Skip):
                skips.append(got)
            else:
                out.extend(got)
        if not out and skips:
            return skips[0]
        return out

    return {"twilio": twilio.convert, "zendesk": zendesk.convert, "connect": connect,
            "contactpulse": own.convert}


def _json(status: int, body: Mapping, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json",
                        headers=headers)


def _schema_error(reason: str, detail: str, **extra: Any) -> web.Response:
    return _json(400, {"error": "schema", "reason": reason, "detail": detail[:300], **extra})


def build_app(sink: KafkaSink, *, max_body: int = 256 * 1024, ack_timeout: float = 10.0,
              topics: Mapping[str, str] | None = None, auth_token: str | None = None,
              zendesk_secret: str | None = None, max_event_age: float = 7 * 86400,
              max_future_skew: float = 300, converters: Mapping[str, Callable] | None = None,
              clock: Callable[[], float] = time.time) -> web.Application:
    topics = {**DEFAULT_TOPICS, **(topics or {})}
    converters = dict(converters or make_converters())
    counts: dict[str, int] = {}

    def count(what: str) -> None:
        counts[what] = counts.get(what, 0) + 1

    def authorised(request: web.Request, source: str, raw: bytes | None) -> bool:
        if source == "zendesk" and zendesk_secret:
            sig = request.headers.get("X-Zendesk-Webhook-Signature", "")
            stamp = request.headers.get("X-Zendesk-Webhook-Signature-Timestamp", "")
            want = base64.b64encode(hmac.new(zendesk_secret.encode(), stamp.encode() + (raw or b""),
                                             hashlib.sha256).digest()).decode()
            return hmac.compare_digest(sig, want)
        if not auth_token:
            return True
        given = request.headers.get("X-Amz-Firehose-Access-Key", "")
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            given = auth[7:].strip()
        elif auth.startswith("Basic "):
            try:
                given = base64.b64decode(auth[6:]).decode().split(":", 1)[-1]
            except (ValueError, UnicodeDecodeError):
                given = ""
        return hmac.compare_digest(given.encode(), auth_token.encode())

    async def ingest(request: web.Request) -> web.Response:
        source = request.match_info["source"]
        if source not in converters:
            count("unknown_source")
            return _json(404, {"error": "unknown_source", "detail": f"source must be one of {', '.join(SOURCES)}"})
        ctype = request.content_type.lower()
        allowed = JSON_TYPES | ({FORM_TYPE} if source == "twilio" else set())
        if ctype not in allowed:
            count("unsupported_media_type")
            return _json(415, {"error": "unsupported_media_type",
                               "detail": f"Content-Type must be one of {', '.join(sorted(allowed))}"})
        if request.content_length is not None and request.content_length > max_body:
            count("too_large")
            return _json(413, {"error": "too_large", "detail": f"body over {max_body} bytes"})
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            count("too_large")
            return _json(413, {"error": "too_large", "detail": f"body over {max_body} bytes"})
        if len(raw) > max_body:
            count("too_large")
            return _json(413, {"error": "too_large", "detail": f"body over {max_body} bytes"})
        if (auth_token or (source == "zendesk" and zendesk_secret)) and not authorised(request, source, raw):
            count("unauthorised")
            return _json(401, {"error": "unauthorised"}, headers={"WWW-Authenticate": "Bearer"})
        if ctype == FORM_TYPE:
            try:
                body: Any = {k: v[0] if len(v) == 1 else v
                             for k, v in parse_qs(raw.decode("utf-8"), keep_blank_values=True).items()}
            except UnicodeDecodeError:
                count("schema")
                return _schema_error("invalid_utf8", "form body is not UTF-8")
        else:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                count("schema")
                return _schema_error("malformed_json", str(exc))
        try:
            got = converters[source](body)
        except AdapterError as exc:
            count("schema")
            return _schema_error(exc.reason, exc.detail)
        firehose = {}
        if source == "connect" and isinstance(body, Mapping) and "requestId" in body:
            firehose = {"requestId": body.get("requestId"), "timestamp": int(clock() * 1000)}
        if isinstance(got, Skip):
            count("skipped")
            return _json(200, {"produced": 0, "event_ids": [], "skipped": got.reason, **firehose})
        now = clock()
        items = []
        for i, em in enumerate(got):
            rej = own.validate(em.kind, em.event, now, max_bytes=max_body, max_future=max_future_skew,
                               max_age=max_event_age)
            if rej is not None:
                count("schema")
                return _schema_error(rej.reason, rej.detail, event_index=i)
            items.append((topics[em.kind], em.key.encode("utf-8"), orjson.dumps(em.event), em.event["event_id"]))
        try:
            await sink.deliver(items, ack_timeout)
        except KafkaUnavailable as exc:
            count("kafka_unavailable")
            log.warning("answering 503: %s", exc)
            return _json(503, {"error": "kafka_unavailable", "detail": str(exc), **firehose},
                         headers={"Retry-After": str(max(1, int(ack_timeout)))})
        count("accepted")
        return _json(200, {"produced": len(items), "event_ids": [it[3] for it in items], **firehose})

    async def health(request: web.Request) -> web.Response:
        try:
            await sink.ensure_started(min(ack_timeout, 5.0))
        except KafkaUnavailable as exc:
            return _json(503, {"kafka": "down", "detail": str(exc)})
        return _json(200, {"kafka": "up", "requests": counts, "messages_sent": sink.sends})

    async def on_cleanup(app: web.Application) -> None:
        await sink.close()

    app = web.Application(client_max_size=max_body)
    app.router.add_post("/ingest/{source}", ingest)
    app.router.add_get("/healthz", health)
    app.on_cleanup.append(on_cleanup)
    app[COUNTS] = counts
    return app


async def run_ingest(bootstrap: str, host: str, port: int, *, max_body: int = 256 * 1024,
                     ack_timeout: float = 10.0, topics: Mapping[str, str] | None = None,
                     auth_token: str | None = None, zendesk_secret: str | None = None,
                     max_event_age: float = 7 * 86400, max_future_skew: float = 300,
                     stop: asyncio.Event | None = None, ready: asyncio.Event | None = None) -> None:
    """Serve until `stop` is set (or the task is cancelled). Kafka may be down at start: requests get 503
    until it is reachable."""
    sink = KafkaSink(bootstrap, request_timeout_ms=max(1000, int(ack_timeout * 3000)))
    app = build_app(sink, max_body=max_body, ack_timeout=ack_timeout, topics=topics, auth_token=auth_token,
                    zendesk_secret=zendesk_secret, max_event_age=max_event_age, max_future_skew=max_future_skew)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    try:
        await sink.ensure_started(ack_timeout)
    except KafkaUnavailable as exc:
        log.warning("%s; answering 503 until it is reachable", exc)
    log.info("ingest listening on http://%s:%s/ingest/{%s}", host, port, "|".join(SOURCES))
    if ready is not None:
        ready.set()
    try:
        if stop is None:
            await asyncio.Event().wait()
        else:
            await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="contactpulse ingest",
                                 description="HTTP ingest: POST /ingest/{twilio|zendesk|connect|contactpulse}")
    env_broker = os.environ.get("CONTACTPULSE_BROKER", "127.0.0.1:9092")
    ap.add_argument("--broker", default=env_broker.split("://", 1)[-1], help="Kafka bootstrap host:port")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8088)
    ap.add_argument("--max-body", type=int, default=256 * 1024, help="largest accepted body in bytes")
    ap.add_argument("--ack-timeout", type=float, default=10.0,
                    help="seconds to wait for Kafka's acknowledgement before answering 503")
    ap.add_argument("--contact-topic", default=DEFAULT_TOPICS["contact"])
    ap.add_argument("--ticket-topic", default=DEFAULT_TOPICS["ticket"])
    ap.add_argument("--agent-topic", default=DEFAULT_TOPICS["agent"])
    ap.add_argument("--max-event-age", type=float, default=7 * 86400,
                    help="reject events older than this many seconds (the worker's max_event_age_seconds)")
    ap.add_argument("--max-future-skew", type=float, default=300)
    ap.add_argument("--log-level", default="INFO")
    args = ap.parse_args(argv)
    if args.max_body <= 0 or args.ack_timeout <= 0:
        ap.error("--max-body and --ack-timeout must be > 0")
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    token = os.environ.get("CONTACTPULSE_INGEST_TOKEN") or None
    zsecret = os.environ.get("CONTACTPULSE_ZENDESK_SIGNING_SECRET") or None

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):
                pass
        await run_ingest(args.broker, args.host, args.port, max_body=args.max_body, ack_timeout=args.ack_timeout,
                         topics={"contact": args.contact_topic, "ticket": args.ticket_topic,
                                 "agent": args.agent_topic},
                         auth_token=token, zendesk_secret=zsecret, max_event_age=args.max_event_age,
                         max_future_skew=args.max_future_skew, stop=stop)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))

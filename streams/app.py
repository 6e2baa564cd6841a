"""The Faust app: one agent + one changelog-backed table per pipeline, timers, and the web pages.

Run it with `contactpulse worker` (see streams/cli.py). Settings come from CONTACTPULSE_* variables.
To add an input stream, add a Pipeline to PIPELINES (see streams/pipeline.py).
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import logging
import time
from pathlib import Path
from typing import Any

import faust
from faust.sensors import Monitor
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from metrics.agents import AgentCollector, AgentHandleCollector
from metrics.exposition import ContactCollector
from metrics.fcr import RepeatCollector, SurveyCollector
from metrics.merge import MergedRegistry, render
from metrics.pipeline_stats import StatsCollector
from metrics.tickets import TicketCollector
from metrics.worker import WorkerCollector
from streams.agents import AgentProcessor
from streams.config import load_settings
from streams.consumer import BatchTransport, batch_handlers
from streams.contacts import ContactProcessor
from streams.pipeline import Message, Pipeline
from streams.repeats import RepeatProcessor
from streams.ordering import InOrder
from streams.state import PartitionedTable, acknowledged, json_bytes, send_batches
from streams.surveys import SurveyProcessor
from streams.tickets import TicketProcessor
from streams import gc_policy, web_security
from streams.topics import AGENT_EVENTS, CONTACT_EVENTS, CUSTOMER_CONTACTS, DEAD_LETTERS, SURVEY_EVENTS, TICKET_EVENTS

log = logging.getLogger("contactpulse")
# aiokafka formats a debug line for every message it sends unless its own logger says otherwise: that
# cost 7% of the worker's CPU (py-spy) although nothing was printed.
logging.getLogger("aiokafka").setLevel(logging.WARNING)

settings = load_settings()
# Full garbage collections on the worker's own schedule, not CPython's (streams/gc_policy.py).
gc_full_collections = gc_policy.FullCollections() if gc_policy.configure(settings.gc_full_collect_seconds) else None


def survey_processor(s, table):
    """Surveys join the rated contact's record in the contacts table (co-partitioned with survey-events)."""
    return SurveyProcessor(s, table, contacts=app.tables["contacts"])


PIPELINES: list[Pipeline] = [
    Pipeline("contacts", CONTACT_EVENTS, ContactProcessor, ContactCollector,
             help="Contact records and per-window counts (streams/contacts.py)"),
    Pipeline("repeats", CUSTOMER_CONTACTS, RepeatProcessor, RepeatCollector,
             help="Customers' recent contacts, repeat contacts and FCR counts (streams/repeats.py)"),
    Pipeline("surveys", SURVEY_EVENTS, survey_processor, SurveyCollector,
             help="Survey answers joined to the rated contact: CSAT, resolved (streams/surveys.py)"),
    Pipeline("tickets", TICKET_EVENTS, TicketProcessor, TicketCollector,
             help="Ticket records, first response / resolution windows (streams/tickets.py)"),
    Pipeline("agents", AGENT_EVENTS, AgentProcessor, AgentCollector,
             help="Agent state timelines and seconds per state per queue and window (streams/agents.py)"),
]

class LeanMonitor(Monitor):
    """Faust's per-message statistics (only its own web stats pages read them) cost ~10% of a message's
    path through Faust; the monitor's other duties (commits, sends, rebalances) are kept."""

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        pass

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        return None

    def on_stream_event_out(self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None) -> None:
        pass

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        pass


# Faust creates only the last level of its data directory; a clean checkout has none of it.
Path(settings.data_dir).mkdir(parents=True, exist_ok=True)


class App(faust.App):
    def _new_transport(self):
        # Input topics reach the pipelines one whole fetch at a time (streams/consumer.py).
        return BatchTransport(self.conf.broker_consumer, self)


app = App(
    settings.app_id,
    Monitor=LeanMonitor,
    broker=settings.broker,
    store=settings.store,
    datadir=settings.data_dir,
    topic_partitions=settings.partitions,
    topic_replication_factor=settings.replication,  # changelogs; the other topics: streams/topics.ensure_topics
    table_standby_replicas=settings.standby_replicas,
    web_host=settings.web_host,
    web_bind=settings.web_host,  # Faust listens on 0.0.0.0 unless told; serve only where configured
    web_port=settings.web_port,
    producer_acks=-1,
    # A batch writes thousands of changelog records: send them in few large requests, not 16 kB ones.
    producer_max_batch_size=1024 * 1024,
    consumer_auto_offset_reset="earliest",
    # Windows are computed by our own code in event time; Faust's wall-clock cleanup is not used.
    table_cleanup_interval=3600.0,
    broker_commit_every=10_000,
    broker_commit_interval=1.0,
    # One fetch is one batch for the pipelines (streams/consumer.py).
    broker_max_poll_records=settings.batch_size,
    web_ssl_context=web_security.ssl_context(settings),  # HTTPS when web_tls_cert/web_tls_key are set
)
web_security.protect(app, settings)  # basic auth on every page when web_basic_auth is set

registry = CollectorRegistry(auto_describe=False)

DEAD_LETTER_MAX_VALUE_BYTES = 512 * 1024


async def produce(records: list[tuple[str, bytes | None, bytes | None]]) -> list["asyncio.Future"]:
    """Produce (logical topic, key, value) records (prefix added; partition by key), a record batch per
    topic-partition; returns the tracked acks (streams/state.py send_batches)."""
    producer = app.producer._ensure_producer()
    by_topic: dict[str, list] = {}
    for name, key, value in records:
        by_topic.setdefault(name, []).append((None, key, value))
    return [sent for name, batch in by_topic.items()
            for sent in await send_batches(producer, settings.topic_prefix + name, batch)]


def dead_letter(msg: Message, reason: str, detail: str) -> bytes:
    """Dead-letter record: why, where from, and the original bytes (base64) for replay after a fix.

    (topic, partition, offset) identifies the rejected message: after a crash a dead letter may be sent
    twice (never lost), so a consumer dedupes on it. See docs/reliability.md for the format."""
    value = msg.value
    record = {
        "reason": reason, "detail": detail, "topic": msg.topic, "partition": msg.partition,
        "offset": msg.offset, "rejected_at": time.time(),
        "key": base64.b64encode(msg.key).decode() if msg.key is not None else None,
    }
    if value is not None and len(value) > DEAD_LETTER_MAX_VALUE_BYTES:
        # base64 of a near-1 MB message would not fit in a Kafka message: keep its head and a digest.
        record.update(value_bytes=len(value), value_sha256=hashlib.sha256(value).hexdigest(), value_truncated=True)
        value = value[:DEAD_LETTER_MAX_VALUE_BYTES]
    record["value"] = base64.b64encode(value).decode() if value is not None else None
    return json_bytes(record)


def owned_by_topic(topic: str):
    def owned_partitions() -> set[int]:
        """Partitions of this input topic the worker owns now; other workers export the rest.

        Empty while the tables are being rebuilt from the changelog: a half-recovered table would export
        numbers that drop and come back (false alerts), so the data series are absent until it is done."""
        try:
            if app.in_recovery or not app.tables.recovery.completed.is_set():
                return set()
            return {tp.partition for tp in app.consumer.assignment() if tp.topic == topic}
        except Exception:  # consumer not started yet
            return set()
    return owned_partitions


# One writer at a time: a timer or another agent must never write between a batch's apply() and its commit,
# or bookkeeping saying "done" could reach the changelog before the work it vouches for.
writing = asyncio.Lock()


async def send_all_pending() -> None:
    for table in app.tables.values():
        if isinstance(table, PartitionedTable):
            await table.send_pending()


# Housekeeping (expire) looks at every record every EXPIRE_EVERY seconds, a tenth of them at a time: one
# walk over 150,000 customers held the batches up ~0.25 s, a tenth of it ~0.03 s.
EXPIRE_EVERY, EXPIRE_SHARDS = 30.0, 10

ordered: dict[str, InOrder] = {}  # per pipeline: fills the holes Faust leaves in a partition's offsets


def install(p: Pipeline):
    topic_name = settings.topic_prefix + p.topic
    topic = app.topic(topic_name, key_type=bytes, value_type=bytes, key_serializer="raw",
                      value_serializer="raw", partitions=settings.partitions)
    table = app.tables.add(PartitionedTable(
        app, name=p.name, default=None, beacon=app.tables.beacon, partitions=settings.partitions,
        key_type=str, value_type=None, help=p.help,  # keys and values are JSON (orjson) in the changelog
    ))
    processor = p.make_processor(settings, table)
    owned = owned_by_topic(topic_name)
    if p.make_collector is not None:
        kpis = p.make_collector(settings, table, owned)
        registry.register(kpis)
        registry.register(StatsCollector(kpis))  # the event counters apart: cheap to read on their own

    in_order = InOrder(settings.bootstrap_servers, table)
    ordered[p.name] = in_order

    async def process(batch):
        """One fetch of this topic's messages (streams/consumer.py); acked, so committable, on return."""
        # aiokafka's records have the fields of streams.pipeline.Message (topic, partition, offset, key, value)
        await handle(await in_order.fill(batch))  # holes Faust left are read back first

    async def catch_up():
        """Idle for a while yet behind the end of a partition: Faust skipped messages it will not resend."""
        if time.time() - applied_at[0] < 10 or app.in_recovery or app.rebalancing \
                or not app.flow_control.is_active():  # partitions may be moving: leave them to Faust
            return
        try:
            missing = await in_order.behind(topic_name, owned(), limit=settings.batch_size)
        except Exception as exc:  # e.g. the broker is down: the next round tries again
            log.info("%s: could not check for skipped messages: %s", p.name, exc)
            return
        if missing:
            log.warning("%s: %d messages after the last applied offset were never delivered; applying them",
                        p.name, len(missing))
            await handle(missing)

    applied_at = [time.time()]  # when this pipeline last applied a batch (or started)

    async def handle(messages):
        if not messages:
            return
        async with writing:
            view, result = processor.apply(messages)
            sends = await produce([(DEAD_LETTERS, rejection.reason.encode(), dead_letter(msg, *rejection))
                                   for msg, rejection in result.dead_letters] + result.outputs)
            await acknowledged(sends)  # dead letters and re-keyed events are durable before "done" is written
            processor.commit(view)
            worker_collector.batches += 1
            worker_collector.last_batch = time.time()  # what /metrics shows changed now
            await send_all_pending()  # all tables: a processor may write another's (surveys)
        await acknowledged()  # the changelog holds this batch before its offsets may be committed
        applied_at[0] = time.time()
        worker_collector.read_back = sum(o.filled for o in ordered.values())

    rounds = itertools.count()

    async def expire():
        shard = (next(rounds) % EXPIRE_SHARDS, EXPIRE_SHARDS)
        async with writing:
            removed = processor.expire(owned(), shard=shard)
            await send_all_pending()
        if removed:
            log.info("%s: expired %d finished records and old windows", p.name, removed)

    app.topics.add(topic)  # subscribed by Faust's consumer group, delivered by streams/consumer.py
    batch_handlers[topic_name] = process
    app.timer(interval=5.0, name=f"contactpulse.catch_up_{p.name}")(catch_up)
    app.timer(interval=EXPIRE_EVERY / EXPIRE_SHARDS, name=f"contactpulse.expire_{p.name}")(expire)
    return processor, table, topic_name


installed = {p.name: install(p) for p in PIPELINES}

if gc_full_collections is not None:
    @app.timer(interval=float(settings.gc_full_collect_seconds), name="contactpulse.gc_full_collection")
    async def gc_full_collection():
        gc_full_collections.run()

contacts, contacts_table, CONTACT_TOPIC = installed["contacts"]
# Handle time per agent lives in the contacts table (streams/agents.add_agent_handle).
registry.register(AgentHandleCollector(settings, contacts_table, owned_by_topic(CONTACT_TOPIC)))
worker_collector = WorkerCollector(app, [topic for _, _, topic in installed.values()], gc_full_collections)
registry.register(worker_collector)


# Several pipelines export the same families (events_accepted_total{topic}, ...): merged by name.
exposition = MergedRegistry(registry)


@app.page("/metrics")
async def metrics_page(web, request):
    # ?name[]=a&name[]=b: only those series, as prometheus_client's own handler offers (Prometheus: `params`)
    names = frozenset(request.query.getall("name[]", ())) or None
    # A full scrape of a busy worker takes ~0.3 s: between two collectors, and every few families while
    # rendering, a waiting batch gets its turn, so a scrape never holds the events up for all of it.
    # Each collector reads the tables at one moment (a ratio's numerator and denominator agree).
    merged: dict = {}
    for _ in exposition.collect_steps(merged, names):
        await asyncio.sleep(0)
    body = []
    for i, family in enumerate(merged.values(), 1):
        body.append(render([family]))
        if i % 8 == 0:
            await asyncio.sleep(0)
    # aiohttp refuses a charset inside content_type; the exposition format is UTF-8 by definition
    return web.bytes(b"".join(body), content_type=CONTENT_TYPE_LATEST.replace("; charset=utf-8", ""))


@app.page("/healthz")
async def health_page(web, request):
    owned = owned_by_topic(CONTACT_TOPIC)()
    return web.json({"status": "ok", "partitions": sorted(owned)})


# The TV wallboard at /wallboard (streams/wallboard.py): reads the same samples as /metrics.
from streams import wallboard  # noqa: E402

wallboard_board = wallboard.register(app, exposition, settings, owned_by_topic(CONTACT_TOPIC))

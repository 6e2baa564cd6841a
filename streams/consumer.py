"""Faust's Kafka consumer, delivering the input topics to the pipelines one whole fetch at a time.

Faust hands every message to a stream on its own: a task-spawning wait per message, the conductor's lock,
a channel queue, an Event and an ack, ~70 us of CPU per message before an agent sees a batch (measured:
a do-nothing agent tops out at 2% of raw aiokafka, docs/performance.md). The pipelines work on batches
anyway, so for the topics registered in `batch_handlers` this consumer passes each fetch (up to
broker_max_poll_records messages, in partition order) straight to the pipeline and acks the messages
when it returns. Everything else stays Faust's: the consumer group and its assignor (so tables stay
co-partitioned with their topics), flow control around rebalances, table recovery, offset commits.
A batch is tracked as in flight while it runs, so a rebalance waits for it (wait_empty) before it takes
partitions away from the tables. The pipelines get aiokafka's records as fetched (Faust's per-message
wrapping, tracking and acking cost more than the fetch itself); other topics go through Faust's
per-message path.
"""
from __future__ import annotations

from typing import Any, Awaitable, Callable, Container, Mapping

from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types.tuples import ack_lock
from mode.utils.futures import notify

# Faust has the broker hold a fetch for up to 1.5 s. aiokafka keeps one fetch in flight per broker, for the
# partitions with nothing buffered, so a fetch held open for idle topics (no tickets while calls flow) made
# the busy partitions wait behind it: measured 1.5-2 s event-to-metric latency at 5,000 events/s.
FETCH_MAX_WAIT_MS = 100

# full topic name -> coroutine function taking that topic's messages of one fetch, in offset order per partition
batch_handlers: dict[str, Callable[[list[Any]], Awaitable[None]]] = {}


class BatchConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read when the consumer starts its fetcher
        return consumer


def split_fetch(fetched: list[tuple[Any, list[Any]]], read_offset: Mapping[Any, int | None],
                handled: Container[str]) -> tuple[dict[str, list[tuple[Any, list[Any]]]], list[tuple[Any, list[Any]]]]:
    """A fetch's (tp, records) split into {topic: [(tp, records), ...]} for the pipelines (topics in
    `handled`) and [(tp, records), ...] for Faust's per-message path. Records before a partition's read
    offset (read before a seek back) are dropped, as Faust drops them; a partition left empty is left out."""
    ours: dict[str, list[tuple[Any, list[Any]]]] = {}
    others: list[tuple[Any, list[Any]]] = []
    for tp, records in fetched:
        last = read_offset[tp]
        if last is not None and records[0].offset < last:
            records = [r for r in records if r.offset >= last]
            if not records:
                continue
        if tp.topic in handled:
            ours.setdefault(tp.topic, []).append((tp, records))
        else:
            others.append((tp, records))
    return ours, others


class InFlight:
    """Stands in Faust's set of unacknowledged messages for one batch being processed: a rebalance waits
    (wait_empty) until it is acked, as it would for the batch's messages, at the cost of one entry."""

    __slots__ = ("acked", "refcount", "topic", "size", "__weakref__")

    def __init__(self, topic: str, size: int):
        self.acked, self.refcount, self.topic, self.size = False, 1, topic, size

    def __repr__(self) -> str:
        return f"<batch of {self.size} from {self.topic}>"


class BatchConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> BatchConsumerThread:
        return BatchConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: Any) -> None:  # replaces Faust's per-message loop
        callback = self.callback
        consumer_stopped = self._stopped.is_set
        fetcher_stopped = fetcher._stopped.is_set
        read_offset = self._read_offset
        try:
            while not (consumer_stopped() or fetcher_stopped()):
                self.diag.set_flag(CONSUMER_FETCHING)
                await self.sleep(0)
                fetched = [] if self.should_stop else await self._fetch(timeout=1.0)
                self.diag.unset_flag(CONSUMER_FETCHING)
                ours, others = split_fetch(fetched, read_offset, batch_handlers)
                for tp, records in others:  # e.g. Faust's own internal topics: its per-message path
                    for record in records:
                        await self.wait_first(callback(self._to_message(tp, record)), self.suspend_flow.wait())
                        read_offset[tp] = record.offset
                for topic, parts in ours.items():
                    await self._deliver_batch(topic, parts)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    async def _fetch(self, timeout: float) -> list[tuple[Any, list[Any]]]:
        """Faust's getmany() a partition at a time: (tp, aiokafka records) of one fetch, for the partitions
        Faust would deliver. Its checks (flow control, the consumer generation, active partitions) are made
        once per fetch instead of once per message; nothing can change them while the loop runs."""
        records, active_partitions = await self._wait_next_records(timeout)
        if records is None or self.should_stop:
            return []
        if not self.flow_active:  # as Faust, also after an empty fetch: back to the committed offsets
            try:
                await self.perform_seek()
            except Exception as exc:
                self.log.warning(f"exception performing seek when flow not active {exc}")
            return []
        track_end = self.app.monitor.track_tp_end_offset
        out = []
        for tp, batch in records.items():
            if batch and (active_partitions is None or tp in active_partitions or tp in self._buffered_partitions):
                track_end(tp, self.highwater(tp))
                out.append((tp, batch))
        return out

    async def _deliver_batch(self, topic: str, parts: list[tuple[Any, list[Any]]]) -> None:
        """Hand one topic's records of a fetch (aiokafka ConsumerRecords: topic, partition, offset, key, value)
        to its pipeline, then ack them."""
        messages = [record for _tp, records in parts for record in records]
        marker = InFlight(topic, len(messages))
        self._unacked_messages.add(marker)
        try:
            await batch_handlers[topic](messages)
        except BaseException:
            # Not acked, so not committed: processed again after the restart or rebalance that follows.
            self._unacked_messages.discard(marker)
            raise
        self._ack_batch(topic, parts)
        marker.acked = True
        self._unacked_messages.discard(marker)
        if self._commit_every is not None and self._n_acked >= self._commit_every:
            self._n_acked = 0
            await self.commit()

    def _ack_batch(self, topic: str, parts: list[tuple[Any, list[Any]]]) -> None:
        """Faust's ack() for a whole batch: the same bookkeeping (offsets from the committed one on become
        committable), once per partition instead of once per message."""
        read_offset = self._read_offset
        with ack_lock:
            acks_enabled = self.app.topics.acks_enabled_for(topic)
            for tp, records in parts:
                read_offset[tp] = records[-1].offset
                if not acks_enabled:
                    continue
                committed = self._committed_offset[tp]
                acked_index, acked = self._acked_index[tp], self._acked[tp]
                for record in records:
                    offset = record.offset
                    if (committed is None or offset >= committed) and offset not in acked_index:
                        acked_index.add(offset)
                        acked.append(offset)
                        self._n_acked += 1
            notify(self._waiting_for_ack)


class BatchTransport(faust_aiokafka.Transport):
    Consumer = BatchConsumer

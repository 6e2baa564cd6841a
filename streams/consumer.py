"""Faust's Kafka consumer, delivering the input topics to the pipelines one whole fetch at a time.

Faust hands every message to a stream on its own: a task-spawning wait per message, the conductor's lock,
a channel queue, an Event and an ack, ~70 us of CPU per message before an agent sees a batch (measured:
a do-nothing agent tops out at 2% of raw aiokafka, docs/performance.md). The pipelines work on batches
anyway, so for the topics registered in `batch_handlers` this consumer passes each fetch (up to
broker_max_poll_records messages, in partition order) straight to the pipeline and acks the messages
when it returns. Everything else stays Faust's: the consumer group and its assignor (so tables stay
co-partitioned with their topics), flow control around rebalances, table recovery, offset commits.
Messages are tracked as in flight while a batch runs, so a rebalance waits for the batch (wait_empty)
before it takes partitions away from the tables. Other topics go through Faust's per-message path.
"""
from __future__ import annotations

from typing import Any, Awaitable, Callable

from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka

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
                ours: dict[str, list[Any]] = {}
                others: list[tuple[Any, Any]] = []
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in self.getmany(timeout=1.0):
                        last = read_offset[tp]
                        if last is not None and message.offset < last:
                            continue  # read before (a seek back): as Faust, drop it
                        if tp.topic in batch_handlers:
                            ours.setdefault(tp.topic, []).append(message)
                        else:
                            others.append((tp, message))
                self.diag.unset_flag(CONSUMER_FETCHING)
                for topic, messages in ours.items():
                    await self._deliver_batch(topic, messages)
                for tp, message in others:  # e.g. Faust's own internal topics: its per-message path
                    await self.wait_first(callback(message), self.suspend_flow.wait())
                    read_offset[tp] = message.offset
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    async def _deliver_batch(self, topic: str, messages: list[Any]) -> None:
        for message in messages:
            self.track_message(message)  # in flight: a rebalance waits for it (wait_empty)
        try:
            await batch_handlers[topic](messages)
        except BaseException:
            # Not acked, so not committed: processed again after the restart or rebalance that follows.
            for message in messages:
                self._unacked_messages.discard(message)
            raise
        read_offset = self._read_offset
        for message in messages:
            self.ack(message)
            self._unacked_messages.discard(message)  # ack() keeps a message older than the committed offset
            read_offset[message.tp] = message.offset
        if self._commit_every is not None and self._n_acked >= self._commit_every:
            self._n_acked = 0
            await self.commit()


class BatchTransport(faust_aiokafka.Transport):
    Consumer = BatchConsumer

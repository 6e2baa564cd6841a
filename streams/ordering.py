"""Hand each input partition to its processor in offset order, without holes, whatever Faust delivers.

The per-key offset watermarks (streams/state.py) make a replay idempotent, but they assume what Kafka
promises: a partition's messages arrive in offset order. Around a rebalance Faust can break that
(faust-streaming issues #221, #216, #596): it may hand over a prefetched message far ahead of the
committed offset, or skip messages fetched in the previous consumer generation *and acknowledge them*,
so their offsets get committed and they are never seen again. Either way the processor's watermark would
move past messages it never applied, and those events would be lost.

The processor's own bookkeeping knows exactly where it is: "{p}|s"["o"] is the newest offset of
partition p it has applied (durably: the agent waits for the changelog, see streams/app.py). So before a
batch is applied, every message is checked against it: a message beyond the next expected offset means
a hole, and the missing range is read straight from Kafka (a group-less consumer) and applied first.
A real hole in the log (transaction markers, retention) just reads as nothing. The committed consumer
offset is only a hint for where to resume; the tables are the truth.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, MutableMapping

from streams.pipeline import Message

log = logging.getLogger("contactpulse")


def last_applied(table: MutableMapping[str, Any], partition: int) -> int | None:
    """The newest offset of the partition the processor has applied (None: nothing yet)."""
    stats = table.get(f"{partition}|s")
    return None if stats is None else stats.get("o")


class InOrder:
    def __init__(self, bootstrap: str, table: MutableMapping[str, Any], fetch_timeout: float = 60.0):
        self.bootstrap = bootstrap
        self.table = table
        self.fetch_timeout = fetch_timeout
        self._consumer = None
        self._lock = asyncio.Lock()
        self.filled = 0  # messages read back to fill holes (exported as a counter)

    async def fill(self, messages: list[Message]) -> list[Message]:
        """The batch, with whatever is missing before each partition's first new message put in front."""
        out: list[Message] = []
        expected: dict[int, int] = {}
        for m in messages:
            if m.partition not in expected:
                done = last_applied(self.table, m.partition)
                expected[m.partition] = done + 1 if done is not None else await self._log_start(m.topic, m.partition)
            if m.offset > expected[m.partition]:
                missing = await self.fetch(m.topic, m.partition, expected[m.partition], m.offset)
                if missing:
                    log.warning("%s[%d]: offsets %d-%d were not delivered in order; read %d back from Kafka",
                                m.topic, m.partition, expected[m.partition], m.offset - 1, len(missing))
                out.extend(missing)
            out.append(m)
            expected[m.partition] = max(expected[m.partition], m.offset + 1)
        return out

    async def behind(self, topic: str, partitions: set[int], limit: int = 2000) -> list[Message]:
        """Messages after what the processor applied, up to the end of each partition or `limit` of them
        per partition (for an idle check: a big backlog is caught up a batch at a time)."""
        if not partitions:
            return []
        ends = await self._end_offsets(topic, partitions)
        out: list[Message] = []
        for p in sorted(partitions):
            done = last_applied(self.table, p)
            start = done + 1 if done is not None else await self._log_start(topic, p)
            if start < ends[p]:
                out += await self.fetch(topic, p, start, min(ends[p], start + limit))
        return out

    async def fetch(self, topic: str, partition: int, start: int, end: int) -> list[Message]:
        """Messages with start <= offset < end, read directly (raises if Kafka does not answer in time)."""
        from aiokafka import TopicPartition

        consumer = await self._client()
        tp = TopicPartition(topic, partition)
        out: list[Message] = []
        deadline = time.monotonic() + self.fetch_timeout
        async with self._lock:
            consumer.assign([tp])
            consumer.seek(tp, start)
            while await consumer.position(tp) < end:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"could not read {topic}[{partition}] offsets {start}-{end - 1} back")
                batch = await consumer.getmany(tp, timeout_ms=1000, max_records=5000)
                for record in batch.get(tp, ()):
                    if start <= record.offset < end:
                        out.append(Message(topic, partition, record.offset, record.key, record.value))
        self.filled += len(out)
        return out

    async def _end_offsets(self, topic: str, partitions: set[int]) -> dict[int, int]:
        from aiokafka import TopicPartition

        consumer = await self._client()
        async with self._lock:
            ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return {tp.partition: end for tp, end in ends.items()}

    async def _log_start(self, topic: str, partition: int) -> int:
        from aiokafka import TopicPartition

        consumer = await self._client()
        tp = TopicPartition(topic, partition)
        async with self._lock:
            return (await consumer.beginning_offsets([tp]))[tp]

    async def _client(self):
        if self._consumer is None:
            from aiokafka import AIOKafkaConsumer

            consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                                        auto_offset_reset="earliest")
            await consumer.start()
            self._consumer = consumer
        return self._consumer

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

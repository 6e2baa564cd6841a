"""Table keys and the batch-scoped view of a table.

Every key starts with the Kafka partition it belongs to ("3|c|<contact>"), so that
  * the changelog write goes to that partition even when a batch mixes partitions, and
  * a worker exports only the partitions it owns (Prometheus sums the workers).
Every value carries "o": the offset of the newest input message already applied to it. A message
at an offset <= "o" is skipped for that key, which makes reprocessing after a crash idempotent.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Any, Callable, Iterator, MutableMapping

import faust
import faust.stores.memory
import orjson

log = logging.getLogger("contactpulse")


def partition_of(key: str) -> int:
    return int(key[: key.index("|")])


_dumps, _loads, _NON_STR_KEYS = orjson.dumps, orjson.loads, orjson.OPT_NON_STR_KEYS


def json_bytes(obj: Any) -> bytes:
    """orjson.dumps(obj), right-sized. orjson (3.12 on) returns its working buffer, at least 4 KiB, whatever
    the output's length: measured, a 30-byte table key held 4,097 bytes, and an expiry that deleted 150,000
    records held 600 MB of tombstone keys until they were sent. Whatever is kept until Kafka has it goes
    through here; a copy of the exact length costs ~0.2 us."""
    return bytes(memoryview(_dumps(obj)))


def kind_of(key: str) -> str:
    """The field after the partition: "3|c|abc" -> "c", "3|s" -> "s"."""
    return key.split("|", 2)[1]


# Sends (changelog writes, dead letters, re-keyed events) the broker has not acknowledged yet.
_unacknowledged: set[asyncio.Future] = set()
# A table can be written by more than one agent (surveys update the contacts table); its queued writes
# must reach the changelog in the order they were made.
_send_lock = asyncio.Lock()


def track(fut: asyncio.Future) -> asyncio.Future:
    _unacknowledged.add(fut)
    fut.add_done_callback(_unacknowledged.discard)
    return fut


# (partition or None = by key, key, value): one record to produce
Record = tuple[int | None, bytes | None, bytes | None]


async def send_batches(producer: Any, topic: str, records: list[Record],
                       on_acknowledged: Callable[[int, list[tuple[bytes | None, bytes | None]], int], None] | None = None,
                       ) -> list[asyncio.Future]:
    """Produce records to `topic` as one Kafka record batch per partition (more when one fills up), in order.

    aiokafka's send() costs ~15 us of Python per message (metadata checks, a future per message, its
    resolution); its batch API pays that once per batch: measured, the changelog writes and the
    customer-contacts records were a fifth of the worker's CPU. A record with partition None goes where
    send() would put it (the producer's partitioner, by key). Returns the tracked batch futures;
    on_acknowledged(partition, [(key, value), ...], base offset) runs for each batch the broker acknowledges.
    """
    if not records:
        return []
    await producer.client._wait_on_metadata(topic)
    by_partition: dict[int, list[tuple[bytes | None, bytes | None]]] = {}
    for partition, key, value in records:
        if partition is None:
            partition = producer._partition(topic, None, key, value, key, value)
        by_partition.setdefault(partition, []).append((key, value))
    futures = []
    for partition, items in by_partition.items():
        start = 0
        while start < len(items):
            batch = producer.create_batch()
            end = start  # the first record always fits (a builder takes one of any size)
            while end < len(items) and batch.append(key=items[end][0], value=items[end][1], timestamp=None):
                end += 1
            batch.close()  # complete: no linger, and no send() may add to it
            sent = track(await producer.send_batch(batch, topic, partition=partition))
            if on_acknowledged is not None:
                sent.add_done_callback(functools.partial(_batch_acknowledged, on_acknowledged, partition,
                                                         items[start:end]))
            futures.append(sent)
            start = end
    return futures


def _batch_acknowledged(callback, partition: int, items: list, sent: asyncio.Future) -> None:
    if not sent.cancelled() and sent.exception() is None:
        callback(partition, items, sent.result().offset)  # the batch's base offset


async def acknowledged(futures: list[asyncio.Future] | None = None) -> None:
    """Wait until the given sends, or every tracked send issued so far, are acknowledged by the broker.

    An agent awaits this before it takes its next batch, i.e. before Faust may commit the batch's offsets.
    Faust's own pre-commit flush gives up on its send buffer after 0.1 s without progress, so without
    this wait a commit could overtake the changelog writes it depends on (lost on kill -9).
    A failed send raises here and stops the agent: the batch is then processed again after a restart.
    """
    pending = list(_unacknowledged) if futures is None else futures
    if not pending:
        return
    waiting = asyncio.gather(*pending)
    started = time.monotonic()
    while True:
        try:
            await asyncio.wait_for(asyncio.shield(waiting), timeout=10.0)
            return
        except asyncio.TimeoutError:  # the broker is unreachable or slow: say so, keep waiting
            left = sum(1 for f in pending if not f.done())
            log.warning("waiting %.0f s for Kafka to acknowledge %d of %d sends", time.monotonic() - started,
                        left, len(pending))


class PartitionedTable(faust.Table):
    """A Faust table whose changelog partition is read from the key, not from the current event."""

    def partition_for_key(self, key: Any) -> int:
        return partition_of(key)

    def on_key_get(self, key: Any) -> None:  # skip Faust's per-read sensor call on the hot path
        pass

    def reader(self) -> Callable[[str], Any]:
        """table.get without Faust's layers (Mapping.get, the table's and the store's __getitem__, a KeyError
        raised through them per miss: 9% of the worker's CPU): the memory store's own dict.get."""
        store = self.data
        return store.data.get if isinstance(store, faust.stores.memory.Store) else self.get

    # Faust sends every table write through a buffer drained one message per event-loop turn and stalls
    # the stream when it holds 100 (measured: ~1,000 events/s). Writes are queued here instead and sent
    # by send_pending() straight to the aiokafka producer, which batches them per partition, in order.
    def on_key_set(self, key: Any, value: Any) -> None:
        self._pending_changes.append((key, value))
        kind = kind_of(key)
        self.keys_by_kind.setdefault(kind, {})[key] = None
        self._update_subsets(kind, key, value)

    def on_key_del(self, key: Any) -> None:
        self._pending_changes.append((key, None))
        kind = kind_of(key)
        self.keys_by_kind.get(kind, {}).pop(key, None)
        self._update_subsets(kind, key, None)

    def _update_subsets(self, kind: str, key: str, value: Any) -> None:
        for subset_kind, predicate, keys in self.__dict__.get("_subsets", {}).values():
            if subset_kind == kind:
                if value is not None and predicate(value):
                    keys[key] = None
                else:
                    keys.pop(key, None)

    # Collectors read one kind of key at a time ("w" windows, "c" records, "s" stats ...); an index by
    # kind keeps a scrape from walking every record in the table.
    @property
    def keys_by_kind(self) -> dict[str, dict[str, None]]:
        try:
            return self.__dict__["_by_kind"]
        except KeyError:
            return self.reindex()

    def reindex(self) -> dict[str, dict[str, None]]:
        index: dict[str, dict[str, None]] = {}
        for key in list(self.data.keys()):
            index.setdefault(kind_of(key), {})[key] = None
        self.__dict__["_by_kind"] = index
        self.__dict__["_subsets"] = {}  # rebuilt from the new index when next asked for
        return index

    # A scrape needs the few live records (contacts waiting now, open tickets) among many finished ones
    # kept for dedupe: a subset kept up to date on every write saves walking all of them at each scrape.
    def subset(self, kind: str, predicate: Callable[[Any], bool]) -> dict[str, None]:
        """Keys of `kind` whose value satisfies `predicate` (a module-level function: it names the subset)."""
        subsets = self.__dict__.setdefault("_subsets", {})
        entry = subsets.get(predicate)
        if entry is None:
            store = self.data
            keys = {key: None for key in list(self.keys_by_kind.get(kind, ()))
                    if (value := store.get(key)) is not None and predicate(value)}
            entry = subsets[predicate] = (kind, predicate, keys)
        return entry[2]

    async def on_recovery_completed(self, active_tps: Any, standby_tps: Any) -> None:
        # Recovery writes the store directly (and drops revoked partitions): rebuild the index after it.
        await super().on_recovery_completed(active_tps, standby_tps)
        self.reindex()

    @property
    def _pending_changes(self) -> list:
        try:
            return self.__dict__["_changes"]
        except KeyError:
            return self.__dict__.setdefault("_changes", [])

    async def send_pending(self) -> int:
        """Send queued writes to the changelog (in write order); returns how many. Tracked by acknowledged()."""
        async with _send_lock:  # one sender at a time, or two agents' lists could interleave out of order
            return await self._send_pending()

    async def _send_pending(self) -> int:
        changes = self._pending_changes
        if not changes:
            return 0
        self.__dict__["_changes"] = []
        producer = self.app.producer._ensure_producer()  # aiokafka itself: Faust's wrapper adds ~20 us a send
        known = getattr(self.data, "_key_partition", None)  # the memory store drops revoked keys with it
        local = getattr(self.data, "acknowledged_batch", None)  # RocksDB stores a write once Kafka has it
        records: list[Record] = []
        for key, value in changes:
            partition = partition_of(key)
            if known is not None:
                known[key] = partition
            records.append((partition, json_bytes(key), None if value is None else json_bytes(value)))
        await send_batches(producer, self.changelog_topic.get_topic_name(), records, local)
        return len(changes)

    def _new_store_by_url(self, url: Any) -> Any:
        """store=rocksdb:// gets a store that files keys by the partition in the key (streams/rocksdb_store.py)."""
        if not str(url).startswith("rocksdb:"):
            return super()._new_store_by_url(url)
        from streams.rocksdb_store import PartitionedRocksDBStore

        return PartitionedRocksDBStore(url, self.app, self, table_name=self.name, key_type=self.key_type,
                                       key_serializer=self.key_serializer, value_serializer=self.value_serializer,
                                       value_type=self.value_type, loop=self.loop, options=self.options)


_UNREAD = object()


class BatchView:
    """Reads through to a table, remembers what a batch changed, writes each changed key once.

    Keys are written in the order given to flush(): dependents first, the records that decide what was
    already counted last, so a crash between writes can only ever leave work to be redone, never done twice.
    """

    def __init__(self, table: MutableMapping[str, Any]):
        self.table = table
        self._read = table.reader() if isinstance(table, PartitionedTable) else table.get
        self.values: dict[str, Any] = {}
        self.dirty: dict[str, None] = {}  # insertion-ordered set
        self.deleted: set[str] = set()

    def get(self, key: str) -> Any | None:
        value = self.values.get(key, _UNREAD)  # a miss is the usual case: no KeyError raised for it
        if value is _UNREAD:
            value = self._read(key)
            if value is not None:
                # A private copy: the table (what scrapes and timers see) changes only at flush, and a batch
                # that fails half-way leaves it exactly as the changelog has it.
                value = _loads(_dumps(value, option=_NON_STR_KEYS))
            self.values[key] = value
        return value

    def put(self, key: str, value: Any) -> None:
        self.values[key] = value
        self.dirty[key] = None
        self.deleted.discard(key)

    def touch(self, key: str) -> None:
        self.dirty[key] = None

    def delete(self, key: str) -> None:
        self.values[key] = None
        self.dirty.pop(key, None)
        self.deleted.add(key)

    def flush(self, order: tuple[str, ...]) -> int:
        """Write dirty keys grouped by their kind letter (the part after the partition), in `order`."""
        groups: dict[str, list[str]] = {kind: [] for kind in order}
        for key in self.dirty:
            kind = key.split("|", 2)[1]
            groups.setdefault(kind, []).append(key)
        written = 0
        for keys in groups.values():
            for key in keys:
                self.table[key] = self.values[key]
                written += 1
        for key in self.deleted:
            if key in self.table:
                del self.table[key]
        self.values.clear()
        self.dirty.clear()
        self.deleted.clear()
        return written


def _kind_keys(table: MutableMapping[str, Any], kinds: tuple[str, ...]) -> tuple[Callable[[str], Any], list[str]]:
    """(get, keys of the given kinds): from the PartitionedTable's index, or by a scan of a plain dict (unit
    tests). The keys are listed first, so callers may write or delete while they iterate."""
    index = getattr(table, "keys_by_kind", None)
    if index is not None:
        return table.data.get, [key for kind in kinds for key in index.get(kind, ())]
    return table.get, [key for key in list(table) if kind_of(key) in kinds]


def _kind_pairs(table: MutableMapping[str, Any], kinds: tuple[str, ...], shard: tuple[int, int] = (0, 1)
                ) -> Iterator[tuple[str, Any]]:
    """(key, value) of the given kinds (see _kind_keys); with shard (i, n) only the keys whose hash is i
    modulo n (the same ones every time in a process)."""
    i, n = shard
    get, keys = _kind_keys(table, kinds)
    return ((key, get(key)) for key in keys if n == 1 or hash(key) % n == i)


def _owned(pairs: Iterator[tuple[str, Any]], partitions: set[int] | None
           ) -> Iterator[tuple[str, int, str, list[str], Any]]:
    for key, value in pairs:
        if value is None:  # a tombstone, or a key a revoked partition left in the index
            continue
        p_str, kind, *fields = key.split("|")
        p = int(p_str)
        if partitions is not None and p not in partitions:
            continue
        yield key, p, kind, fields, value


def owned_entries(table: MutableMapping[str, Any], kinds: tuple[str, ...], partitions: set[int] | None,
                  shard: tuple[int, int] = (0, 1)) -> Iterator[tuple[str, int, str, list[str], Any]]:
    """(key, partition, kind, key fields after the kind, value) for keys of the given kinds in the given
    partitions (None = all); tombstones are skipped. What the expire() timers walk: a shard (i, n) of
    them at a time (see _kind_pairs), so that one walk never holds up the batches for long."""
    return _owned(_kind_pairs(table, kinds, shard), partitions)


def iter_kind(table: MutableMapping[str, Any], kind: str, partitions: set[int] | None
              ) -> Iterator[tuple[int, list[str], Any]]:
    """(partition, key fields after the kind, value) for keys of one kind in the given partitions."""
    for _key, p, _kind, fields, value in owned_entries(table, (kind,), partitions):
        yield p, fields, value


def iter_windows(table: MutableMapping[str, Any], kind: str, fragments: frozenset[str],
                 partitions: set[int] | None) -> Iterator[tuple[int, list[str], Any]]:
    """iter_kind() for window keys "{p}|{kind}|{window kind}|{start}|..." whose "{window kind}|{start}" is
    in `fragments` (metrics.kpi.CurrentWindows.fragments()). A scrape wants the few current windows among
    the many kept for late events (~50,000 per-agent ones in a busy centre): told apart by a slice of the
    key, before any split."""
    get, keys = _kind_keys(table, (kind,))
    skip = len(kind) + 2  # past "|{kind}|"

    def current() -> Iterator[tuple[str, Any]]:
        for key in keys:
            start = key.find("|") + skip
            end = key.find("|", key.find("|", start) + 1)
            if key[start:end] in fragments:
                yield key, get(key)

    for _key, p, _kind, fields, value in _owned(current(), partitions):
        yield p, fields, value


def iter_where(table: MutableMapping[str, Any], kind: str, predicate: Callable[[Any], bool],
               partitions: set[int] | None) -> Iterator[tuple[int, list[str], Any]]:
    """iter_kind() for only the values satisfying `predicate`, from the PartitionedTable's live subset."""
    subset = getattr(table, "subset", None)
    if subset is None:  # a plain dict (unit tests)
        pairs = _kind_pairs(table, (kind,))
    else:
        store = table.data
        pairs = ((key, store.get(key)) for key in list(subset(kind, predicate)))
    for _key, p, _kind, fields, value in _owned(pairs, partitions):
        if predicate(value):  # checked again: a revoked partition's keys may linger in the subset
            yield p, fields, value


def add_expired(table: MutableMapping[str, Any], expired_by_partition: dict[int, int], new_stats) -> None:
    """Count records given up on (still open past their limit) in each partition's bookkeeping."""
    for p, n in expired_by_partition.items():
        stats = table.get(f"{p}|s") or new_stats()
        stats["expired"] += n
        table[f"{p}|s"] = stats

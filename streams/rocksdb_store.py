"""RocksDB store for PartitionedTable (`store = "rocksdb://"`, needs `pip install rocksdict`).

Faust's own RocksDB store cannot serve our tables: it files a write under the partition of the event being
processed (and asserts there is one), while our tables write keys of several partitions per batch and from
timers. This store keeps one database per changelog partition like Faust's, and:
  * files every key under the partition named in the key ("3|c|..." -> database 3);
  * writes a value to RocksDB only once Kafka has acknowledged its changelog record, in one atomic batch
    with that record's offset. The database is therefore always an exact prefix of the changelog: after a
    restart, recovery reads only the records after the stored offset, and a crash can never leave the
    database ahead of the changelog (work Kafka never saw, which the "o" watermarks would then skip).
Until acknowledged, writes live in memory (`_unacknowledged`), where reads look first.
"""
from __future__ import annotations

from typing import Iterator

from faust.stores import rocksdb as faust_rocksdb


def key_partition(key: bytes) -> int:
    """Partition of an encoded table key: the JSON string '"3|c|..."' -> 3."""
    return int(key[1:key.index(b"|")])


class PartitionedRocksDBStore(faust_rocksdb.Store):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not self.use_rocksdict:  # the WriteBatch below is rocksdict's
            raise RuntimeError("store=rocksdb:// needs the rocksdict package: pip install rocksdict")
        self._unacknowledged: dict[bytes, bytes | None] = {}  # None: deleted

    # -- writes: held until the changelog has them (see acknowledged) -------------------------------------
    def _set(self, key: bytes, value: bytes | None) -> None:
        self._unacknowledged[key] = value

    def _del(self, key: bytes) -> None:
        self._unacknowledged[key] = None

    def acknowledged_batch(self, partition: int, items: list[tuple[bytes, bytes | None]], base_offset: int) -> None:
        """Kafka holds the batch `items` [(key, value), ...] from `base_offset` on in changelog partition
        `partition`: store them locally, with the offset of the last, in one atomic write."""
        batch = faust_rocksdb.rocksdict.WriteBatch(raw_mode=True)
        for key, value in items:
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        batch.put(self.offset_key, str(base_offset + len(items) - 1).encode())
        self._db_for_partition(partition).write(batch)
        pending = self._unacknowledged
        for key, value in items:
            if key in pending and pending[key] == value:  # no newer write pending
                del pending[key]

    # -- reads: pending writes first, then the key's own partition ------------------------------------------
    def _get(self, key: bytes) -> bytes | None:
        try:
            return self._unacknowledged[key]
        except KeyError:
            return self._db_for_partition(key_partition(key)).get(key)

    def _contains(self, key: bytes) -> bool:
        return self._get(key) is not None

    def _iteritems(self) -> Iterator[tuple[bytes, bytes]]:
        pending = dict(self._unacknowledged)
        for key, value in pending.items():
            if value is not None:
                yield key, value
        for db in self._dbs_for_actives():
            for key, value in self._visible_items(db):
                if key not in pending:
                    yield key, value

    def _iterkeys(self) -> Iterator[bytes]:
        for key, _ in self._iteritems():
            yield key

    def _itervalues(self) -> Iterator[bytes]:
        for _, value in self._iteritems():
            yield value

    def _size(self) -> int:
        return sum(1 for _ in self._iterkeys())

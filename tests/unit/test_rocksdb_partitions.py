"""streams/rocksdb_store.py: keys filed by the partition in the key, written to RocksDB only once Kafka has
acknowledged them (with their changelog offset), readable meanwhile, and still there after a reopen."""
import faust
import orjson
import pytest

pytest.importorskip("rocksdict", reason="store=rocksdb:// needs `pip install rocksdict`")

from faust.types import TP  # noqa: E402

from streams.rocksdb_store import PartitionedRocksDBStore, key_partition  # noqa: E402
from streams.state import PartitionedTable  # noqa: E402


def table_in(tmp_path, name: str = "contacts") -> PartitionedTable:
    app = faust.App(f"unit-{tmp_path.name}", store="rocksdb://", datadir=str(tmp_path), topic_partitions=2)
    return PartitionedTable(app, name=name, default=None, partitions=2, key_type=str, value_type=None)


def test_keys_go_to_their_own_partition_once_acknowledged_and_survive_a_reopen(tmp_path):
    table = table_in(tmp_path)
    store = table.data
    assert isinstance(store, PartitionedRocksDBStore)
    assert key_partition(orjson.dumps("1|c|x")) == 1 and key_partition(orjson.dumps("12|s")) == 12
    # Written outside any stream event (as a timer does): no current event is needed.
    table["0|s"] = {"o": 7}
    table["1|c|abc"] = {"o": 3, "q": "sales"}
    assert table.get("0|s") == {"o": 7} and table.get("1|c|abc") == {"o": 3, "q": "sales"}
    db0, db1 = store._db_for_partition(0), store._db_for_partition(1)
    k0, k1 = orjson.dumps("0|s"), orjson.dumps("1|c|abc")
    assert db0.get(k0) is None and db1.get(k1) is None  # not on disk before Kafka has them

    store.acknowledged_batch(0, [(k0, orjson.dumps({"o": 7}))], 41)
    store.acknowledged_batch(1, [(k1, orjson.dumps({"o": 3, "q": "sales"}))], 5)
    assert db0.get(k0) == orjson.dumps({"o": 7}) and db1.get(k1) is not None
    assert db0.get(k1) is None and db1.get(k0) is None  # each key in its partition's database only
    assert store._unacknowledged == {}
    changelog = table.changelog_topic.get_topic_name()
    assert store.persisted_offset(TP(changelog, 0)) == 41 and store.persisted_offset(TP(changelog, 1)) == 5

    # A newer write still waiting for Kafka is what reads see, even after the older one is acknowledged.
    table["0|s"] = {"o": 9}
    store.acknowledged_batch(0, [(k0, orjson.dumps({"o": 7}))], 41)
    assert table.get("0|s") == {"o": 9}
    del table["1|c|abc"]
    assert table.get("1|c|abc") is None and db1.get(k1) is not None  # deletion pending
    store.acknowledged_batch(1, [(k1, None)], 6)
    assert db1.get(k1) is None and store.persisted_offset(TP(changelog, 1)) == 6

    # Reopened (a restart): what Kafka acknowledged is there; the unacknowledged {"o": 9} is not.
    for db in store._dbs.values():
        db.close()
    store._dbs.clear()
    again = table_in(tmp_path).data
    assert again.persisted_offset(TP(changelog, 0)) == 41
    assert again._get(k0) == orjson.dumps({"o": 7}) and again._get(k1) is None

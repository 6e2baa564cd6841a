"""streams/state.py PartitionedTable: the per-kind index and the live subsets (waiting contacts) that
scrapes read instead of every record, kept right through writes, deletes, and a rebuild after recovery."""
import faust

from streams.contacts import is_waiting
from streams.state import PartitionedTable, iter_kind, iter_where, owned_entries


def memory_table(tmp_path) -> PartitionedTable:
    app = faust.App(f"unit-{tmp_path.name}", store="memory://", datadir=str(tmp_path), topic_partitions=2)
    return PartitionedTable(app, name="contacts", default=None, partitions=2, key_type=str, value_type=None)


def waiting(table, partitions=None) -> list[str]:
    return sorted(fields[0] for _p, fields, _rec in iter_where(table, "c", is_waiting, partitions))


def test_waiting_subset_follows_every_write(tmp_path):
    table = memory_table(tmp_path)
    table["0|c|a"] = {"q": "sales", "off": 10.0}
    table["1|c|b"] = {"q": "sales", "off": 11.0}
    table["0|w|i|0|sales|voice"] = {"off": 1}
    assert waiting(table) == ["a", "b"]  # built on first use from the kind index
    table["1|c|c"] = {"q": "sales", "off": 12.0}  # a new waiting contact after the subset exists
    table["0|c|a"] = {"q": "sales", "off": 10.0, "ans": 15.0}  # answered: leaves the subset
    table["1|c|d"] = {"q": "sales"}  # not offered yet: never waiting
    assert waiting(table) == ["b", "c"]
    assert waiting(table, partitions={0}) == [] and waiting(table, partitions={1}) == ["b", "c"]
    del table["1|c|b"]
    assert waiting(table) == ["c"]
    assert sorted(f[0] for _p, f, _v in iter_kind(table, "c", None)) == ["a", "c", "d"]
    assert [(k, p, kind) for k, p, kind, _f, _v in owned_entries(table, ("w",), {0})] == [("0|w|i|0|sales|voice", 0, "w")]

    # Recovery writes the store directly, then rebuilds the index (on_recovery_completed -> reindex).
    table.data["0|c|e"] = {"q": "support", "off": 20.0}
    assert waiting(table) == ["c"]  # not seen yet: no write went through the table
    table.reindex()
    assert waiting(table) == ["c", "e"]
    table.data.pop("1|c|c")  # a revoked partition's keys dropped by the store: skipped, not an error
    assert waiting(table) == ["e"]


def test_plain_dict_is_scanned(tmp_path):
    table = {"0|c|a": {"q": "sales", "off": 1.0}, "0|c|b": {"q": "sales", "off": 1.0, "ab": 3.0}, "0|s": {"o": 4}}
    assert waiting(table) == ["a"]

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


def test_expiry_shards_split_the_keys_of_a_kind_without_overlap(tmp_path):
    table = memory_table(tmp_path)
    for i in range(200):
        table[f"{i % 2}|c|contact-{i}"] = {"q": "sales"}
    table["0|w|i|0|sales|voice"] = {"off": 1}
    for source in (table, dict(table.items())):  # the worker's table and a plain dict (unit tests)
        shards = [sorted(key for key, *_ in owned_entries(source, ("c",), None, (i, 3))) for i in range(3)]
        assert sorted(key for shard in shards for key in shard) == sorted(f"{i % 2}|c|contact-{i}" for i in range(200))
        assert all(20 < len(shard) < 120 for shard in shards)  # each a share, none empty
        # the same keys in the same shard every time (a record is looked at once per round of shards)
        assert shards == [sorted(key for key, *_ in owned_entries(source, ("c",), None, (i, 3))) for i in range(3)]
        assert sorted(k for k, *_ in owned_entries(source, ("c",), {1}, (0, 1))) == sorted(
            f"1|c|contact-{i}" for i in range(1, 200, 2))


def test_iter_windows_reads_only_the_current_windows(tmp_path):
    from metrics.kpi import CurrentWindows
    from streams.config import load_settings
    from streams.state import iter_windows

    s = load_settings(env={})
    now = 1_795_000_130.0  # 11:08:50Z; interval 11:00 = 1794999600, day 1794960000, minute 11:08 = 1795000080
    cur = CurrentWindows(s, now)
    table = memory_table(tmp_path)
    current = {"0|a|i|1794999600|sales|a1", "1|a|d|1794960000|sales|a2", "0|a|m|1795000080|sales|a1",
               "0|a|m|1794996540|sales|a1"}  # the oldest minute of the trailing hour (10:09)
    old = {"0|a|i|1794998700|sales|a1", "0|a|m|1794996480|sales|a1", "0|a|d|1794873600|sales|a1",
           "0|a|m|17950000800|sales|a1"}  # the previous interval, a minute too old, yesterday, a longer number
    for key in current | old:
        table[key] = {"hnd": 1}
    table["0|ab"] = {"agents": []}
    got = {"|".join([str(p), "a", *fields]) for p, fields, _v in iter_windows(table, "a", cur.fragments(), None)}
    assert got == current
    assert {f[3] for _p, f, _v in iter_windows(table, "a", cur.fragments(), {1})} == {"a2"}
    assert {"|".join([str(p), "a", *f]) for p, f, _v in iter_windows(dict(table.items()), "a", cur.fragments(), None)} == current

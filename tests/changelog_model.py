"""A model of what Kafka and Faust do to a processor's table across crashes (unit tests, no broker):
  * every table write is appended to a changelog (a list), in the order BatchView.flush() writes it;
  * a crash keeps an arbitrary prefix of the changelog (the writes the broker acknowledged) and, per input
    partition, a committed offset at some batch boundary whose writes are all in that prefix (the worker
    acknowledges a batch only after its changelog writes are acknowledged, see streams/app.py);
  * recovery rebuilds the table from the changelog prefix (last write per key wins), and the worker
    reprocesses every message after the committed offset, in partition order, in batches of any size.
Used by tests/unit/test_fuzz_crash_replay.py (contacts) and tests/unit/test_tickets_fuzz.py (tickets).
"""
from __future__ import annotations

from typing import Any, Callable

import orjson

from streams.pipeline import Message

# (table) -> a processor writing that table
MakeProcessor = Callable[["ChangelogTable"], Any]


class ChangelogTable(dict):
    """A dict that records every write as the changelog would carry it (serialized at write time)."""

    def __init__(self):
        super().__init__()
        self.log: list[tuple[str, bytes | None]] = []

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        self.log.append((key, orjson.dumps(value)))

    def __delitem__(self, key):
        super().__delitem__(key)
        self.log.append((key, None))


def recover(log: list[tuple[str, bytes | None]]) -> ChangelogTable:
    table = ChangelogTable()
    for key, raw in log:
        if raw is None:
            dict.pop(table, key, None)
        else:
            dict.__setitem__(table, key, orjson.loads(raw))
    table.log = list(log)
    return table


def split(messages: list, sizes: list[int]) -> list[list]:
    """Consecutive batches with the given sizes, cycled."""
    batches, i, k = [], 0, 0
    while i < len(messages):
        n = sizes[k % len(sizes)]
        batches.append(messages[i:i + n])
        i += n
        k += 1
    return batches


def outcome_totals(table) -> dict:
    """Every message has exactly one outcome, summed over the partitions' "{p}|s" bookkeeping."""
    out = {"accepted": 0, "rejected": 0, "duplicate": 0, "rekeyed": 0}
    for key, stats in table.items():
        if key.endswith("|s"):
            out["accepted"] += sum(stats["acc"].values())
            out["rejected"] += sum(stats["rej"].values())
            out["duplicate"] += stats["dup"]
            out["rekeyed"] += stats["rekey"]
    return out


def _dead(result) -> list[tuple[int, int, str]]:
    return [(m.partition, m.offset, r.reason) for m, r in result.dead_letters]


def run_clean(make: MakeProcessor, messages: list[Message], sizes: list[int]):
    """(table, dead letters as (partition, offset, reason)) of a run without crashes."""
    table = ChangelogTable()
    proc = make(table)
    dead = []
    for batch in split(messages, sizes):
        dead += _dead(proc.process_batch(batch))
    return table, dead


def run_with_crashes(make: MakeProcessor, messages: list[Message], sizes: list[int], crashes):
    """crashes: [(batch number, fraction of that batch's writes that reached the broker, commit lag)]"""
    table = ChangelogTable()
    committed: dict[int, int] = {}  # partition -> last committed offset
    dead = []
    todo = list(messages)
    for crash_at, kept_fraction, lag in crashes:
        proc = make(table)
        batches = split(todo, sizes)
        if crash_at >= len(batches):
            break
        done_batches = []
        for batch in batches[:crash_at]:
            dead += _dead(proc.process_batch(batch))
            done_batches.append(batch)
        # The crashing batch: its dead letters may or may not have gone out; only a prefix of its
        # changelog writes reached the broker.
        before = len(table.log)
        view, result = proc.apply(batches[crash_at])
        dead += _dead(result)
        proc.commit(view)
        written = len(table.log) - before
        log = table.log[: before + int(written * kept_fraction)]
        # Commits lag behind processing: the committed offset is the end of some earlier complete batch.
        for batch in done_batches[: max(0, len(done_batches) - lag)]:
            for m in batch:
                committed[m.partition] = max(committed.get(m.partition, -1), m.offset)
        table = recover(log)
        todo = [m for m in messages if m.offset > committed.get(m.partition, -1)]
    proc = make(table)
    for batch in split(todo, sizes):
        dead += _dead(proc.process_batch(batch))
    return table, dead

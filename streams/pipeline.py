"""What every input stream has in common: a topic, a changelog-backed table, a batch processor
and a Prometheus collector. streams/app.py turns each Pipeline into a Faust agent.

A processor implements:
    apply(messages: list[Message]) -> (BatchView, BatchResult)   work out a batch's effects
    commit(view) -> int                                           write them (dependents first)
    expire(partitions: set[int] | None) -> int                    housekeeping from a timer
A result's dead letters and outputs are produced *before* commit() writes the bookkeeping, so a crash
can only cause work to be redone (and redoing it is idempotent, see streams/state.py).
Every processor keeps "{p}|s" per input partition with "o" = the newest offset it has applied (written
last): streams/ordering.py relies on it to give the processor each partition in order, without holes.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, MutableMapping, NamedTuple

from streams.events import Rejection
from streams.state import BatchView


class Message(NamedTuple):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class BatchResult:
    dead_letters: list[tuple[Message, Rejection]] = field(default_factory=list)
    # (logical topic name without prefix, key, value): events to produce, e.g. re-keyed or forwarded ones
    outputs: list[tuple[str, bytes, bytes]] = field(default_factory=list)


@dataclass
class Pipeline:
    name: str  # table name and agent name suffix
    topic: str  # logical input topic (settings.topic_prefix is added)
    make_processor: Callable[..., Any]  # (settings, table) -> processor
    make_collector: Callable[..., Any] | None  # (settings, table, owned_partitions) -> prometheus Collector
    help: str = ""


class Bookkeeping:
    """One message's view of its partition's "{p}|s" entry: the offset watermark and the outcome counters.

    `fresh` is False only when the message is reprocessed after a crash that wrote the stats already: then
    nothing is counted or sent again. Every outcome (accepted, rejected, duplicate, rekeyed) is counted here
    so that accepted + rejected + duplicate + rekeyed == messages consumed.
    """

    __slots__ = ("msg", "result", "stats", "fresh")

    def __init__(self, view: BatchView, msg: Message, result: BatchResult, new_stats: Callable[[], dict]):
        self.msg, self.result = msg, result
        key = f"{msg.partition}|s"
        self.stats = view.get(key) or new_stats()
        self.fresh = msg.offset > self.stats["o"]
        if self.fresh:
            self.stats["o"] = msg.offset
            view.put(key, self.stats)

    def reject(self, reason: str, detail: str) -> None:
        """Count the rejection by reason and dead-letter the message."""
        if self.fresh:
            self.stats["rej"][reason] = self.stats["rej"].get(reason, 0) + 1
            self.result.dead_letters.append((self.msg, Rejection(reason, detail)))

    def accept(self, etype: str) -> None:
        if self.fresh:
            self.stats["acc"][etype] = self.stats["acc"].get(etype, 0) + 1

    def duplicate(self) -> None:
        if self.fresh:
            self.stats["dup"] += 1

    def rekeyed(self, topic: str, right_key: bytes) -> bool:
        """True if the message arrived with the wrong key: it is then produced again with the right one."""
        if self.msg.key == right_key:
            return False
        if self.fresh:
            self.stats["rekey"] += 1
            self.result.outputs.append((topic, right_key, self.msg.value))
        return True

    def advance_watermark(self, ts: float) -> None:
        if ts > self.stats["wm"]:
            self.stats["wm"] = ts

    def admit_queue(self, queue: str, max_queues: int) -> bool:
        """False (and rejected as queue_budget_exceeded) for a new queue past the partition's budget."""
        queues = self.stats["queues"]
        if queue not in queues:
            if len(queues) >= max_queues:
                self.reject("queue_budget_exceeded", f"more than {max_queues} queues (max_queues)")
                return False
            if self.fresh:
                queues.append(queue)
        return True

    def agent_label(self, agent: str | None, max_agents: int, overflow: str) -> str | None:
        """The agent's label within the partition's max_agents budget; past it, `overflow` (counted)."""
        if agent is None or agent in self.stats["agents"]:
            return agent
        if len(self.stats["agents"]) < max_agents:
            if self.fresh:
                self.stats["agents"].append(agent)
            return agent
        if self.fresh:
            self.stats["agent_overflow"] += 1
        return overflow

    # A record remembers the offsets of the messages it applied but found too late ("late"), so that a
    # replay after a crash (record written, stats not) counts the same outcome again.
    def settle(self, rec: dict, too_late: str | None, accept: Callable[[], None]) -> None:
        """Count a message just applied to `rec`: rejected as too late (and remembered), else accepted."""
        if too_late is not None:
            self.reject("too_late", too_late)
            rec.setdefault("late", []).append(self.msg.offset)  # remembered for a replay after a crash
        else:
            accept()

    def recount(self, rec: dict, applied_here: bool, ts: float, accept: Callable[[], None]) -> None:
        """Reprocessing a message the record already holds (o <= rec["o"]): `applied_here` says whether this
        offset applied the event (count its outcome again) or found it a duplicate."""
        if applied_here:
            self.advance_watermark(ts)
            if self.msg.offset in rec.get("late", ()):
                self.reject("too_late", "closed interval (reprocessed after a restart)")
            else:
                accept()
        else:
            self.duplicate()


class BatchProcessor:
    """apply()/commit()/process_batch() for a processor that handles one message at a time in
    _process(view, msg, now, result) and writes its keys in `flush_order` (dependents first, stats last)."""

    flush_order: tuple[str, ...] = ()

    def __init__(self, settings: Any, table: MutableMapping[str, Any], clock: Callable[[], float] = time.time):
        self.s = settings
        self.table = table
        self.clock = clock
        self.tz = settings.tz

    def apply(self, messages: list[Message]) -> tuple[BatchView, BatchResult]:
        """Work out a batch's effects without writing them: the caller produces the dead letters and
        re-keyed events first, then calls commit(), so the bookkeeping that says "done" is written last."""
        view = BatchView(self.table)
        result = BatchResult()
        now = self.clock()
        for msg in messages:
            self._process(view, msg, now, result)
        return view, result

    def commit(self, view: BatchView) -> int:
        return view.flush(self.flush_order)

    def process_batch(self, messages: list[Message]) -> BatchResult:
        view, result = self.apply(messages)
        self.commit(view)
        return result

    def parse(self, parser: Callable[..., Any], msg: Message, now: float) -> Any:
        """The event in msg, or a Rejection, by the topic's parser and the configured limits."""
        return parser(msg.value, now, max_bytes=self.s.max_message_bytes,
                      max_future=self.s.max_future_skew_seconds, max_age=self.s.max_event_age_seconds)

    def admitted(self, bk: Bookkeeping, parser: Callable[..., Any], msg: Message, now: float, topic: str,
                 key_field: str, budget_queue: bool = False) -> Any | None:
        """The message's event when this partition is to apply it; None when it was rejected (and
        dead-lettered), arrived with the wrong key (produced again keyed by `key_field`: all events of one
        record must share its partition), or brings a new queue past the budget."""
        ev = self.parse(parser, msg, now)
        if isinstance(ev, Rejection):
            bk.reject(*ev)
            return None
        if bk.rekeyed(topic, getattr(ev, key_field).encode()):
            return None
        if budget_queue and not bk.admit_queue(ev.queue, self.s.max_queues):
            return None
        return ev

    def _process(self, view: BatchView, msg: Message, now: float, result: BatchResult) -> None:
        raise NotImplementedError

"""The monitor's own counters, summed at scrape time from the processors' "{p}|s" entries.

Every processor keeps the same bookkeeping per input partition (streams/pipeline.py Bookkeeping):
accepted events by type ("acc"), rejections by reason ("rej"), duplicates ("dup"), re-keyed events
("rekey") and the newest event time ("wm"). Each pipeline's collector exports them with its own `topic`
label under the same family names; metrics/merge.py turns same-named families into one.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, MutableMapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from streams.state import iter_kind

REKEYED_HELP = "Events that arrived with the wrong key and were produced again with the right one."
OVERFLOW_HELP = "Events or contacts whose label value was past its cardinality budget (summed under __overflow__)."


class TableCollector(Collector):
    """A pipeline's collector: reads its table at scrape time, only for the partitions this worker owns.

    `topic` is the logical input topic (without settings.topic_prefix), used as a label."""

    topic_default = ""

    def __init__(self, settings: Any, table: MutableMapping[str, Any],
                 owned_partitions: Callable[[], set[int] | None], clock: Callable[[], float] = time.time,
                 topic: str | None = None):
        self.s = settings
        self.table = table
        self.owned = owned_partitions
        self.clock = clock
        self.topic = topic or self.topic_default
        # False when the worker registers the pipeline's own counters apart (StatsCollector), so that
        # /metrics?name[]=... and the wallboard can read either without computing the other.
        self.include_stats = True

    def collect(self) -> Iterable:
        partitions = self.owned()
        yield from self.collect_kpis(partitions)
        if self.include_stats:
            yield from self.collect_stats(partitions)

    def collect_kpis(self, partitions: set[int] | None) -> Iterable:
        """The pipeline's KPI families for the given partitions (None: all)."""
        raise NotImplementedError

    def collect_stats(self, partitions: set[int] | None) -> Iterable:
        """The pipeline's own counters (events accepted, rejected, ...): cheap, read from "{p}|s"."""
        return ()


class StatsCollector(Collector):
    """A pipeline's own counters as a collector of their own (see TableCollector.include_stats)."""

    def __init__(self, kpis: TableCollector):
        kpis.include_stats = False
        self.kpis = kpis

    def collect(self) -> Iterable:
        return self.kpis.collect_stats(self.kpis.owned())


@dataclass
class StatsTotals:
    acc: dict[str, int] = field(default_factory=dict)
    rej: dict[str, int] = field(default_factory=dict)
    dup: int = 0
    rekey: int = 0
    wm: float = 0.0
    extra: dict[str, int] = field(default_factory=dict)  # pipeline-specific counters, e.g. "expired"


def sum_stats(table: MutableMapping[str, Any], partitions: set[int] | None, *extra: str) -> StatsTotals:
    """The "{p}|s" entries of the given partitions summed (the newest event time: the max)."""
    t = StatsTotals(extra=dict.fromkeys(extra, 0))
    for _p, _fields, stats in iter_kind(table, "s", partitions):
        for k, v in stats["acc"].items():
            t.acc[k] = t.acc.get(k, 0) + v
        for k, v in stats["rej"].items():
            t.rej[k] = t.rej.get(k, 0) + v
        t.dup += stats["dup"]
        t.rekey += stats.get("rekey", 0)  # the internal customer-contacts records are never re-keyed
        t.wm = max(t.wm, stats.get("wm", 0.0))
        for name in extra:
            t.extra[name] += stats.get(name, 0)
    return t


def event_families(topic: str, t: StatsTotals, *, accepted_name: str = "contactpulse_events_accepted",
                   accepted_help: str = "Events accepted, by type.", rekeyed_help: str = REKEYED_HELP) -> tuple:
    """accepted{topic,type}, rejected{topic,reason}, duplicate{topic}, rekeyed{topic}."""
    accepted = CounterMetricFamily(accepted_name, accepted_help, labels=["topic", "type"])
    rejected = CounterMetricFamily("contactpulse_events_rejected", "Events rejected (also sent to the dead-letter topic), by reason.", labels=["topic", "reason"])
    duplicate = CounterMetricFamily("contactpulse_events_duplicate", "Events delivered again (same event_id or a repeated one-time step).", labels=["topic"])
    rekeyed = CounterMetricFamily("contactpulse_events_rekeyed", rekeyed_help, labels=["topic"])
    for k, v in sorted(t.acc.items()):
        accepted.add_metric([topic, k], v)
    for k, v in sorted(t.rej.items()):
        rejected.add_metric([topic, k], v)
    duplicate.add_metric([topic], t.dup)
    rekeyed.add_metric([topic], t.rekey)
    return accepted, rejected, duplicate, rekeyed


def topic_counter(name: str, documentation: str, topic: str, value: float) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=["topic"])
    family.add_metric([topic], value)
    return family


def watermark_family(topic: str, t: StatsTotals) -> GaugeMetricFamily:
    """The newest event time seen; no sample before the first event."""
    family = GaugeMetricFamily("contactpulse_last_event_timestamp_seconds", "Event time of the newest event seen.", labels=["topic"])
    if t.wm:
        family.add_metric([topic], t.wm)
    return family


def label_overflow(topic: str, label: str, value: int) -> CounterMetricFamily:
    family = CounterMetricFamily("contactpulse_label_overflow", OVERFLOW_HELP, labels=["topic", "label"])
    family.add_metric([topic, label], value)
    return family

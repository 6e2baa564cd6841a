"""Prometheus exposition of the ticket pipeline: reads the tickets table at scrape time (issue 3).

Counts per (queue, channel, priority, window) come from the windows that are current by the wall clock;
live gauges (awaiting a first response, age of the oldest, tickets by status) come from the ticket records,
so the oldest age keeps growing between events. Definitions: docs/metrics.md "Tickets".
"""
from __future__ import annotations

import time
from typing import Any, Callable, Iterable, MutableMapping

from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily

from metrics.distribution import cumulative_buckets, merge_dists, quantile
from metrics.kpi import CurrentWindows, ratio
from metrics.pipeline_stats import TableCollector, event_families, sum_stats, topic_counter, watermark_family
from streams.config import Settings
from streams.state import iter_where, iter_windows
from streams.tickets import (FRT_BUCKETS, RESOLUTION_BUCKETS, SOLVED_BY, STATUSES, awaiting_first_response,
                             is_live, new_window, ticket_status)
from streams.topics import TICKET_EVENTS

def merge_windows(windows: list[dict], cap: int) -> dict:
    """One window's counts from several (e.g. the minute slots of the trailing window)."""
    out = new_window()
    out["cr"] = sum(w["cr"] for w in windows)
    out["ro"] = sum(w["ro"] for w in windows)
    out["fr"] = merge_dists([w["fr"] for w in windows], len(FRT_BUCKETS), cap)
    out["fb"] = merge_dists([w["fb"] for w in windows], len(FRT_BUCKETS), cap)
    for by in SOLVED_BY:
        out["rs"][by] = merge_dists([w["rs"][by] for w in windows], len(RESOLUTION_BUCKETS), cap)
        out["rr"][by] = sum(w["rr"][by] for w in windows)
    return out


class Summary:
    """A duration's families: the gauge histogram (_bucket/_gcount/_gsum, raw counts Prometheus can sum
    across workers) and this worker's mean, median and p90 (exact up to ticket_exact_values per window)."""

    def __init__(self, name: str, what: str, labels: list[str]):
        base = f"contactpulse_tickets_{name}"
        self.hist = GaugeHistogramMetricFamily(f"{base}_seconds", what[0].upper() + what[1:] + ".", labels=labels)
        self.mean = GaugeMetricFamily(f"{base}_mean_seconds", f"This worker's mean {what}.", labels=labels)
        self.median = GaugeMetricFamily(f"{base}_median_seconds", f"This worker's median {what}.", labels=labels)
        self.p90 = GaugeMetricFamily(f"{base}_p90_seconds", f"This worker's 90th percentile {what}.", labels=labels)

    def add(self, lv: list[str], d: dict, bounds, accuracy: float) -> None:
        """bounds=None: no histogram (a combined series whose parts are already exported)."""
        if bounds is not None:
            self.hist.add_metric(lv, cumulative_buckets(bounds, d["h"]), d["sum"])
        mean = ratio(d["sum"], d["n"])
        if mean is not None:  # no tickets: no value, not 0
            self.mean.add_metric(lv, mean)
            self.median.add_metric(lv, quantile(d, 0.5, accuracy))
            self.p90.add_metric(lv, quantile(d, 0.9, accuracy))

    def families(self) -> tuple:
        return self.hist, self.mean, self.median, self.p90


class TicketCollector(TableCollector):
    topic_default = TICKET_EVENTS

    def __init__(self, settings: Settings, table: MutableMapping[str, Any],
                 owned_partitions: Callable[[], set[int] | None], clock: Callable[[], float] = time.time,
                 topic: str | None = None):
        super().__init__(settings, table, owned_partitions, clock, topic)
        self.cap = settings.ticket_exact_values
        self.accuracy = settings.ticket_sketch_accuracy

    def current_windows(self, partitions: set[int] | None, now: float) -> dict[tuple[str, str, str, str], dict]:
        """Merged counts per (queue, channel, priority, window) for the windows that contain `now`."""
        cur = CurrentWindows(self.s, now)
        parts: dict[tuple[str, str, str, str], list[dict]] = {}
        for _p, (kind, start, queue, channel, priority), counts in iter_windows(self.table, "w", cur.fragments(),
                                                                                  partitions):
            window = cur.window_of(kind, int(start))
            if window is not None:
                parts.setdefault((queue, channel, priority, window), []).append(counts)
        return {key: merge_windows(ws, self.cap) for key, ws in parts.items()}

    def live(self, partitions: set[int] | None):
        """(queue, channel, priority) -> (awaiting first response, earliest created ts) and -> {status: n}."""
        awaiting: dict[tuple[str, str, str], tuple[int, float]] = {}
        by_status: dict[tuple[str, str, str], dict[str, int]] = {}
        for _p, _parts, rec in iter_where(self.table, "t", is_live, partitions):
            status = ticket_status(rec)
            labels = tuple(rec["cur"][2:5])
            counts = by_status.setdefault(labels, {})
            counts[status] = counts.get(status, 0) + 1
            if awaiting_first_response(rec):
                n, oldest = awaiting.get(labels, (0, float("inf")))
                awaiting[labels] = (n + 1, min(oldest, rec["cr"][0]))
        return awaiting, by_status

    def collect_kpis(self, partitions: set[int] | None) -> Iterable:
        now = self.clock()
        windows = self.current_windows(partitions, now)
        L = ["queue", "channel", "priority", "window"]
        LS = L + ["solved_by"]

        def gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"contactpulse_tickets_{name}", doc, labels=labels)

        created = gauge("created", "Tickets created in the window.", L)
        frt_count = gauge("first_responses", "Tickets whose first human public reply is in the window.", L)
        frt = Summary("first_response", "first response time (created -> first human public reply)", L)
        biz = Summary("first_response_business", "first response time counted in business hours only", L)
        solved = gauge("solved", "Tickets whose final solve is in the window (retracted if reopened).", LS)
        solved_reopened = gauge("solved_after_reopen",
                                "Of the solved tickets, those reopened at least once before the final solve.", LS)
        res = Summary("resolution", "resolution time (created -> final solve); solved_by=\"all\" (mean, "
                                    "median, p90 only) is agent and auto together", LS)
        reopened = gauge("reopened", "Reopen events in the window.", L)
        auto_ratio = gauge("auto_solved_ratio", "This worker's share of solved tickets solved automatically.", L)
        reopen_ratio = gauge("reopen_ratio", "This worker's share of solved tickets that had been reopened.", L)

        for (queue, channel, priority, window), w in sorted(windows.items()):
            lv = [queue, channel, priority, window]
            created.add_metric(lv, w["cr"])
            frt_count.add_metric(lv, w["fr"]["n"])
            frt.add(lv, w["fr"], FRT_BUCKETS, self.accuracy)
            if self.s.business_hours:
                biz.add(lv, w["fb"], FRT_BUCKETS, self.accuracy)
            for by in SOLVED_BY:
                d = w["rs"][by]
                solved.add_metric(lv + [by], d["n"])
                solved_reopened.add_metric(lv + [by], w["rr"][by])
                res.add(lv + [by], d, RESOLUTION_BUCKETS, self.accuracy)
            both = merge_dists([w["rs"][by] for by in SOLVED_BY], len(RESOLUTION_BUCKETS), self.cap)
            res.add(lv + ["all"], both, None, self.accuracy)
            reopened.add_metric(lv, w["ro"])
            share = ratio(w["rs"]["auto"]["n"], both["n"])
            if share is not None:
                auto_ratio.add_metric(lv, share)
                reopen_ratio.add_metric(lv, (w["rr"]["agent"] + w["rr"]["auto"]) / both["n"])
        yield from (created, frt_count, *frt.families())
        if self.s.business_hours:
            yield from biz.families()
        yield from (solved, solved_reopened, *res.families(), reopened, auto_ratio, reopen_ratio)
        yield from self.collect_live(partitions, now, windows)

    def collect_live(self, partitions: set[int] | None, now: float, windows: dict) -> Iterable:
        LL = ["queue", "channel", "priority"]
        awaiting_g = GaugeMetricFamily("contactpulse_tickets_awaiting_first_response",
                                       "Tickets open now without a human public reply yet.", labels=LL)
        oldest_g = GaugeMetricFamily("contactpulse_tickets_oldest_awaiting_first_response_age_seconds",
                                     "Age of the oldest ticket awaiting a first response now (0 when none).",
                                     labels=LL)
        open_g = GaugeMetricFamily("contactpulse_tickets_open", "Tickets not closed, by live status.",
                                   labels=LL + ["status"])
        awaiting, by_status = self.live(partitions)
        known = set(awaiting) | set(by_status) | {key[:3] for key in windows}  # show 0, not absence
        for labels in sorted(known):
            n, earliest = awaiting.get(labels, (0, now))
            awaiting_g.add_metric(list(labels), n)
            oldest_g.add_metric(list(labels), max(0.0, now - earliest) if n else 0.0)
            counts = by_status.get(labels, {})
            for status in STATUSES:
                open_g.add_metric(list(labels) + [status], counts.get(status, 0))
        yield from (awaiting_g, oldest_g, open_g)

    def collect_stats(self, partitions: set[int] | None) -> Iterable:
        """The same families as the contact pipeline's (merged by name at exposition), topic="ticket-events"."""
        t = sum_stats(self.table, partitions, "expired")
        yield from event_families(self.topic, t)
        yield topic_counter("contactpulse_tickets_expired", "Unsolved tickets dropped after max_open_ticket_seconds without an event.", self.topic, t.extra["expired"])
        yield watermark_family(self.topic, t)

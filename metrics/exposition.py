"""Prometheus exposition: a collector that reads the worker's tables at scrape time.

Nothing is updated per event: counts live in the tables, and each scrape sums the windows that are
current by the wall clock. Live gauges (waiting now, oldest wait) are therefore exact at the instant
of the scrape and keep moving between events.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Iterable, MutableMapping

from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily

from metrics.kpi import CurrentWindows, merge_counts, ratio, sl_counts, wait_bucket_bounds
from metrics.pipeline_stats import TableCollector, event_families, label_overflow, sum_stats, topic_counter, watermark_family
from streams.config import Settings
from streams.contacts import is_waiting
from streams.state import iter_where, iter_windows



def _fmt(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else str(bound)


class ContactCollector(TableCollector):
    topic_default = "contact-events"

    def __init__(self, settings: Settings, table: MutableMapping[str, Any],
                 owned_partitions: Callable[[], set[int] | None], clock: Callable[[], float] = time.time,
                 topic: str | None = None):
        super().__init__(settings, table, owned_partitions, clock, topic)
        self.bounds = wait_bucket_bounds(settings.all_thresholds)

    def current_windows(self, partitions: set[int] | None) -> dict[tuple[str, str, str], dict]:
        """Counts per (queue, channel, window) for the windows that contain 'now'."""
        cur = CurrentWindows(self.s, self.clock())
        out: dict[tuple[str, str, str], dict] = {}
        for _p, (kind, start, queue, channel), counts in iter_windows(self.table, "w", cur.fragments(), partitions):
            window = cur.window_of(kind, int(start))
            if window is not None:
                merge_counts(out.setdefault((queue, channel, window), {}), counts)
        return out

    def waiting_now(self, partitions: set[int] | None) -> dict[tuple[str, str], tuple[int, float]]:
        """(queue, channel) -> (contacts waiting, earliest offered ts)."""
        out: dict[tuple[str, str], tuple[int, float]] = {}
        for _p, _parts, rec in iter_where(self.table, "c", is_waiting, partitions):
            key = (rec["q"], rec["ch"])
            n, oldest = out.get(key, (0, float("inf")))
            out[key] = (n + 1, min(oldest, rec["off"]))
        return out

    def collect_kpis(self, partitions: set[int] | None) -> Iterable:
        windows = self.current_windows(partitions)
        L = ["queue", "channel", "window"]
        LT = L + ["threshold"]
        g = {name: GaugeMetricFamily(f"contactpulse_{name}", doc, labels=LT if "within" in name or name.endswith("numerator") else L)
             for name, doc in (
                 ("contacts_offered", "Contacts whose wait ended in the window (answered + abandoned after the short-abandon threshold)."),
                 ("contacts_answered", "Contacts answered in the window."),
                 ("contacts_answered_within", "Contacts answered with a wait <= threshold seconds."),
                 ("contacts_abandoned", "Contacts abandoned after the short-abandon threshold."),
                 ("contacts_abandoned_within", "Contacts abandoned (after the short-abandon threshold) with a wait <= threshold."),
                 ("contacts_short_abandoned", "Contacts abandoned within the short-abandon threshold (excluded from SL)."),
                 ("contacts_sl_numerator", "Numerator of the configured service-level variant."),
                 ("contacts_sl_denominator", "Denominator of the configured service-level variant."),
                 ("answer_wait_seconds_sum", "Total wait of answered contacts."),
                 ("answer_wait_max_seconds", "Longest wait of a contact answered in the window."),
                 ("abandon_wait_seconds_sum", "Total time to abandon (after the short-abandon threshold)."),
                 ("contacts_handled", "Contacts ended (handled) in the window."),
                 ("handle_seconds_sum", "Handle time: talk + hold + after-contact work."),
                 ("hold_seconds_sum", "Total hold time."),
                 ("after_contact_work_seconds_sum", "Total after-contact (wrap-up) work."),
                 ("holds", "Number of holds."),
                 ("transfers", "Number of transfers."),
                 ("contacts_resolved_by_agent", "Contacts the agent marked resolved."),
                 ("service_level_ratio", "This worker's service level (numerator / denominator)."),
                 ("asa_seconds", "This worker's average speed of answer."),
                 ("abandon_ratio", "This worker's abandonment rate (abandoned / offered)."),
             )}
        g["contacts_answered_within"] = GaugeMetricFamily("contactpulse_contacts_answered_within", g["contacts_answered_within"].documentation, labels=LT)
        g["service_level_ratio"] = GaugeMetricFamily("contactpulse_service_level_ratio", g["service_level_ratio"].documentation, labels=LT)
        hist = GaugeHistogramMetricFamily("contactpulse_answer_wait_seconds", "Wait of answered contacts.", labels=L)
        targets = GaugeMetricFamily("contactpulse_service_level_target_ratio", "Configured service-level target.", labels=["queue", "threshold"])
        queues_seen: set[str] = set()
        for (queue, channel, window), c in sorted(windows.items()):
            queues_seen.add(queue)
            lv = [queue, channel, window]
            ans, ab = c.get("ans", 0), c.get("ab", 0)
            g["contacts_offered"].add_metric(lv, c.get("off", 0))
            g["contacts_answered"].add_metric(lv, ans)
            g["contacts_abandoned"].add_metric(lv, ab)
            g["contacts_short_abandoned"].add_metric(lv, c.get("sab", 0))
            g["answer_wait_seconds_sum"].add_metric(lv, c.get("wsum", 0.0))
            g["answer_wait_max_seconds"].add_metric(lv, c.get("wmax", 0.0))
            g["abandon_wait_seconds_sum"].add_metric(lv, c.get("asum", 0.0))
            g["contacts_handled"].add_metric(lv, c.get("hnd", 0))
            g["handle_seconds_sum"].add_metric(lv, c.get("hsum", 0.0))
            g["hold_seconds_sum"].add_metric(lv, c.get("holdsum", 0.0))
            g["after_contact_work_seconds_sum"].add_metric(lv, c.get("acwsum", 0.0))
            g["holds"].add_metric(lv, c.get("holds", 0))
            g["transfers"].add_metric(lv, c.get("xfer", 0))
            g["contacts_resolved_by_agent"].add_metric(lv, c.get("res", 0))
            denominator = None
            for t in self.s.all_thresholds:
                aw, abw = c.get("aw", {}).get(str(t), 0), c.get("abw", {}).get(str(t), 0)
                num, den = sl_counts(self.s.sl_variant, ans, aw, ab, abw)
                denominator = den
                g["contacts_answered_within"].add_metric(lv + [str(t)], aw)
                g["contacts_abandoned_within"].add_metric(lv + [str(t)], abw)
                g["contacts_sl_numerator"].add_metric(lv + [str(t)], num)
                sl = ratio(num, den)
                if sl is not None:
                    g["service_level_ratio"].add_metric(lv + [str(t)], sl)
            g["contacts_sl_denominator"].add_metric(lv, denominator or 0)
            asa = ratio(c.get("wsum", 0.0), ans)
            if asa is not None:
                g["asa_seconds"].add_metric(lv, asa)
            ab_ratio = ratio(ab, c.get("off", 0))
            if ab_ratio is not None:
                g["abandon_ratio"].add_metric(lv, ab_ratio)
            counts = c.get("wh") or [0] * (len(self.bounds) + 1)
            cumulative, buckets = 0, []
            for bound, n in zip(list(self.bounds) + [float("inf")], counts):
                cumulative += n
                buckets.append(("+Inf" if bound == float("inf") else _fmt(bound), cumulative))
            hist.add_metric(lv, buckets, c.get("wsum", 0.0))
        waiting = GaugeMetricFamily("contactpulse_contacts_waiting", "Contacts in queue now.", labels=["queue", "channel"])
        oldest = GaugeMetricFamily("contactpulse_oldest_waiting_age_seconds",
                                   "Age of the oldest contact waiting now (0 when none).", labels=["queue", "channel"])
        now = self.clock()
        live = self.waiting_now(partitions)
        for (queue, channel, _w) in windows:
            live.setdefault((queue, channel), (0, now))  # show 0, not absence, for known queues
        for (queue, channel), (n, earliest) in sorted(live.items()):
            queues_seen.add(queue)
            waiting.add_metric([queue, channel], n)
            oldest.add_metric([queue, channel], max(0.0, now - earliest) if n else 0.0)
        for queue in sorted(queues_seen):
            for target in self.s.targets_for(queue):
                targets.add_metric([queue, str(target.threshold_seconds)], target.ratio)
        yield from g.values()
        yield hist
        yield waiting
        yield oldest
        yield targets

    def collect_stats(self, partitions: set[int] | None) -> Iterable:
        t = sum_stats(self.table, partitions, "expired")
        yield from event_families(self.topic, t, rekeyed_help="Events that arrived with the wrong key and were produced again keyed by contact_id.")
        yield topic_counter("contactpulse_contacts_expired", "Contacts dropped after max_open_contact_seconds without an outcome.", self.topic, t.extra["expired"])
        yield watermark_family(self.topic, t)
        # Contact events with a queue past max_queues are rejected (queue_budget_exceeded): not exported.
        yield label_overflow(self.topic, "queue", t.rej.get("queue_budget_exceeded", 0))

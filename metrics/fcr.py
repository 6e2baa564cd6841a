"""Prometheus collectors for first contact resolution (streams/repeats.py) and surveys (streams/surveys.py).

Windows are local days of the contact's start (FCR) or of the survey answer (CSAT), because a 72-hour
outcome cannot be read per 15-minute interval:
    today         since local midnight
    yesterday     the previous local day
    last_7_days   today and the six local days before it
A contact's FCR outcome is `final` once the END of the local hour it started in, plus repeat_window_seconds, plus
allowed_lateness_seconds (for repeats that reach the worker late) lies in the past by the wall clock at
scrape time; until then it is `provisional` (resolved so far = no repeat yet). Per-agent counts are kept
per day, so an agent's day turns final only when its last hour has.
"""
from __future__ import annotations

from typing import Iterable

from prometheus_client.core import GaugeMetricFamily

from metrics.kpi import day_start
from metrics.pipeline_stats import TableCollector, event_families, label_overflow, sum_stats
from streams.state import iter_kind

FCR_WINDOWS = ("today", "yesterday", "last_7_days")
STATUSES = ("provisional", "final")


def day_windows(now: float, tz) -> dict[str, tuple[float, float]]:
    """window -> [start, end) in epoch seconds, by the site's local days (DST-safe: noon arithmetic)."""
    today = day_start(now, tz)
    tomorrow = day_start(today + 86400 + 43200, tz)
    yesterday = day_start(today - 43200, tz)
    week = day_start(today - 6 * 86400 + 43200, tz)
    return {"today": (today, tomorrow), "yesterday": (yesterday, today), "last_7_days": (week, tomorrow)}


def windows_of(start: float, bounds: dict[str, tuple[float, float]]) -> list[str]:
    return [w for w, (lo, hi) in bounds.items() if lo <= start < hi]


def _add(into: dict, counts: dict) -> None:
    for k, v in counts.items():
        if k == "o":
            continue
        if isinstance(v, dict):
            sub = into.setdefault(k, {})
            for kk, vv in v.items():
                sub[kk] = sub.get(kk, 0) + vv
        else:
            into[k] = into.get(k, 0) + v


class RepeatCollector(TableCollector):
    """Repeat-based and agent-marked FCR, repeat contacts by channel pair, per queue/channel and per agent."""

    topic_default = "contactpulse-customer-contacts"

    def _closed_after(self) -> float:
        return self.s.repeat_window_seconds + self.s.allowed_lateness_seconds

    def summarise(self, partitions: set[int] | None, now: float | None = None
                  ) -> tuple[dict[tuple, dict], dict[tuple, dict]]:
        """({(queue, channel, window, status): counts}, {(queue, agent, window, status): counts})."""
        now = self.clock() if now is None else now
        tz = self.s.tz
        bounds = day_windows(now, tz)
        closed_after = self._closed_after()
        by_queue: dict[tuple, dict] = {}
        by_agent: dict[tuple, dict] = {}
        for _p, (start, queue, channel), counts in iter_kind(self.table, "f", partitions):
            start = int(start)
            status = "final" if start + 3600 + closed_after <= now else "provisional"
            for window in windows_of(start, bounds):
                _add(by_queue.setdefault((queue, channel, window, status), {}), counts)
        for _p, (day, queue, agent), counts in iter_kind(self.table, "g", partitions):
            day = int(day)
            day_end = day_start(day + 86400 + 43200, tz)
            status = "final" if day_end + closed_after <= now else "provisional"
            for window in windows_of(day, bounds):
                _add(by_agent.setdefault((queue, agent, window, status), {}), counts)
        return by_queue, by_agent

    def collect_kpis(self, partitions: set[int] | None) -> Iterable:
        by_queue, by_agent = self.summarise(partitions)
        LS = ["queue", "channel", "window", "status"]
        L = ["queue", "channel", "window"]
        contacts = GaugeMetricFamily("contactpulse_fcr_contacts", "Handled contacts of identified customers, by the local day they started; status final once their repeat window has closed.", labels=LS)
        resolved = GaugeMetricFamily("contactpulse_fcr_resolved", "Of contactpulse_fcr_contacts, those the customer did not follow with another contact within the repeat window (provisional: not yet).", labels=LS)
        marked = GaugeMetricFamily("contactpulse_fcr_agent_marked_resolved", "Of contactpulse_fcr_contacts (both statuses), those the agent marked resolved.", labels=L)
        marked_rep = GaugeMetricFamily("contactpulse_fcr_agent_marked_resolved_repeated", "Contacts the agent marked resolved that the customer followed with another contact within the repeat window.", labels=L)
        unknown = GaugeMetricFamily("contactpulse_fcr_unknown_customer", "Handled contacts without a usable customer identifier: never matched, not in contactpulse_fcr_contacts.", labels=L)
        pairs = GaugeMetricFamily("contactpulse_repeat_contacts", "Contacts followed by another contact of the same customer within the repeat window, by the first contact's queue and the channel pair.", labels=["queue", "from_channel", "to_channel", "window"])
        a_contacts = GaugeMetricFamily("contactpulse_agent_fcr_contacts", "contactpulse_fcr_contacts per queue and agent (of the first contact).", labels=["queue", "agent", "window", "status"])
        a_resolved = GaugeMetricFamily("contactpulse_agent_fcr_resolved", "contactpulse_fcr_resolved per queue and agent.", labels=["queue", "agent", "window", "status"])
        a_marked = GaugeMetricFamily("contactpulse_agent_fcr_marked_resolved", "contactpulse_fcr_agent_marked_resolved per queue and agent.", labels=["queue", "agent", "window", "status"])
        merged: dict[tuple, dict] = {}
        for (queue, channel, window, status), c in sorted(by_queue.items()):
            _add(merged.setdefault((queue, channel, window), {}), c)
        for (queue, channel, window), total in sorted(merged.items()):
            for status in STATUSES:
                c = by_queue.get((queue, channel, window, status), {})
                contacts.add_metric([queue, channel, window, status], c.get("n", 0))
                resolved.add_metric([queue, channel, window, status], c.get("n", 0) - c.get("rep", 0))
            marked.add_metric([queue, channel, window], total.get("ares", 0))
            marked_rep.add_metric([queue, channel, window], total.get("ares_rep", 0))
            unknown.add_metric([queue, channel, window], total.get("unk", 0))
            for pair, n in sorted(total.get("pairs", {}).items()):
                if n:
                    from_channel, to_channel = pair.split(">", 1)
                    pairs.add_metric([queue, from_channel, to_channel, window], n)
        for (queue, agent, window, status), c in sorted(by_agent.items()):
            a_contacts.add_metric([queue, agent, window, status], c.get("n", 0))
            a_resolved.add_metric([queue, agent, window, status], c.get("n", 0) - c.get("rep", 0))
            a_marked.add_metric([queue, agent, window, status], c.get("ares", 0))
        window_seconds = GaugeMetricFamily("contactpulse_fcr_repeat_window_seconds", "Configured repeat window: a contact followed by another within it is not resolved on first contact.")
        window_seconds.add_metric([], self.s.repeat_window_seconds)
        yield from (contacts, resolved, marked, marked_rep, unknown, pairs, a_contacts, a_resolved, a_marked,
                    window_seconds)

    def collect_stats(self, partitions: set[int] | None) -> Iterable:
        t = sum_stats(self.table, partitions, "agent_overflow")
        yield label_overflow(self.topic, "agent", t.extra["agent_overflow"])
        # Internal records are not input events: counted apart, so events_accepted_total stays "events in".
        yield from event_families(self.topic, t, accepted_name="contactpulse_customer_contact_records",
                                  accepted_help="Records of the internal customer-contacts topic applied, by type (start, handled).")


class SurveyCollector(TableCollector):
    """CSAT and survey-confirmed resolution per queue/channel and per agent, by local day answered."""

    topic_default = "survey-events"

    def summarise(self, partitions: set[int] | None, now: float | None = None
                  ) -> tuple[dict[tuple, dict], dict[tuple, dict]]:
        now = self.clock() if now is None else now
        bounds = day_windows(now, self.s.tz)
        by_queue: dict[tuple, dict] = {}
        by_agent: dict[tuple, dict] = {}
        for kind, out in (("d", by_queue), ("g", by_agent)):
            for _p, (day, a, b), counts in iter_kind(self.table, kind, partitions):
                for window in windows_of(int(day), bounds):
                    _add(out.setdefault((a, b, window), {}), counts)
        return by_queue, by_agent

    def collect_kpis(self, partitions: set[int] | None) -> Iterable:
        by_queue, by_agent = self.summarise(partitions)
        fams = {}
        for prefix, labels, rows in (("contactpulse_", ["queue", "channel", "window"], by_queue),
                                     ("contactpulse_agent_", ["queue", "agent", "window"], by_agent)):
            for name, field, doc in (
                ("csat_responses", "n", "CSAT answers (1-5) by the local day answered, for the rated contact's queue"),
                ("csat_satisfied", "sat", "CSAT answers of 4 or 5"),
                ("csat_points", "score", "Sum of the CSAT scores, in points (average score = points / responses)"),
                ("survey_resolved_responses", "rn", "Answers to 'was your issue resolved?'"),
                ("survey_resolved_yes", "ry", "Answers 'yes' to 'was your issue resolved?'"),
            ):
                fam = GaugeMetricFamily(prefix + name, doc + ".", labels=labels)
                for lv, c in sorted(rows.items()):
                    fam.add_metric(list(lv), c.get(field, 0))
                fams[prefix + name] = fam
        yield from fams.values()

    def collect_stats(self, partitions: set[int] | None) -> Iterable:
        t = sum_stats(self.table, partitions, "agent_overflow")
        yield label_overflow(self.topic, "agent", t.extra["agent_overflow"])
        yield from event_families(self.topic, t)

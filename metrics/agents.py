"""Prometheus collectors for agents: states and occupancy (agents table), handle time per agent (contacts table).

Like metrics/exposition.py, nothing is updated per event: each scrape reads the windows that are current
by the wall clock. An agent's still-open state (since its last change) is added at scrape time, so the
live counts and the current interval's occupancy move with the clock between events.
"""
from __future__ import annotations

from typing import Iterable

from prometheus_client.core import GaugeMetricFamily

from metrics.kpi import CurrentWindows, merge_counts, ratio
from metrics.pipeline_stats import TableCollector, event_families, label_overflow, sum_stats, watermark_family
from streams.agents import BUSY_STATES, NO_QUEUE, TIMED_STATES, agent_record, queue_list
from streams.events import AGENT_STATES
from streams.state import iter_kind, iter_windows

WINDOWS = ("interval", "trailing", "today")


class AgentCollector(TableCollector):
    """contactpulse_agents{queue,state} now, and seconds per state / occupancy per queue and window."""

    topic_default = "agent-events"

    def snapshot(self, partitions: set[int] | None, now: float
                 ) -> tuple[dict[tuple[str, str], dict[str, float]], dict[tuple[str, str], int]]:
        """((queue, window) -> state -> seconds incl. the open states up to now, (queue, state) -> agents now)."""
        cur = CurrentWindows(self.s, now)
        seconds: dict[tuple[str, str], dict[str, float]] = {}
        for _p, (kind, start, queue), w in iter_windows(self.table, "w", cur.fragments(), partitions):
            window = cur.window_of(kind, int(start))
            if window is not None:
                merge_counts(seconds.setdefault((queue, window), {}), w["t"])
        live: dict[tuple[str, str], int] = {}
        starts = cur.starts()
        for _p, _parts, rec in iter_kind(self.table, "a", partitions):
            rec = agent_record(rec)
            if not rec["tt"]:
                continue
            since, state, queues = rec["tt"][-1], rec["ts"][-1], queue_list(rec["tq"][-1])
            for queue in queues or [NO_QUEUE]:
                live[(queue, state)] = live.get((queue, state), 0) + 1
                if state not in TIMED_STATES:
                    continue
                for window, start in starts.items():
                    open_seconds = now - max(since, start)  # the open state, up to the scrape
                    if open_seconds > 0:
                        per_state = seconds.setdefault((queue, window), {})
                        per_state[state] = per_state.get(state, 0.0) + open_seconds
        return seconds, live

    def collect_kpis(self, partitions: set[int] | None) -> Iterable:
        now = self.clock()
        seconds, live = self.snapshot(partitions, now)
        L = ["queue", "window"]
        agents = GaugeMetricFamily("contactpulse_agents", "Agents in each state now (an agent counts once in each of its queues).",
                                   labels=["queue", "state"])
        busy = GaugeMetricFamily("contactpulse_agent_busy_seconds",
                                 "Agent seconds on contact or in after-contact work in the window.", labels=L)
        available = GaugeMetricFamily("contactpulse_agent_available_seconds",
                                      "Agent seconds available (idle, ready for a contact) in the window.", labels=L)
        per_state = GaugeMetricFamily("contactpulse_agent_state_seconds",
                                      "Agent seconds in each state in the window (logged-out time is not summed).",
                                      labels=["queue", "state", "window"])
        occupancy = GaugeMetricFamily("contactpulse_agent_occupancy_ratio",
                                      "This worker's occupancy: busy / (busy + available).", labels=L)
        queues = {q for q, _w in seconds} | {q for q, _st in live}
        for queue in sorted(queues):
            for state in AGENT_STATES:  # 0, not absence, for a known queue
                agents.add_metric([queue, state], live.get((queue, state), 0))
            for window in WINDOWS:
                t = seconds.get((queue, window), {})
                b = sum(t.get(st, 0.0) for st in BUSY_STATES)
                a = t.get("available", 0.0)
                busy.add_metric([queue, window], b)
                available.add_metric([queue, window], a)
                for state in TIMED_STATES:
                    per_state.add_metric([queue, state, window], t.get(state, 0.0))
                occ = ratio(b, b + a)
                if occ is not None:
                    occupancy.add_metric([queue, window], occ)
        yield from (agents, busy, available, per_state, occupancy)

    def collect_stats(self, partitions: set[int] | None) -> Iterable:
        t = sum_stats(self.table, partitions, "ovf")
        yield from event_families(self.topic, t)
        yield label_overflow(self.topic, "queue", t.extra["ovf"])
        yield watermark_family(self.topic, t)


# (field of a per-agent window, family name after contactpulse_agent_, help)
HANDLE_FAMILIES = (
    ("hnd", "contacts_handled", "Contacts the agent ended (handled) in the window."),
    ("hsum", "handle_seconds_sum", "The agent's handle time: talk + hold + after-contact work."),
    ("holdsum", "hold_seconds_sum", "The agent's total hold time."),
    ("holds", "holds", "The agent's number of holds."),
    ("xfer", "transfers", "The agent's number of transfers."),
    ("acwsum", "after_contact_work_seconds_sum", "The agent's total after-contact (wrap-up) work."),
)


class AgentHandleCollector(TableCollector):
    """Handle time, hold and transfers per queue and agent (written by streams/agents.add_agent_handle)."""

    topic_default = "contact-events"

    def current(self, partitions: set[int] | None) -> dict[tuple[str, str, str], list[float]]:
        """(queue, agent, window) -> the HANDLE_FAMILIES fields summed over the windows that contain now.

        Flat lists, not merge_counts(): per agent, queue and trailing minute there is one stored window
        (~50,000 of them in a busy centre's scrape), and the generic merge was half of a scrape's time."""
        cur = CurrentWindows(self.s, self.clock())
        fields = [field for field, _name, _doc in HANDLE_FAMILIES]
        out: dict[tuple[str, str, str], list[float]] = {}
        for _p, (kind, start, queue, agent), counts in iter_windows(self.table, "a", cur.fragments(), partitions):
            window = cur.window_of(kind, int(start))
            if window is None:
                continue
            values = [counts.get(field, 0) for field in fields]
            summed = out.get((queue, agent, window))
            if summed is None:
                out[(queue, agent, window)] = values
            else:
                out[(queue, agent, window)] = [a + b for a, b in zip(summed, values)]
        return out

    def collect_kpis(self, partitions: set[int] | None) -> Iterable:
        L = ["queue", "agent", "window"]
        families = [GaugeMetricFamily(f"contactpulse_agent_{name}", doc, labels=L)
                    for _field, name, doc in HANDLE_FAMILIES]
        for (queue, agent, window), values in sorted(self.current(partitions).items()):
            labels = [queue, agent, window]
            for family, value in zip(families, values):
                family.add_metric(labels, value)
        yield from families
        total = 0
        for _p, _fields, budget in iter_kind(self.table, "ab", partitions):
            total += budget["ovf"]
        yield label_overflow(self.topic, "agent", total)

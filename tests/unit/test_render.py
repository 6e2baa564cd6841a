"""metrics/merge.py render(): byte for byte what prometheus_client's generate_latest() writes, on a
worker's real families (contacts, per-agent handle time, tickets) and on the format's corner cases."""
import time
from datetime import datetime

import orjson
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeHistogramMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

import fault_support as fs
from metrics.agents import AgentHandleCollector
from metrics.exposition import ContactCollector
from metrics.merge import MergedRegistry, render
from metrics.tickets import TicketCollector
from streams.config import load_settings
from streams.contacts import ContactProcessor
from streams.pipeline import Message
from streams.simulator import QueueModel, simulate_centre
from streams.tickets import TicketProcessor


class Corners(Collector):
    def collect(self):
        c = CounterMetricFamily("odd_events", 'Help with a back\\slash and a\nnewline.', labels=["queue"])
        c.add_metric(['say "hi"'], 3)
        c.add_metric(["back\\slash\nnewline"], 1.5)
        yield c
        g = GaugeMetricFamily("odd_values", "Values Go prints its own way.", labels=["k"])
        for k, v in (("inf", float("inf")), ("minus_inf", float("-inf")), ("nan", float("nan")),
                     ("big", 12345678.0), ("huge", 1.5e20), ("int", 7), ("neg", -0.25), ("tiny", 1e-7)):
            g.add_metric([k], v)
        yield g
        g = GaugeMetricFamily("odd_stamped", "A sample with a timestamp.")
        g.add_metric([], 2.0, timestamp=1795000000.123)
        yield g
        h = GaugeHistogramMetricFamily("odd_wait_seconds", "A gauge histogram.", labels=["queue"])
        h.add_metric(["sales"], [("10", 1), ("20", 3), ("+Inf", 4)], gsum_value=55.5)
        yield h


def test_corner_cases_render_as_generate_latest():
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Corners())
    assert render(registry.collect()) == generate_latest(registry)


def test_a_busy_workers_families_render_as_generate_latest():
    now = time.time()
    settings = load_settings(env={})
    contacts, tickets = {}, {}
    contact_proc, ticket_proc = ContactProcessor(settings, contacts), TicketProcessor(settings, tickets)
    queues = [QueueModel(f"q{i}", "voice" if i % 2 else "chat", 12, 0.3) for i in range(3)]
    batches = {"contact-events": [], "ticket-events": []}
    for topic, key, ev in simulate_centre(5, queues, now - 1800, ticket_rate=0.05, mean_handle=60.0,
                                          max_contacts=400):
        if topic in batches:
            ev["ts"] = fs.ms(datetime.fromisoformat(ev["ts"]).timestamp())
            batches[topic].append(Message(topic, 0, len(batches[topic]), key.encode(), orjson.dumps(ev)))
    contact_proc.process_batch(batches["contact-events"])
    ticket_proc.process_batch(batches["ticket-events"])
    registry = CollectorRegistry(auto_describe=False)
    clock = lambda: now  # noqa: E731  (both scrapes must see the same ages)
    registry.register(ContactCollector(settings, contacts, lambda: None, clock=clock))
    registry.register(AgentHandleCollector(settings, contacts, lambda: None, clock=clock))
    registry.register(TicketCollector(settings, tickets, lambda: None, clock=clock))
    text = generate_latest(MergedRegistry(registry))
    assert render(MergedRegistry(registry).collect()) == text
    # A real workload, not an empty one: per-agent series, SL windows and ticket histograms are all there.
    assert text.count(b"\ncontactpulse_agent_contacts_handled{") >= 36
    assert b"\ncontactpulse_contacts_answered_within{" in text and b"contactpulse_tickets_first_response" in text


class Counted(Collector):
    """Yields fixed families and counts how often it was asked to."""

    def __init__(self, *families):
        self.families, self.calls = families, 0

    def collect(self):
        self.calls += 1
        for name, kind, topic, value in self.families:
            family = (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(name, "Help.", labels=["topic"])
            family.add_metric([topic], value)
            yield family


def test_name_filter_runs_only_the_collectors_that_expose_those_names():
    a = Counted(("x_events", "counter", "a", 3), ("x_ratio", "gauge", "a", 0.5))
    b = Counted(("y_agents", "gauge", "b", 7))
    c = Counted(("x_events", "counter", "c", 4))
    registry = CollectorRegistry(auto_describe=False)
    for collector in (a, b, c):
        registry.register(collector)
    merged = MergedRegistry(registry)
    # Nothing learned yet: every collector runs, only the asked-for family comes back, merged across a and c.
    got = render(merged.collect(frozenset({"x_events_total"})))
    assert got == (b'# HELP x_events_total Help.\n# TYPE x_events_total counter\n'
                   b'x_events_total{topic="a"} 3.0\nx_events_total{topic="c"} 4.0\n')
    assert (a.calls, b.calls, c.calls) == (1, 1, 1)
    # Learned: b exposes only y_agents, so it is not run for x_events_total again.
    assert render(merged.collect(frozenset({"x_events_total"}))) == got
    assert (a.calls, b.calls, c.calls) == (2, 1, 2)
    assert render(merged.collect(frozenset({"y_agents"}))) == b'# HELP y_agents Help.\n# TYPE y_agents gauge\ny_agents{topic="b"} 7.0\n'
    assert (a.calls, b.calls, c.calls) == (2, 2, 2)
    assert render(merged.collect(frozenset({"nothing_like_it"}))) == b""
    assert (a.calls, b.calls, c.calls) == (2, 2, 2)
    # No filter: everything, as generate_latest() has it.
    assert render(merged.collect()) == generate_latest(MergedRegistry(registry))

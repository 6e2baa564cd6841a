"""Deploy stack end to end: real broker -> real worker -> real Prometheus (Debian's binary) with the
project's rule files -> every recording rule and every dashboard query answered from real data."""
from __future__ import annotations

import re
import sys
import time
from datetime import datetime
from pathlib import Path

import orjson
import pytest

from harness import Metrics, Worker, create_topics, event, one_window, produce, quiet_clock

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy"))
import contract  # noqa: E402
from promserver import PromServer  # noqa: E402

pytestmark = [pytest.mark.broker, pytest.mark.prometheus]


def calls(T: float, tag: str) -> list:
    """Four answered (two within 20 s) and handled, one abandoned after 30 s, one still waiting.
    Answered callers carry a customer id so first-contact resolution has contacts to count."""
    q = dict(queue="sales", channel="voice")
    evs = []
    for i, wait in enumerate((5, 15, 25, 40)):
        evs += [event("offered", f"{tag}{i}", T, customer={"id": f"cust-{tag}{i}"}, **q),
                event("answered", f"{tag}{i}", T + wait, agent_id=f"a{i}", **q),
                event("ended", f"{tag}{i}", T + wait + 20, agent_id=f"a{i}", wrapup_seconds=5, resolved=True, **q)]
    evs += [event("offered", f"{tag}x", T, **q), event("abandoned", f"{tag}x", T + 30, **q),
            event("offered", f"{tag}w", T + 50, **q)]
    return evs


def others(T: float) -> list[tuple[str, bytes, bytes]]:
    """(topic, key, value): agents, tickets (one answered and solved, one still waiting), a survey, and
    one malformed contact event for the rejected counter."""
    def rec(topic: str, key: str, **fields) -> tuple[str, bytes, bytes]:
        return topic, key.encode(), orjson.dumps(fields)

    t = dict(queue="sales", channel="email", priority="high")
    return [
        rec("agent-events", "a0", event_id="s1", type="state", ts=ms(T), agent_id="a0", state="on_contact",
            queues=["sales"]),
        rec("agent-events", "a0", event_id="s2", type="state", ts=ms(T + 60), agent_id="a0", state="available",
            queues=["sales"]),
        rec("ticket-events", "t1", event_id="t1c", type="created", ts=ms(T), ticket_id="t1", **t),
        rec("ticket-events", "t1", event_id="t1m", type="message", ts=ms(T + 40), ticket_id="t1", author_type="agent",
            public=True, agent_id="a1", **t),
        rec("ticket-events", "t1", event_id="t1s", type="solved", ts=ms(T + 80), ticket_id="t1", solved_by="agent", **t),
        rec("ticket-events", "t2", event_id="t2c", type="created", ts=ms(T + 10), ticket_id="t2", **t),
        rec("survey-events", "a0", event_id="v1", type="survey", ts=ms(T + 90), contact_id="a0", csat=5,
            queue="sales", channel="voice"),
        ("contact-events", b"bad", b"{not json"),
    ]


def ms(t: float) -> int:
    return int(round(t * 1000))


def complete(m: Metrics, batches: int) -> bool:
    """The worker has taken in `batches` call batches (15 events, 4 identified callers each) and others()."""
    accepted = {}
    for labels, v in m.series("contactpulse_events_accepted_total").items():
        if v:
            accepted[dict(labels)["topic"]] = accepted.get(dict(labels)["topic"], 0) + v
    records = m.series("contactpulse_customer_contact_records_total").values()
    return (accepted == {"contact-events": 15 * batches, "agent-events": 2, "ticket-events": 4, "survey-events": 1}
            and sum(m.series("contactpulse_events_rejected_total").values()) == 1
            and sum(records) == 8 * batches)  # a start and a handled record per identified caller


def scraped_after(prom, t: float, timeout: float = 60.0) -> float:
    """Wait until Prometheus holds a scrape that began after t; return when it was seen (it is stored by then)."""
    deadline = time.time() + timeout
    while True:
        rows = prom.query('timestamp(up{job="contactpulse"})')
        if rows and float(rows[0]["value"][1]) > t:
            return time.time()
        assert time.time() < deadline, f"no scrape after {t} within {timeout} s"
        time.sleep(0.2)


def evaluated_after(prom, t: float, timeout: float = 60.0) -> None:
    """Wait until every rule group has been evaluated from a start after t."""
    def started(group) -> float:  # RFC 3339 with nanoseconds; microseconds are plenty
        stamp = re.sub(r"(\.\d{6})\d*", r"\1", group["lastEvaluation"]).replace("Z", "+00:00")
        return datetime.fromisoformat(stamp).timestamp()

    deadline = time.time() + timeout
    while not all(started(g) > t for g in prom.rules()):
        assert time.time() < deadline, f"rules not evaluated after {t} within {timeout} s"
        time.sleep(0.2)


def missing_inputs(expr: str, recording: dict[str, str], exported: set[str]) -> set[str]:
    """Raw series the expression needs (through recording rules) that the worker does not export.
    A {__name__=~"a|b"} selector needs only one of its alternatives."""
    out = set()
    for alternatives in re.findall(r'__name__=~"([^"]+)"', expr):
        if not set(alternatives.split("|")) & exported:
            out.add(alternatives)
    for name in contract.names_in_expr(re.sub(r'\{__name__=~"[^"]+"\}', "", expr)):
        if name in recording:
            out |= missing_inputs(recording[name], recording, exported)
        elif name not in exported | contract.BUILTINS:
            out.add(name)
    return out


def test_rules_and_dashboards_on_a_real_worker(worker_factory, tmp_path):
    # An hour interval with "now" >= 15 min from its edges and midnight hours away (quiet_clock): both call
    # batches (120 s and 90 s back) count in one interval and one day, without waiting for a boundary.
    clock = quiet_clock()
    w: Worker = worker_factory(partitions=2, **clock)
    create_topics(w.prefix, 2)
    w.start()
    now = time.time()
    assert one_window(clock, now - 120, now + 300), clock
    produce(w.prefix + "contact-events", calls(now - 120, "a"))
    for topic, key, value in others(now - 100):
        produce(w.prefix + topic, [(key, value, None)])
    w.wait_for(lambda m: complete(m, 1), timeout=60, what="the first call batch and the other events")
    with PromServer(tmp_path, [f"127.0.0.1:{w.port}"]) as prom:
        prom.wait_for('up{job="contactpulse"} == 1', timeout=30)
        # Prometheus holds the first batch before the second comes: the `today` counters then grow, so the
        # increase()-based burn-rate rules have data.
        scraped_after(prom, time.time())
        produce(w.prefix + "contact-events", calls(time.time() - 90, "b"))
        w.wait_for(lambda m: complete(m, 2), timeout=60, what="the second call batch")
        evaluated_after(prom, scraped_after(prom, time.time()))  # every rule has seen everything
        prom.wait_for("queue_channel:contactpulse_service_level_errors:ratio_rate5m", timeout=60)

        exported = {name for (name, _labels) in w.metrics()}
        recording = {r["record"]: r["expr"] for g in contract.rule_groups()["recording.yml"] for r in g["rules"]}
        queries = [(f"rule {name}", name) for name in sorted(recording)]
        queries += [(f"{dash} / {title}", contract.substitute(t["expr"]).replace('"billing"', '"sales"'))
                    for dash, title, t in contract.dashboard_targets() if not t["expr"].startswith("ALERTS")]
        empty, not_exported = [], []
        for what, expr in queries:
            missing = missing_inputs(expr, recording, exported)
            if missing:
                not_exported.append(f"{what}: {sorted(missing)}")
                continue
            if prom.query(expr):
                continue
            # A fresh worker has no final FCR outcome (72 h repeat window): the provisional one must exist.
            if 'status="final"' in expr and prom.query(expr.replace('status="final"', 'status="provisional"')):
                continue
            empty.append(f"{what}: {expr}")
        bad = {r["name"]: r.get("lastError") for g in prom.rules() for r in g["rules"] if r["health"] != "ok"}

        sl = prom.query('queue_window:contactpulse_service_level:ratio{queue="sales",window="interval",threshold="20"}')

    assert bad == {}
    assert empty == [], "\n".join(empty)
    # 2 x (2 of 5 within 20 s; the abandon after 30 s counts against SL): 4 / 10.
    assert [float(r["value"][1]) for r in sl] == [0.4]
    # The events above reach every collector: a series missing here is a renamed or dropped metric.
    assert not_exported == [], "\n".join(not_exported)

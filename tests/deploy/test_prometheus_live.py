"""A real Prometheus with the project's rules scraping a fake worker that serves every series of
docs/metric-names.md: every recording rule and every dashboard query must return data, and no rule may
fail to evaluate (e.g. many-to-many matching once `instance`/`job` labels are attached)."""
from __future__ import annotations

import pytest

import contract
from promserver import PromServer

pytestmark = pytest.mark.prometheus


@pytest.fixture(scope="module")
def prom(tmp_path_factory):
    with contract.FakeWorker() as fake, PromServer(tmp_path_factory.mktemp("prom"), [fake.address]) as server:
        # increase() over the growing `today` counts needs two scrapes; wait for the last group's output.
        server.wait_for("queue_channel:contactpulse_service_level_errors:ratio_rate5m", timeout=30)
        server.wait_for("queue_window:contactpulse_agent_occupancy:ratio", timeout=30)
        yield server


def test_every_rule_evaluates_without_error(prom):
    rules = [r for g in prom.rules() for r in g["rules"]]
    assert len(rules) == 65
    bad = {r.get("name"): r.get("lastError") for r in rules if r["health"] != "ok"}
    assert bad == {}


@pytest.mark.parametrize("record", sorted(contract.recorded_names()))
def test_recording_rule_has_data(prom, record):
    assert prom.wait_for(record, timeout=10)


def test_dashboard_queries_have_data(prom):
    empty = []
    for dash, title, t in contract.dashboard_targets():
        if t["expr"].startswith("ALERTS"):
            continue  # data only while an alert fires
        if not prom.query(contract.substitute(t["expr"])):
            empty.append(f"{dash} / {title}: {t['expr']}")
    assert empty == []


def test_interval_service_level_is_the_ratio_of_summed_counts(prom):
    # Fake worker: numerator 16, denominator 20 -> 0.8 exactly, target 0.8.
    rows = prom.query('queue_window:contactpulse_service_level:ratio{window="interval"}')
    assert [(r["metric"], r["value"][1]) for r in rows] == [
        ({"__name__": "queue_window:contactpulse_service_level:ratio", "queue": "billing", "threshold": "20",
          "window": "interval"}, "0.8")]
    # Exactly at target: the page must not be pending or firing.
    assert prom.query('ALERTS{alertname="ServiceLevelBelowTarget"}') == []

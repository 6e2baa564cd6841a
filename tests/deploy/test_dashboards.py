"""Grafana: generated dashboards are up to date, every query parses and uses only known series."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

import contract
from promserver import ROOT, require_binary

GRAFANA = ROOT / "deploy" / "grafana"


def load(name: str) -> dict:
    return json.loads((GRAFANA / "dashboards" / name).read_text())


def test_dashboard_json_is_what_the_script_generates():
    out = subprocess.run([sys.executable, str(GRAFANA / "build_dashboards.py"), "--check"], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr


def test_exactly_the_two_dashboards():
    assert sorted(p.name for p in (GRAFANA / "dashboards").glob("*.json")) == ["operations.json", "wallboard.json"]
    assert {load(n)["uid"] for n in ("operations.json", "wallboard.json")} == {
        "contactpulse-wallboard", "contactpulse-operations"}


@pytest.mark.prometheus
def test_every_query_parses_as_promql(tmp_path):
    """promtool parses each query (Grafana variables filled in) as a recording rule expression."""
    targets = contract.dashboard_targets()
    rules = [{"record": f"dashboard:query_{i}:check", "expr": contract.substitute(t["expr"])}
             for i, (_, _, t) in enumerate(targets)]
    (tmp_path / "dash.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    out = subprocess.run([require_binary("promtool", "prometheus"), "check", "rules", "dash.yml"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(rules)} rules found" in out.stdout


def test_queries_use_recording_rules_or_documented_series():
    allowed = set(contract.documented_metrics()) | contract.recorded_names() | contract.BUILTINS
    recorded = contract.recorded_names()
    for dash, title, t in contract.dashboard_targets():
        names = contract.names_in_expr(t["expr"])
        assert names and names <= allowed, f"{dash} / {title}: {names - allowed}"
        # KPI panels read the cluster-wide recording rules, never a worker's own ratio.
        assert not names & {"contactpulse_service_level_ratio", "contactpulse_asa_seconds",
                            "contactpulse_abandon_ratio"}, f"{dash} / {title}"
        if dash == "wallboard.json":
            assert names <= recorded, f"{title} reads raw series: {names - recorded}"
    for dash in ("wallboard.json", "operations.json"):
        for var in load(dash)["templating"]["list"]:
            if var["type"] == "query":
                metric = var["definition"].split("(", 1)[1].split(",")[0]
                assert metric in recorded, var["name"]


def test_panels_have_unique_ids_and_use_the_datasource_variable():
    for dash in ("wallboard.json", "operations.json"):
        panels = load(dash)["panels"]
        assert len({p["id"] for p in panels}) == len(panels)
        for p in panels:
            if p["type"] != "row":
                assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
                assert all(t["datasource"] == p["datasource"] for t in p["targets"])
                assert len({t["refId"] for t in p["targets"]}) == len(p["targets"]), p["title"]


def test_wallboard_repeats_a_row_of_big_stats_per_queue():
    d = load("wallboard.json")
    panels = d["panels"]
    assert panels[0]["type"] == "row" and panels[0]["repeat"] == "queue" and panels[0]["title"] == "$queue"
    assert [(p["type"], p["title"]) for p in panels[1:]] == [
        ("stat", "Service level (interval)"), ("stat", "Waiting now"), ("stat", "Oldest waiting"),
        ("stat", "ASA (interval)"), ("stat", "Abandoned (interval)"), ("stat", "Agents available")]
    assert sum(p["gridPos"]["w"] for p in panels[1:]) == 24  # one full-width line per queue
    queue_var = next(v for v in d["templating"]["list"] if v["name"] == "queue")
    assert queue_var["multi"] and queue_var["includeAll"]
    assert d["refresh"] == "10s"


def test_wallboard_colours_against_each_queues_own_target():
    """SL: red below the queue's target, green from it. The stat's max comes from query B (the target),
    and percentage thresholds put green at 100% of max."""
    expected = {
        "Service level (interval)": ("queue_threshold:contactpulse_service_level_target:ratio", "target",
                                     [("red", None), ("green", 100)]),
        "Oldest waiting": ("queue:contactpulse_alert_max_oldest_waiting:seconds", "limit",
                           [("green", None), ("orange", 50), ("red", 100)]),
        "Abandoned (interval)": ("queue:contactpulse_alert_max_abandon:ratio", "limit",
                                 [("green", None), ("orange", 50), ("red", 100)]),
    }
    for p in load("wallboard.json")["panels"]:
        if p["title"] not in expected:
            continue
        metric, field, steps = expected[p["title"]]
        a, b = p["targets"]
        assert (a["refId"], b["refId"]) == ("A", "B")
        assert b["expr"].startswith(metric + "{") and b["legendFormat"] == field
        (tr,) = p["transformations"]
        assert tr["id"] == "configFromData"
        assert tr["options"]["configRefId"] == "B"
        assert tr["options"]["applyTo"] == {"id": "byFrameRefID", "options": "A"}
        assert tr["options"]["mappings"] == [{"fieldName": field, "handlerKey": "max", "reducerId": "lastNotNull"}]
        defaults = p["fieldConfig"]["defaults"]
        assert defaults["min"] == 0
        assert defaults["thresholds"]["mode"] == "percentage"
        assert [(s["color"], s["value"]) for s in defaults["thresholds"]["steps"]] == steps


def test_operations_has_every_required_panel():
    titles = [p["title"] for p in load("operations.json")["panels"]]
    for required in ("Service level by queue", "Service level by channel", "Error-budget burn rate",
                     "Speed of answer", "Abandonment", "First response time", "Awaiting first response",
                     "First contact resolution", "CSAT", "Average handle time", "Agents by state", "Occupancy",
                     "Workers up", "Consumer lag", "Events per second", "Firing alerts"):
        assert required in titles
    frt = next(p for p in load("operations.json")["panels"] if p["title"] == "First response time")
    assert [t["expr"].split("{")[0] for t in frt["targets"]] == [
        "queue_window:contactpulse_tickets_first_response_seconds:mean",
        "queue_window:contactpulse_tickets_first_response_seconds:p50",
        "queue_window:contactpulse_tickets_first_response_seconds:p90"]
    fcr = next(p for p in load("operations.json")["panels"] if p["title"] == "First contact resolution")
    assert [t["legendFormat"].split()[0] for t in fcr["targets"]] == ["final", "provisional", "agent-marked", "floor"]


def test_provisioning_points_at_the_dashboards_and_the_datasource_uid():
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (source,) = ds["datasources"]
    assert (source["type"], source["uid"], source["url"]) == ("prometheus", "prometheus", "http://prometheus:9090")
    for dash in ("wallboard.json", "operations.json"):
        var = load(dash)["templating"]["list"][0]
        assert (var["type"], var["current"]["value"]) == ("datasource", source["uid"])
    prov = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "contactpulse.yml").read_text())
    (provider,) = prov["providers"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in mounts
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in mounts

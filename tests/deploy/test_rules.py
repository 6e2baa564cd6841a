"""Prometheus side of the deploy stack: rule files, their promtool unit tests, prometheus.yml.

Needs Debian's promtool (package `prometheus`); a missing binary fails the test with that hint.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

import contract
from promserver import ROOT, require_binary

pytestmark = pytest.mark.prometheus

PROM = ROOT / "deploy" / "prometheus"
RULES = PROM / "rules"
UNIT_TESTS = sorted((PROM / "tests").glob("*_test.yml"))
RUNBOOK = ROOT / "docs" / "runbook.md"


def promtool(*args: str, cwd: Path = PROM) -> subprocess.CompletedProcess:
    return subprocess.run([require_binary("promtool", "prometheus"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def github_anchor(heading: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


# --- syntax -------------------------------------------------------------------------------------------

def test_promtool_check_rules_reads_every_rule():
    groups = contract.rule_groups()
    out = promtool("check", "rules", "rules/recording.yml", "rules/alerts.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    n_rec = sum(len(g["rules"]) for g in groups["recording.yml"])
    n_alert = sum(len(g["rules"]) for g in groups["alerts.yml"])
    assert (n_rec, n_alert) == (53, 12)  # update when adding rules: catches a file that silently lost some
    assert f"SUCCESS: {n_rec} rules found" in out.stdout
    assert f"SUCCESS: {n_alert} rules found" in out.stdout


def test_promtool_check_config_local_and_compose(tmp_path):
    out = promtool("check", "config", "prometheus.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 2 rule files found" in out.stdout
    # The compose variant: the same prometheus.yml with targets-compose/ mounted over targets/.
    shutil.copytree(PROM, tmp_path / "p", ignore=shutil.ignore_patterns("targets"))
    shutil.copytree(PROM / "targets-compose", tmp_path / "p" / "targets")
    out = promtool("check", "config", "prometheus.yml", cwd=tmp_path / "p")
    assert out.returncode == 0, out.stdout + out.stderr


def test_scrape_targets_local_and_compose():
    def targets(d: str, f: str) -> list[str]:
        return [t for entry in yaml.safe_load((PROM / d / f).read_text()) for t in entry["targets"]]

    assert targets("targets", "workers.yml") == ["127.0.0.1:6066"]
    assert targets("targets", "alertmanagers.yml") == ["127.0.0.1:9093"]
    assert targets("targets-compose", "workers.yml") == ["worker:6066"]
    assert targets("targets-compose", "alertmanagers.yml") == ["alertmanager:9093"]
    cfg = yaml.safe_load((PROM / "prometheus.yml").read_text())
    assert [j["job_name"] for j in cfg["scrape_configs"]] == ["contactpulse"]  # alerts match job="contactpulse"
    assert cfg["rule_files"] == ["rules/recording.yml", "rules/alerts.yml"]


# --- unit tests -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("test_file", UNIT_TESTS, ids=lambda p: p.name)
def test_promtool_unit_tests_pass(test_file):
    out = promtool("test", "rules", str(test_file.relative_to(PROM)))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_unit_test_files_are_the_expected_ones():
    assert [p.name for p in UNIT_TESTS] == ["alerts_monitor_test.yml", "alerts_queues_test.yml",
                                            "recording_test.yml"]


def _unit_tests() -> list[dict]:
    return [t for p in UNIT_TESTS for t in yaml.safe_load(p.read_text())["tests"]]


def test_every_alert_has_a_firing_case_and_a_quiet_case():
    """Each alert fires in some unit test; the quiet cases (low volume, exactly at the threshold) are other
    queues/instances in the same input, so an exact expected alert list proves they stayed quiet."""
    firing, quiet = set(), set()
    for t in _unit_tests():
        for a in t.get("alert_rule_test", []):
            (firing if a["exp_alerts"] else quiet).add(a["alertname"])
    names = {r["alert"] for r in contract.alert_rules()}
    assert firing == names
    # An explicit "nothing yet" check (before `for:` elapses, or after the cause is gone) for all but
    # ScrapeFailing (no `for:`; its quiet cases are w2 at exactly 90% and w3 at 0%) and the burn rate
    # (its quiet cases are queues inside the same evaluation: sales, support, claims).
    assert quiet == names - {"ContactpulseScrapeFailing", "ServiceLevelBudgetBurn"}


def test_every_recording_rule_has_an_exact_value_test():
    tested = set()
    for t in _unit_tests():
        for e in t.get("promql_expr_test", []):
            tested |= contract.names_in_expr(e["expr"])
    assert contract.recorded_names() - tested == set()


# --- conventions ----------------------------------------------------------------------------------------

def test_recording_rule_names_follow_level_metric_operation():
    for name in contract.recorded_names():
        level, metric, op = name.split(":")
        assert level and op and metric.startswith("contactpulse_"), name


def test_rules_reference_only_documented_metrics():
    allowed = set(contract.documented_metrics()) | contract.recorded_names() | contract.BUILTINS
    for groups in contract.rule_groups().values():
        for g in groups:
            for r in g["rules"]:
                unknown = contract.names_in_expr(r["expr"]) - allowed
                assert not unknown, f"{r.get('record') or r.get('alert')} uses {unknown}: not in docs/metric-names.md"


def test_alert_labels_and_annotations():
    headings = [line.lstrip("#").strip() for line in RUNBOOK.read_text().splitlines() if line.startswith("## ")]
    anchors = {github_anchor(h) for h in headings}
    for r in contract.alert_rules():
        assert r["labels"]["severity"] in {"page", "ticket"}, r["alert"]
        ann = r["annotations"]
        assert set(ann) == {"summary", "description", "runbook_url"}, r["alert"]
        assert ann["runbook_url"] == f"docs/runbook.md#{r['alert'].lower()}"
        assert r["alert"].lower() in anchors, f"docs/runbook.md has no section '## {r['alert']}'"
        if "queue" in r["expr"] and not r["alert"].startswith("Contactpulse"):
            assert "$labels.queue" in ann["summary"] and "$value" in ann["summary"], r["alert"]


def test_ratio_alerts_compare_strictly_and_guard_volume():
    """At exactly the target nothing fires (< / >), and ratio alerts need the minimum volume (>=)."""
    by_name = {}
    for r in contract.alert_rules():
        by_name.setdefault(r["alert"], []).append(r["expr"])
    for name in ("ServiceLevelBelowTarget", "AbandonRateHigh", "FirstContactResolutionLow", "ServiceLevelBudgetBurn"):
        for expr in by_name[name]:
            assert "<=" not in expr.replace(">=", ""), name
            assert ">= on (queue) group_left ()\n" in expr and "queue:contactpulse_alert_min_volume:count" in expr, name


# --- thresholds as series: the documented override syntax works ------------------------------------------

OVERRIDE_TEST = """
rule_files: [recording.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'contactpulse_contacts_offered{queue="vip",channel="voice",window="interval"}'
        values: '1x2'
      - series: 'contactpulse_contacts_offered{queue="billing",channel="voice",window="interval"}'
        values: '1x2'
    promql_expr_test:
      - expr: queue:contactpulse_alert_min_volume:count
        eval_time: 1m
        exp_samples:
          - labels: 'queue:contactpulse_alert_min_volume:count{queue="vip"}'
            value: 5
          - labels: 'queue:contactpulse_alert_min_volume:count{queue="billing"}'
            value: 10
"""


def test_per_queue_threshold_override_as_documented(tmp_path):
    text = (RULES / "recording.yml").read_text()
    default = "expr: 10 * queue:contactpulse_queues:present"
    assert text.count(default) == 1
    # Exactly the form given in the comment at the top of the thresholds group.
    override = ('expr: |\n          label_replace(vector(5), "queue", "vip", "", "")\n          or\n'
                '          10 * queue:contactpulse_queues:present')
    assert 'label_replace(vector(5), "queue", "vip", "", "")' in text
    (tmp_path / "recording.yml").write_text(text.replace(default, override))
    (tmp_path / "override_test.yml").write_text(OVERRIDE_TEST)
    out = promtool("test", "rules", "override_test.yml", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr


# --- the unit tests can fail: break a rule on purpose, the right test must notice ---------------------------

MUTATIONS = [
    # (file, original, broken, the failure promtool must report)
    ("alerts.yml", "              < on (queue, threshold) group_left ()",
     "              <= on (queue, threshold) group_left ()", "alertname: ServiceLevelBelowTarget"),
    ("alerts.yml", "          or\n          absent(up{job=\"contactpulse\"})", "",
     "alertname: ContactpulseWorkerDown"),
    ("alerts.yml", "              > on (queue) group_left ()\n            queue:contactpulse_alert_max_abandon:ratio",
     "              >= on (queue) group_left ()\n            queue:contactpulse_alert_max_abandon:ratio",
     "alertname: AbandonRateHigh"),
    ("alerts.yml", "            > 2\n", "            >= 2\n", "alertname: ServiceLevelBudgetBurn"),
    ("recording.yml", "expr: max by (queue) (contactpulse_oldest_waiting_age_seconds)",
     "expr: sum by (queue) (contactpulse_oldest_waiting_age_seconds)",
     'expr: "queue:contactpulse_oldest_waiting_age_seconds:max"'),
    # The tempting wrong way: average the workers' own ratios.
    ("recording.yml",
     "sum by (queue, channel, window, threshold) (contactpulse_contacts_sl_numerator)\n"
     "            / on (queue, channel, window) group_left ()\n"
     "          (sum by (queue, channel, window) (contactpulse_contacts_sl_denominator) > 0)",
     "avg by (queue, channel, window, threshold) (contactpulse_service_level_ratio)",
     'expr: "queue_channel_window:contactpulse_service_level:ratio"'),
]


@pytest.mark.parametrize("file,original,broken,reported", MUTATIONS,
                         ids=["sl-at-target", "no-absent", "abandon-at-limit", "burn-at-factor", "oldest-summed",
                              "averaged-ratios"])
def test_unit_tests_catch_a_broken_rule(tmp_path, file, original, broken, reported):
    work = tmp_path / "p"
    shutil.copytree(PROM, work, ignore=shutil.ignore_patterns("targets*"))
    text = (work / "rules" / file).read_text()
    assert original in text
    (work / "rules" / file).write_text(text.replace(original, broken))
    out = promtool("test", "rules", *[f"tests/{p.name}" for p in UNIT_TESTS], cwd=work)
    assert out.returncode == 1
    assert reported in out.stderr, out.stdout + out.stderr  # promtool prints failures on stderr

"""Alertmanager routing and inhibition: amtool offline, then a real prometheus-alertmanager process."""
from __future__ import annotations

import json
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

import contract
from promserver import ROOT, AlertmanagerServer, require_binary

pytestmark = pytest.mark.prometheus

CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"


def amtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([require_binary("amtool", "prometheus-alertmanager"), *args], capture_output=True,
                          text=True, timeout=60)


def receiver_for(*labels: str) -> str:
    out = amtool("config", "routes", "test", f"--config.file={CONFIG}", *labels)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout.strip()


def test_amtool_check_config():
    out = amtool("check-config", str(CONFIG))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout
    assert " - 2 inhibit rules\n - 2 receivers\n" in out.stdout


def test_routes_page_to_pager_and_ticket_to_ticket():
    assert receiver_for("alertname=ServiceLevelBelowTarget", "severity=page", "queue=billing") == "pager"
    assert receiver_for("alertname=AbandonRateHigh", "severity=ticket", "queue=billing") == "ticket"
    # Anything without a known severity still reaches a human: the default receiver.
    assert receiver_for("alertname=Watchdog") == "ticket"


def test_routes_verify_fails_on_the_wrong_receiver():
    out = amtool("config", "routes", "test", f"--config.file={CONFIG}", "--verify.receivers=pager",
                 "severity=ticket")
    assert out.returncode == 1


def test_every_alert_rule_routes_by_its_severity():
    for rule in contract.alert_rules():
        severity = rule["labels"]["severity"]
        assert receiver_for(f"alertname={rule['alert']}", f"severity={severity}") == \
            {"page": "pager", "ticket": "ticket"}[severity], rule["alert"]


class _Webhooks:
    """Collects Alertmanager webhook posts per path (/pager, /ticket) on a free local port."""

    def __init__(self):
        self.received: dict[str, list[dict]] = {}
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server API)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                hooks.received.setdefault(self.path, []).append(body)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _alert(**labels) -> dict:
    return {"labels": labels, "annotations": {"summary": labels["alertname"]}}


def test_live_routing_and_inhibition(tmp_path):
    """The real config, with only the webhook URLs pointed at this test and the group waits shortened."""
    hooks = _Webhooks()
    cfg = yaml.safe_load(CONFIG.read_text())
    for receiver in cfg["receivers"]:
        for hook in receiver["webhook_configs"]:
            assert hook["url"].startswith("http://127.0.0.1:9095/")
            hook["url"] = hooks.url + "/" + receiver["name"]
    cfg["route"]["group_wait"] = "1s"
    for route in cfg["route"]["routes"]:
        route["group_wait"] = "1s"
    (tmp_path / "am.yml").write_text(yaml.safe_dump(cfg))
    try:
        with AlertmanagerServer(tmp_path, tmp_path / "am.yml") as am:
            am.post_alerts([
                _alert(alertname="ServiceLevelBelowTarget", severity="page", queue="billing", channel="voice"),
                _alert(alertname="AbandonRateHigh", severity="ticket", queue="billing", channel="voice"),
                _alert(alertname="AbandonRateHigh", severity="ticket", queue="sales", channel="voice"),
                _alert(alertname="ContactpulseWorkerDown", severity="page", job="contactpulse", instance="w1"),
                _alert(alertname="ContactpulseScrapeFailing", severity="ticket", job="contactpulse", instance="w1"),
                _alert(alertname="ContactpulseScrapeFailing", severity="ticket", job="contactpulse", instance="w2"),
                # No queue label: the page-by-queue inhibition must not swallow the monitor's tickets.
                _alert(alertname="ContactpulseEventsRejected", severity="ticket", topic="contact-events",
                       reason="malformed_json"),
            ])
            deadline = time.time() + 20
            while time.time() < deadline and sum(len(v) for v in hooks.received.values()) < 5:
                time.sleep(0.2)
            state = {
                (a["labels"]["alertname"], a["labels"].get("queue") or a["labels"].get("instance", "")):
                    a["status"]["state"]
                for a in am.alerts()
            }
    finally:
        hooks.close()

    assert state == {
        ("ServiceLevelBelowTarget", "billing"): "active",
        ("AbandonRateHigh", "billing"): "suppressed",  # same queue is paging
        ("AbandonRateHigh", "sales"): "active",
        ("ContactpulseWorkerDown", "w1"): "active",
        ("ContactpulseScrapeFailing", "w1"): "suppressed",  # its worker is down
        ("ContactpulseScrapeFailing", "w2"): "active",
        ("ContactpulseEventsRejected", ""): "active",
    }

    def groups(path: str) -> list[tuple]:
        return sorted(tuple(sorted(n["groupLabels"].items())) for n in hooks.received.get(path, []))

    assert groups("/pager") == [
        (("alertname", "ContactpulseWorkerDown"),),
        (("alertname", "ServiceLevelBelowTarget"), ("queue", "billing")),
    ]
    assert groups("/ticket") == [
        (("alertname", "AbandonRateHigh"), ("queue", "sales")),
        (("alertname", "ContactpulseEventsRejected"),),
        (("alertname", "ContactpulseScrapeFailing"),),
    ]
    scrape = [n for n in hooks.received["/ticket"] if n["groupLabels"]["alertname"] == "ContactpulseScrapeFailing"]
    assert [a["labels"]["instance"] for a in scrape[0]["alerts"]] == ["w2"]

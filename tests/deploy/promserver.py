"""Real Prometheus and Alertmanager processes (Debian's binaries) on free 127.0.0.1 ports, for tests.

    with PromServer(tmp_path, targets=["127.0.0.1:6066"], rule_files=RULE_FILES) as prom:
        prom.wait_for('up{job="contactpulse"} == 1')
        rows = prom.query("queue_window:contactpulse_service_level:ratio")

Both stop their process (and only it) on exit and keep its log in the work directory for failures.
"""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
PROM_DIR = ROOT / "deploy" / "prometheus"
RULE_FILES = [PROM_DIR / "rules" / "recording.yml", PROM_DIR / "rules" / "alerts.yml"]


def require_binary(name: str, package: str) -> str:
    """Path of a Debian tool; a clear failure (not a skip) when it is missing: CI installs it."""
    path = shutil.which(name)
    if path is None:
        import pytest

        pytest.fail(f"`{name}` is not on PATH: install Debian's `{package}` package "
                    f"(apt-get install -y {package}); the deploy tests need the real binary.")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(url: str, data: bytes | None = None, timeout: float = 5.0, method: str | None = None):
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"} if data is not None else {})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        body = resp.read()
    return json.loads(body) if body else None


class _Server:
    binary: str = ""
    package: str = ""

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.workdir / f"{self.binary}.log"
        self.proc: subprocess.Popen | None = None

    def args(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout: float = 30.0):
        exe = require_binary(self.binary, self.package)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([exe, *self.args()], stdout=self._log, stderr=subprocess.STDOUT,
                                     cwd=self.workdir)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.binary} exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1.0) as resp:
                    if resp.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"{self.binary} not ready within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class PromServer(_Server):
    """Prometheus scraping `targets` as job "contactpulse" with the project's rule files."""

    binary = "prometheus"
    package = "prometheus"

    def __init__(self, workdir: Path, targets: list[str], rule_files: list[Path] = RULE_FILES,
                 scrape_interval: str = "1s", evaluation_interval: str = "1s",
                 metrics_path: str = "/metrics"):
        super().__init__(workdir)
        config = {
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": evaluation_interval},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [{"job_name": "contactpulse", "metrics_path": metrics_path,
                                "static_configs": [{"targets": list(targets)}]}],
        }
        self.config_path = self.workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def args(self) -> list[str]:
        return [f"--config.file={self.config_path}", f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"]

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        """Instant query; raises on a PromQL error (with Prometheus' message)."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}"
        try:
            body = http_json(url)
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"query failed: {expr}\n{exc.read().decode(errors='replace')}") from None
        assert body["status"] == "success", body
        return body["data"]["result"]

    def wait_for(self, expr: str, timeout: float = 30.0) -> list[dict]:
        """Poll until the query returns at least one series."""
        deadline = time.time() + timeout
        while True:
            rows = self.query(expr)
            if rows:
                return rows
            if time.time() > deadline:
                raise AssertionError(f"no data for {expr!r} within {timeout} s")
            time.sleep(0.5)

    def rules(self) -> list[dict]:
        return http_json(f"{self.url}/api/v1/rules")["data"]["groups"]


class AlertmanagerServer(_Server):
    """Alertmanager with a given config file, gossip off (a single instance)."""

    binary = "prometheus-alertmanager"
    package = "prometheus-alertmanager"

    def __init__(self, workdir: Path, config_path: Path):
        super().__init__(workdir)
        self.config_path = Path(config_path)

    def args(self) -> list[str]:
        return [f"--config.file={self.config_path}", f"--storage.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address=",
                "--log.level=warn"]

    def post_alerts(self, alerts: list[dict]) -> None:
        http_json(f"{self.url}/api/v2/alerts", data=json.dumps(alerts).encode(), method="POST")

    def alerts(self) -> list[dict]:
        return http_json(f"{self.url}/api/v2/alerts")

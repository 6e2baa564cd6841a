"""docker-compose.yml: `docker compose config` (needs no engine) and the settings the stack relies on."""
from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from promserver import ROOT

COMPOSE = ROOT / "docker-compose.yml"


def compose_command() -> list[str] | None:
    """`docker compose` (v2 plugin) if the docker client has it, else the standalone `docker-compose`."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_docker_compose_config_validates():
    cmd = compose_command()
    if cmd is None:
        pytest.skip("no `docker compose` plugin and no `docker-compose` binary: cannot validate the file "
                    "(apt-get install docker-compose)")
    out = subprocess.run([*cmd, "-f", str(COMPOSE), "config"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    resolved = yaml.safe_load(out.stdout)
    assert sorted(resolved["services"]) == ["alertmanager", "grafana", "kafka", "prometheus", "simulator",
                                            "topics", "worker"]


def test_stack_settings():
    s = yaml.safe_load(COMPOSE.read_text())["services"]
    assert s["kafka"]["image"] == "apache/kafka:3.9.1"
    assert s["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, one node
    for name in ("topics", "worker", "simulator"):
        assert s[name]["build"] == "."
        assert s[name]["environment"]["CONTACTPULSE_BROKER"] == "kafka://kafka:9092"
    assert s["worker"]["environment"]["CONTACTPULSE_WEB_HOST"] == "0.0.0.0"
    assert s["worker"]["command"] == ["worker"]
    assert s["simulator"]["command"] == ["simulate", "--rate", "5"]
    assert s["topics"]["command"] == ["topics"]
    assert s["worker"]["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    assert "./deploy/prometheus/targets-compose:/etc/prometheus/targets:ro" in s["prometheus"]["volumes"]
    assert "./deploy/alertmanager:/etc/alertmanager:ro" in s["alertmanager"]["volumes"]
    # Every published port is on the host's loopback only.
    for name, svc in s.items():
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)


def test_dockerfile():
    lines = [l.strip() for l in (ROOT / "Dockerfile").read_text().splitlines() if l.strip() and not l.startswith("#")]
    assert lines[0] == "FROM python:3.11-slim"
    assert "RUN pip install . \\" in lines
    assert 'ENTRYPOINT ["contactpulse"]' in lines and 'CMD ["worker"]' in lines
    assert "USER contactpulse" in lines

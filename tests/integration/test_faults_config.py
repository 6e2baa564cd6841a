"""Issue 6: bad configuration stops `contactpulse worker` at start-up with exit code 2 and one clear
message listing every problem -- never a traceback; an unreachable broker is one clear line too."""
import os
import subprocess
import sys

import pytest

from harness import ROOT


def worker(env: dict, timeout: float = 60) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CONTACTPULSE_")}
    return subprocess.run([sys.executable, "-m", "streams.cli", "worker"], cwd=ROOT, env={**clean, **env},
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("env, expected", [
    ({"CONTACTPULSE_BROKER": "http//kafka-1"},
     ["broker: 'http//kafka-1' is not a broker URL like kafka://127.0.0.1:9092"]),
    ({"CONTACTPULSE_BROKER": "https://kafka-1:9092"},
     ["broker: 'https://kafka-1:9092' is not a broker URL like kafka://127.0.0.1:9092"]),
    ({"CONTACTPULSE_BROKER": "kafka://kafka-1"}, ["broker: 'kafka://kafka-1' needs a port, e.g. kafka://kafka-1:9092"]),
    ({"CONTACTPULSE_TARGETS": "20:1.5"}, ["targets: target ratio must be in (0, 1], got 1.5 (write 0.8 for 80%)"]),
    ({"CONTACTPULSE_TARGETS": "20=80%"}, ["targets: '20=80%' should look like SECONDS:RATIO, e.g. 20:0.8"]),
    ({"CONTACTPULSE_TIMEZONE": "Mars/Olympus"},
     ["timezone: unknown time zone 'Mars/Olympus' (use an IANA name like Europe/Riga)"]),
    ({"CONTACTPULSE_INTERVAL_SECONDS": "fifteen"}, ["interval_seconds: expected a whole number, got 'fifteen'"]),
    ({"CONTACTPULSE_WEB_TLS_CERT": "/nonexistent/cert.pem", "CONTACTPULSE_WEB_TLS_KEY": "/nonexistent/key.pem"},
     ["web_tls_cert/web_tls_key: cannot load the certificate and key: [Errno 2] No such file or directory"]),
    ({"CONTACTPULSE_WEB_BASIC_AUTH": "just-a-password"}, ["web_basic_auth: expected user:password"]),
    # Everything at once: one message, every problem on its own line.
    ({"CONTACTPULSE_BROKER": "kafka://kafka-1", "CONTACTPULSE_TARGETS": "20:0", "CONTACTPULSE_TIMEZONE": "Nowhere"},
     ["broker: 'kafka://kafka-1' needs a port, e.g. kafka://kafka-1:9092",
      "targets: target ratio must be in (0, 1], got 0.0 (write 0.8 for 80%)",
      "timezone: unknown time zone 'Nowhere' (use an IANA name like Europe/Riga)"]),
])
def test_bad_setting_stops_the_worker_with_a_clear_message(env, expected):
    r = worker(env)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert lines[0] == "contactpulse: invalid configuration:"
    assert sorted(lines[1:]) == sorted(f"  - {e}" for e in expected)


def test_unreachable_broker_is_one_clear_message():
    # Nothing listens on port 1. The worker tries for 30 s (a broker that is still starting gets time).
    # The identity secret is left at the shipped default, which is worth a warning first.
    r = worker({"CONTACTPULSE_BROKER": "kafka://127.0.0.1:1"}, timeout=90)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    warning, *lines = r.stderr.strip().splitlines()
    assert warning.startswith("contactpulse: warning: identity_secret is the shipped default; "
                              "set CONTACTPULSE_IDENTITY_SECRET")
    assert len(lines) == 2
    assert lines[0].startswith("contactpulse: cannot set up the topics on Kafka at 127.0.0.1:1: ")
    assert "Unable to bootstrap" in lines[0]
    assert "CONTACTPULSE_BROKER" in lines[1]

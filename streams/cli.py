"""`contactpulse` command line: worker, simulate, up (embedded default), topics, replay, ingest."""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BROKER_SCRIPT = ROOT / "deploy" / "kafka" / "broker.sh"


def _settings():
    from streams.config import ConfigError, load_settings

    try:
        return load_settings()
    except ConfigError as exc:
        print(f"contactpulse: {exc}", file=sys.stderr)
        raise SystemExit(2)


def _ensure_topics(s) -> list[str]:
    """Create the topics, or stop with one clear line (no traceback) when Kafka cannot be reached."""
    from streams.topics import ensure_topics

    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # one line per failed connection attempt says nothing new
    try:
        return asyncio.run(ensure_topics(s.bootstrap_servers, s.partitions, s.topic_prefix, s.replication))
    except Exception as exc:  # KafkaConnectionError, timeouts, wrong partition counts, ...
        print(f"contactpulse: cannot set up the topics on Kafka at {s.bootstrap_servers}: {exc}\n"
              f"  check that the broker is running and the `broker` setting (CONTACTPULSE_BROKER) points to it",
              file=sys.stderr)
        raise SystemExit(1)
    finally:
        quiet.setLevel(level)


def cmd_topics(argv: list[str]) -> int:
    s = _settings()
    created = _ensure_topics(s)
    print(f"topics ready ({s.partitions} partitions); created: {', '.join(created) or 'none'}")
    return 0


def cmd_worker(argv: list[str]) -> int:
    from streams.config import DEFAULT_IDENTITY_SECRET

    s = _settings()
    if s.identity_secret == DEFAULT_IDENTITY_SECRET:
        print("contactpulse: warning: identity_secret is the shipped default; set CONTACTPULSE_IDENTITY_SECRET "
              "to a secret of your own before real customer data arrives (changing it later forgets every "
              "customer's history)", file=sys.stderr)
    _ensure_topics(s)
    from streams.app import app

    sys.argv = ["contactpulse", "worker", "--loglevel", os.environ.get("CONTACTPULSE_LOGLEVEL", "warn"), *argv]
    app.main()
    return 0


def cmd_up(argv: list[str]) -> int:
    """The embedded default: local broker + worker + simulator, until Ctrl-C."""
    ap = argparse.ArgumentParser(prog="contactpulse up")
    ap.add_argument("--rate", default="2")
    ap.add_argument("--agents", default="40")
    args = ap.parse_args(argv)
    s = _settings()
    subprocess.run([str(BROKER_SCRIPT), "start"], check=True)
    env = dict(os.environ)
    exe = [sys.executable, "-m", "streams.cli"]
    worker = subprocess.Popen([*exe, "worker"], env=env, cwd=ROOT)
    time.sleep(3)
    sim = subprocess.Popen([*exe, "simulate", "--rate", args.rate, "--agents", args.agents], env=env, cwd=ROOT)
    print(f"\ncontactpulse is running: metrics at http://{s.web_host}:{s.web_port}/metrics "
          f"(wallboard: http://{s.web_host}:{s.web_port}/wallboard). Ctrl-C stops it.\n", flush=True)
    try:
        while worker.poll() is None and sim.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        for proc in (sim, worker):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in (sim, worker):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0


def _lazy(module: str):
    def run(argv: list[str]) -> int:
        import importlib

        return importlib.import_module(module).main(argv) or 0
    return run


COMMANDS = {
    "worker": cmd_worker,
    "simulate": _lazy("streams.simulator"),
    "up": cmd_up,
    "topics": cmd_topics,
    "replay": _lazy("streams.replay"),
    "ingest": _lazy("streams.ingest"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print("usage: contactpulse {" + "|".join(COMMANDS) + "} [options]", file=sys.stderr)
        return 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())

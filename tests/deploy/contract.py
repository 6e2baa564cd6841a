"""What the deploy files may reference: docs/metric-names.md (the worker's contract) and recording.yml.

Also a small fake worker that serves every documented series, for running the rules in a real Prometheus
without Kafka.
"""
from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
METRIC_DOC = ROOT / "docs" / "metric-names.md"
RULES = ROOT / "deploy" / "prometheus" / "rules"
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
BUILTINS = {"up", "ALERTS"}  # written by Prometheus itself
_SUFFIXES = ("bucket", "sum", "count", "gcount", "gsum")
_LABEL_WORDS = ("queue", "channel", "window", "threshold", "le", "priority", "status", "solved_by", "state",
                "topic", "reason", "type", "partition", "label", "from_channel", "to_channel")


def _cells(line: str) -> list[str]:
    """Split a markdown table row on | outside parentheses ("status (provisional|final)" is one cell)."""
    cells, depth, cur = [], 0, ""
    for ch in line.strip().strip("|"):
        depth += ch == "("
        depth -= ch == ")"
        if ch == "|" and depth == 0:
            cells.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return cells + [cur.strip()]


def documented_metrics() -> dict[str, list[str]]:
    """{series name: its labels} from the tables of docs/metric-names.md."""
    out: dict[str, list[str]] = {}
    for line in METRIC_DOC.read_text(encoding="utf-8").splitlines():
        if not line.startswith("| contactpulse_"):
            continue
        cells = _cells(line)
        names = re.findall(r"contactpulse_\w+", cells[0])
        # "x_bucket / _gcount / _gsum" and "x (histogram: _bucket{le}, _sum, _count ...)" name siblings.
        suffixes = re.findall(r"(?<![\w])_(" + "|".join(_SUFFIXES) + r")\b", cells[0])
        if suffixes:
            base = names[0]
            for sfx in _SUFFIXES:
                if base.endswith("_" + sfx):
                    base = base[: -len(sfx) - 1]
            names = [n for n in names if n != base] + [f"{base}_{s}" for s in suffixes]
        label_cell = re.sub(r"\([^)]*\)", "", cells[1]) if len(cells) > 1 else ""
        labels = [w for w in re.findall(r"\w+", label_cell) if w in _LABEL_WORDS and w != "le"]
        for name in names:
            out[name] = labels + (["le"] if name.endswith("_bucket") else [])
    return out


def rule_groups() -> dict[str, list[dict]]:
    return {f: yaml.safe_load((RULES / f).read_text())["groups"] for f in ("recording.yml", "alerts.yml")}


def recorded_names() -> set[str]:
    return {r["record"] for g in rule_groups()["recording.yml"] for r in g["rules"]}


def alert_rules() -> list[dict]:
    return [r for g in rule_groups()["alerts.yml"] for r in g["rules"]]


_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
             "offset", "inf", "nan"}


def names_in_expr(expr: str) -> set[str]:
    """Metric names an expression selects (function and aggregation names, labels, keywords left out)."""
    found = set()
    for alternatives in re.findall(r'__name__=~"([^"]+)"', expr):
        found.update(alternatives.split("|"))
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    s = re.sub(r"`[^`]*`", "", s)
    s = re.sub(r"\{[^}]*\}", "", s)
    s = re.sub(r"\[[^\]]*\]", "", s)
    # "sum by (a) (x)", "/ on (a) group_left () y": the clauses hold label names, not metrics.
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    for m in re.finditer(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*", s):
        if s[m.end():].lstrip().startswith("("):
            continue  # a function or an aggregation
        if m.group(0).lower() in _KEYWORDS:
            continue
        found.add(m.group(0))
    return found


def dashboard_targets() -> list[tuple[str, str, dict]]:
    """(dashboard file, panel title, target) for every query of every panel."""
    out = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        import json

        for panel in json.loads(path.read_text())["panels"]:
            for t in panel.get("targets", []):
                out.append((path.name, panel["title"], t))
    return out


# Grafana variables in dashboard queries, replaced by values the fake worker serves.
GRAFANA_VARS = {"queue": "billing", "threshold": "20", "window": "interval", "day_window": "today",
                "__rate_interval": "1m"}


def substitute(expr: str) -> str:
    def repl(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        if name not in GRAFANA_VARS:
            raise KeyError(f"unknown Grafana variable ${name} in {expr!r}")
        return GRAFANA_VARS[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", repl, expr)


class FakeWorker:
    """Serves every series of docs/metric-names.md on /metrics (one queue, every window).

    Counts grow with each scrape so increase()/deriv() have something to see; the interval SL is
    fixed (see VALUES) so a test can check an exact recorded figure.
    """

    LABEL_VALUES = {
        "queue": ["billing"], "channel": ["voice"], "window": ["interval", "trailing", "today"],
        "threshold": ["20"], "le": ["10", "20", "+Inf"], "priority": ["high"], "status": ["provisional", "final"],
        "solved_by": ["agent", "auto"], "state": ["available", "on_contact"], "topic": ["contact-events"],
        "reason": ["malformed_json"], "type": ["offered"], "partition": ["0"], "label": ["queue"],
        "from_channel": ["voice"], "to_channel": ["chat"],
    }
    # Fixed values: interval SL(20) = 16 / 20 = 0.8.
    VALUES = {"contactpulse_contacts_sl_numerator": 16, "contactpulse_contacts_sl_denominator": 20,
              "contactpulse_service_level_target_ratio": 0.8, "contactpulse_broker_connected": 1}

    def __init__(self):
        self.metrics = documented_metrics()
        self.scrapes = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server API)
                body = fake.render().encode()
                self.send_response(200 if self.path == "/metrics" else 404)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def render(self) -> str:
        self.scrapes += 1
        lines = []
        for name, labels in sorted(self.metrics.items()):
            for combo in self._combos(labels):
                value = self.VALUES.get(name)
                if value is None:
                    le = dict(combo).get("le")
                    # buckets grow with le; growing counts everywhere so rates and increases exist.
                    value = 10 * self.scrapes + (5 if le == "20" else 9 if le == "+Inf" else 1 if le else 3)
                elif dict(combo).get("window") == "today" and name.startswith("contactpulse_contacts_sl"):
                    value = value * self.scrapes
                text = ",".join(f'{k}="{v}"' for k, v in combo)
                lines.append(f"{name}{{{text}}} {value}" if text else f"{name} {value}")
        return "\n".join(lines) + "\n"

    def _combos(self, labels: list[str]) -> list[tuple]:
        combos: list[tuple] = [()]
        for label in labels:
            combos = [c + ((label, v),) for c in combos for v in self.LABEL_VALUES[label]]
        return combos

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

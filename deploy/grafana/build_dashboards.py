#!/usr/bin/env python3
"""Generate the contactpulse Grafana dashboards (plain JSON, provisioned from deploy/grafana/dashboards/).

    python deploy/grafana/build_dashboards.py          # rewrite the JSON files
    python deploy/grafana/build_dashboards.py --check  # exit 1 if a committed file is out of date

Edit this file, not the JSON: tests/deploy checks the JSON is what this script produces.
Queries use the recording rules of deploy/prometheus/rules/recording.yml (cluster-wide sums of counts,
never averages of per-worker ratios); only the monitor's own health reads raw series.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards"
DS = {"type": "prometheus", "uid": "${datasource}"}


# --- building blocks ---------------------------------------------------------------------------------

def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False, fmt: str = "time_series") -> dict:
    t = {"datasource": DS, "refId": ref, "expr": expr, "legendFormat": legend or "__auto"}
    if instant:
        t.update({"instant": True, "range": False})
    if fmt != "time_series":
        t["format"] = fmt
    return t


def steps(*pairs) -> dict:
    """steps(("green", None), ("red", 10)): base colour first, then (colour, from value)."""
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in pairs]}


def stat(title: str, targets: list[dict], unit: str, thresholds: dict, description: str = "",
         decimals: int | None = None, transformations: list | None = None, min_: float | None = None,
         max_: float | None = None, color_mode: str = "background") -> dict:
    defaults: dict = {"unit": unit, "thresholds": thresholds, "color": {"mode": "thresholds"},
                      "noValue": "–"}
    if decimals is not None:
        defaults["decimals"] = decimals
    if min_ is not None:
        defaults["min"] = min_
    if max_ is not None:
        defaults["max"] = max_
    panel = {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": color_mode,
            "graphMode": "none",
            "justifyMode": "center",
            "textMode": "value",
            "orientation": "auto",
            "wideLayout": True,
        },
    }
    if transformations:
        panel["transformations"] = transformations
    return panel


def timeseries(title: str, targets: list[dict], unit: str, description: str = "", min_: float | None = None,
               max_: float | None = None, stack: bool = False) -> dict:
    defaults: dict = {
        "unit": unit,
        "color": {"mode": "palette-classic"},
        "custom": {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 20 if stack else 5,
                   "showPoints": "never", "spanNulls": False,
                   "stacking": {"mode": "normal" if stack else "none", "group": "A"}},
    }
    if min_ is not None:
        defaults["min"] = min_
    if max_ is not None:
        defaults["max"] = max_
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def row(title: str, repeat: str | None = None) -> dict:
    r = {"type": "row", "title": title, "collapsed": False, "panels": []}
    if repeat:
        r["repeat"] = repeat
    return r


def scale_to(config_ref: str, field_name: str) -> list[dict]:
    """Set the field's max from another query (the queue's own target or alert limit), so a
    percentage threshold of 100 means "at the target" for every queue of a repeated row."""
    return [{
        "id": "configFromData",
        "options": {
            "configRefId": config_ref,
            "applyTo": {"id": "byFrameRefID", "options": "A"},
            "mappings": [{"fieldName": field_name, "handlerKey": "max", "reducerId": "lastNotNull"}],
        },
    }]


def layout(items: list[tuple[dict, int, int]]) -> list[dict]:
    """Place (panel, width, height) left to right on Grafana's 24-column grid; rows take a full line."""
    out, x, y, line_h = [], 0, 0, 0
    for pid, (panel, w, h) in enumerate(items, start=1):
        if panel["type"] == "row":
            if x:
                y, x = y + line_h, 0
            w, h, line_h = 24, 1, 0
        elif x + w > 24:
            y, x, line_h = y + line_h, 0, 0
        panel = {"id": pid, "gridPos": {"x": x, "y": y, "w": w, "h": h}, **panel}
        out.append(panel)
        if panel["type"] == "row":
            y += 1
        else:
            x += w
            line_h = max(line_h, h)
    return out


def var_datasource() -> dict:
    return {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
            "current": {"text": "Prometheus", "value": "prometheus"}, "hide": 0, "refresh": 1}


def var_query(name: str, label: str, query: str, multi: bool, include_all: bool, current: str | None = None) -> dict:
    v = {"name": name, "label": label, "type": "query", "datasource": DS,
         "query": {"query": query, "refId": f"{name}-values"}, "definition": query,
         "refresh": 2, "sort": 1, "multi": multi, "includeAll": include_all, "hide": 0}
    if current is not None:
        v["current"] = {"text": current, "value": current}
    elif include_all:
        v["current"] = {"text": "All", "value": "$__all"}
    return v


def var_custom(name: str, label: str, values: list[str], current: str) -> dict:
    return {"name": name, "label": label, "type": "custom", "query": ",".join(values), "multi": False,
            "includeAll": False, "hide": 0, "current": {"text": current, "value": current},
            "options": [{"text": v, "value": v, "selected": v == current} for v in values]}


def dashboard(uid: str, title: str, panels: list[dict], variables: list[dict], refresh: str,
              time_from: str, description: str) -> dict:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["contactpulse"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": refresh,
        "time": {"from": time_from, "to": "now"},
        "templating": {"list": variables},
        "annotations": {"list": []},
        "links": [{"title": "contactpulse", "type": "dashboards", "tags": ["contactpulse"], "asDropdown": False}],
        "panels": panels,
    }


QUEUE_VALUES = "label_values(queue:contactpulse_queues:present, queue)"
THRESHOLD_VALUES = "label_values(queue_threshold:contactpulse_service_level_target:ratio, threshold)"


# --- wallboard ---------------------------------------------------------------------------------------

def wallboard() -> dict:
    q = 'queue="$queue"'
    sl = stat(
        "Service level (interval)",
        [target(f'queue_window:contactpulse_service_level:ratio{{{q}, window="interval", threshold="$threshold"}}',
                "service level", "A", instant=True),
         target(f'queue_threshold:contactpulse_service_level_target:ratio{{{q}, threshold="$threshold"}}',
                "target", "B", instant=True)],
        "percentunit",
        # Percentage mode against max = this queue's target: red below it, green from it.
        {"mode": "percentage", "steps": [{"color": "red", "value": None}, {"color": "green", "value": 100}]},
        "Contacts answered within $threshold s / offered, current interval, all channels. Green from the "
        "queue's own target (its max), red below.",
        decimals=1, transformations=scale_to("B", "target"), min_=0, max_=0.8,
    )
    waiting = stat(
        "Waiting now",
        [target(f"queue:contactpulse_contacts_waiting:sum{{{q}}}", "waiting", instant=True)],
        "none", steps(("green", None), ("orange", 5), ("red", 10)),
        "Contacts in the queue right now, all channels.", decimals=0,
    )
    oldest = stat(
        "Oldest waiting",
        [target(f"queue:contactpulse_oldest_waiting_age_seconds:max{{{q}}}", "oldest", "A", instant=True),
         target(f"queue:contactpulse_alert_max_oldest_waiting:seconds{{{q}}}", "limit", "B", instant=True)],
        "s",
        # Against the queue's alert limit: orange from half of it, red from the limit.
        {"mode": "percentage", "steps": [{"color": "green", "value": None}, {"color": "orange", "value": 50},
                                         {"color": "red", "value": 100}]},
        "Age of the oldest contact waiting now; red at the queue's alert limit.",
        decimals=0, transformations=scale_to("B", "limit"), min_=0, max_=120,
    )
    asa = stat(
        "ASA (interval)",
        [target(f'queue_window:contactpulse_answer_wait_seconds:mean{{{q}, window="interval"}}', "ASA",
                instant=True)],
        "s", steps(("green", None), ("orange", 20), ("red", 60)),
        "Average speed of answer: total wait of answered contacts / answered, current interval.", decimals=0,
    )
    abandon = stat(
        "Abandoned (interval)",
        [target(f'queue_window:contactpulse_abandon:ratio{{{q}, window="interval"}}', "abandoned", "A",
                instant=True),
         target(f"queue:contactpulse_alert_max_abandon:ratio{{{q}}}", "limit", "B", instant=True)],
        "percentunit",
        {"mode": "percentage", "steps": [{"color": "green", "value": None}, {"color": "orange", "value": 50},
                                         {"color": "red", "value": 100}]},
        "Abandoned after the short-abandon threshold / offered, current interval; red at the alert limit.",
        decimals=1, transformations=scale_to("B", "limit"), min_=0, max_=0.1,
    )
    agents = stat(
        "Agents available",
        [target(f'queue_state:contactpulse_agents:sum{{{q}, state="available"}}', "available", instant=True)],
        "none", steps(("red", None), ("green", 1)),
        "Agents in the available state for this queue now.", decimals=0,
    )
    items: list[tuple[dict, int, int]] = [(row("$queue", repeat="queue"), 24, 1)]
    items += [(p, 4, 7) for p in (sl, waiting, oldest, asa, abandon, agents)]
    return dashboard(
        "contactpulse-wallboard", "contactpulse — Wallboard", layout(items),
        [var_datasource(),
         var_query("queue", "Queue", QUEUE_VALUES, multi=True, include_all=True),
         var_query("threshold", "SL threshold (s)", THRESHOLD_VALUES, multi=False, include_all=False,
                   current="20")],
        refresh="10s", time_from="now-15m",
        description="TV wallboard: one row per queue, live figures for the current interval.",
    )


# --- operations --------------------------------------------------------------------------------------

def operations() -> dict:
    qw = 'queue=~"$queue", window="$window"'
    qs = 'queue=~"$queue"'
    # FCR and CSAT are counted per local day of the contact (a 72 h outcome has no 15 min interval).
    qd = 'queue=~"$queue", window="$day_window"'
    burn = "/ on (queue, threshold) group_left () queue_threshold:contactpulse_service_level_error_budget:ratio"
    panels: list[tuple[dict, int, int]] = [
        (row("Service level"), 24, 1),
        (timeseries("Service level by queue", [
            target(f'queue_window:contactpulse_service_level:ratio{{{qw}, threshold="$threshold"}}', "{{queue}}"),
            target(f'queue_threshold:contactpulse_service_level_target:ratio{{{qs}, threshold="$threshold"}}',
                   "target {{queue}}", "B"),
        ], "percentunit", "Answered within $threshold s / offered, in the selected window.", 0, 1), 12, 8),
        (timeseries("Service level by channel", [
            target(f'queue_channel_window:contactpulse_service_level:ratio{{{qw}, threshold="$threshold"}}',
                   "{{queue}} {{channel}}"),
        ], "percentunit", "Per queue and channel, in the selected window.", 0, 1), 12, 8),
        (timeseries("Error-budget burn rate", [
            target(f'queue_channel:contactpulse_service_level_errors:ratio_rate5m{{{qs}, threshold="$threshold"}} {burn}',
                   "{{queue}} {{channel}} 5m", "A"),
            target(f'queue_channel:contactpulse_service_level_errors:ratio_rate1h{{{qs}, threshold="$threshold"}} {burn}',
                   "{{queue}} {{channel}} 1h", "B"),
            target(f'queue_channel:contactpulse_service_level_errors:ratio_rate6h{{{qs}, threshold="$threshold"}} {burn}',
                   "{{queue}} {{channel}} 6h", "C"),
        ], "none", "(1 - SL) / (1 - target). 1 = spending exactly the allowed share; pages above 2 (1h and "
           "5m), tickets above 1 (6h and 30m).", 0), 24, 8),

        (row("Queue"), 24, 1),
        (timeseries("Speed of answer", [
            target(f"queue_window:contactpulse_answer_wait_seconds:mean{{{qw}}}", "ASA {{queue}}", "A"),
            target(f"queue_window:contactpulse_answer_wait_seconds:p50{{{qw}}}", "median {{queue}}", "B"),
            target(f"queue_window:contactpulse_answer_wait_seconds:p90{{{qw}}}", "p90 {{queue}}", "C"),
        ], "s", "Wait of answered contacts: mean (ASA), median and p90.", 0), 8, 8),
        (timeseries("Abandonment", [
            target(f"queue_window:contactpulse_abandon:ratio{{{qw}}}", "{{queue}}"),
        ], "percentunit", "Abandoned after the short-abandon threshold / offered.", 0), 8, 8),
        (timeseries("Waiting now and oldest wait", [
            target(f"queue:contactpulse_contacts_waiting:sum{{{qs}}}", "waiting {{queue}}", "A"),
            target(f"queue:contactpulse_oldest_waiting_age_seconds:max{{{qs}}}", "oldest (s) {{queue}}", "B"),
        ], "none", "Live: contacts in queue and the age in seconds of the oldest.", 0), 8, 8),
        (timeseries("Volumes", [
            target(f"queue_window:contactpulse_contacts_offered:sum{{{qw}}}", "offered {{queue}}", "A"),
            target(f"queue_window:contactpulse_contacts_answered:sum{{{qw}}}", "answered {{queue}}", "B"),
            target(f"queue_window:contactpulse_contacts_abandoned:sum{{{qw}}}", "abandoned {{queue}}", "C"),
        ], "none", "Contacts whose wait ended in the selected window.", 0), 24, 7),

        (row("Tickets"), 24, 1),
        (timeseries("First response time", [
            target(f"queue_window:contactpulse_tickets_first_response_seconds:mean{{{qw}}}", "mean {{queue}}", "A"),
            target(f"queue_window:contactpulse_tickets_first_response_seconds:p50{{{qw}}}", "median {{queue}}", "B"),
            target(f"queue_window:contactpulse_tickets_first_response_seconds:p90{{{qw}}}", "p90 {{queue}}", "C"),
        ], "s", "Ticket created to first human public reply (automated replies never count).", 0), 8, 8),
        (timeseries("Awaiting first response", [
            target(f"queue:contactpulse_tickets_awaiting_first_response:sum{{{qs}}}", "backlog {{queue}}", "A"),
        ], "none", "Tickets with no human reply yet.", 0), 8, 8),
        (timeseries("Oldest awaiting first response", [
            target(f"queue_priority:contactpulse_tickets_oldest_awaiting_first_response_age_seconds:max{{{qs}}}",
                   "{{queue}} {{priority}}", "A"),
            target(f"queue_priority:contactpulse_alert_max_awaiting_first_response:seconds{{{qs}}}",
                   "target {{queue}} {{priority}}", "B"),
        ], "s", "Age of the oldest ticket without a first response, and its target.", 0), 8, 8),
        (timeseries("Resolution time", [
            target(f"queue_window:contactpulse_tickets_resolution_seconds:mean{{{qw}}}", "mean {{queue}}", "A"),
        ], "s", "Received to solved, agent- and auto-solved together.", 0), 12, 7),
        (timeseries("Auto-solved share", [
            target(f"queue_window:contactpulse_tickets_auto_solved:ratio{{{qw}}}", "{{queue}}", "A"),
        ], "percentunit", "Solved by a rule after inactivity / all solved.", 0, 1), 12, 7),

        (row("Resolution and satisfaction"), 24, 1),
        (timeseries("First contact resolution", [
            target(f'queue_window:contactpulse_fcr:ratio{{{qd}, status="final"}}', "final {{queue}}", "A"),
            target(f'queue_window:contactpulse_fcr:ratio{{{qd}, status="provisional"}}', "provisional {{queue}}", "B"),
            target(f"queue_window:contactpulse_fcr_agent_marked:ratio{{{qd}}}", "agent-marked {{queue}}", "C"),
            target(f"queue:contactpulse_alert_min_fcr:ratio{{{qs}}}", "floor {{queue}}", "D"),
        ], "percentunit", "Repeat-based FCR: final once the repeat window has closed, provisional while it is "
           "open (72 h by default, so today is provisional); agent-marked for comparison. Per local day.",
           0, 1), 8, 8),
        (timeseries("CSAT", [
            target(f"queue_window:contactpulse_csat:ratio{{{qd}}}", "{{queue}}", "A"),
        ], "percentunit", "Satisfied (4-5 of 5) / survey responses, by local day of the answer.", 0, 1), 8, 8),
        (timeseries("Average handle time", [
            target(f"queue_window:contactpulse_handle_seconds:mean{{{qw}}}", "{{queue}}", "A"),
        ], "s", "Talk + hold + after-contact work per handled contact.", 0), 8, 8),

        (row("Agents"), 24, 1),
        (timeseries("Agents by state", [
            target(f"queue_state:contactpulse_agents:sum{{{qs}}}", "{{queue}} {{state}}", "A"),
        ], "none", "Live agent states per queue (an agent in two queues counts in both).", 0, stack=True), 12, 8),
        (timeseries("Occupancy", [
            target(f"queue_window:contactpulse_agent_occupancy:ratio{{{qw}}}", "{{queue}}", "A"),
        ], "percentunit", "Busy / (busy + available) time.", 0, 1), 12, 8),

        (row("Monitor health"), 24, 1),
        (timeseries("Workers up", [
            target('up{job="contactpulse"}', "{{instance}}", "A"),
            target("contactpulse_broker_connected", "broker {{instance}}", "B"),
        ], "none", "1 = scraped / connected to Kafka.", 0, 1), 6, 7),
        (timeseries("Consumer lag", [
            target("topic:contactpulse_consumer_lag_messages:sum", "{{topic}}", "A"),
        ], "none", "Messages written but not yet processed.", 0), 6, 7),
        (timeseries("Events per second", [
            target("sum by (topic) (rate(contactpulse_events_accepted_total[$__rate_interval]))",
                   "accepted {{topic}}", "A"),
            target("sum by (topic, reason) (rate(contactpulse_events_rejected_total[$__rate_interval]))",
                   "rejected {{topic}} {{reason}}", "B"),
            target("sum by (topic) (rate(contactpulse_events_duplicate_total[$__rate_interval]))",
                   "duplicate {{topic}}", "C"),
        ], "ops", "Rejected events are in the dead-letter topic.", 0), 6, 7),
        (timeseries("Event-time delay", [
            target("time() - max by (topic) (contactpulse_last_event_timestamp_seconds)", "{{topic}}", "A"),
        ], "s", "Now minus the event time of the newest event: how far behind real time the figures are.",
           0), 6, 7),
        (_alerts_table(), 24, 8),
    ]
    return dashboard(
        "contactpulse-operations", "contactpulse — Operations", layout(panels),
        [var_datasource(),
         var_query("queue", "Queue", QUEUE_VALUES, multi=True, include_all=True),
         var_custom("window", "Window", ["interval", "trailing", "today"], "trailing"),
         var_custom("day_window", "FCR/CSAT days", ["today", "yesterday", "last_7_days"], "last_7_days"),
         var_query("threshold", "SL threshold (s)", THRESHOLD_VALUES, multi=False, include_all=False,
                   current="20")],
        refresh="30s", time_from="now-6h",
        description="Trends per queue: service level, queue wait, tickets, FCR, CSAT, AHT, agents, and the "
                    "monitor's own health.",
    )


def _alerts_table() -> dict:
    return {
        "type": "table",
        "title": "Firing alerts",
        "description": "Alerts firing now (see docs/runbook.md).",
        "datasource": DS,
        "targets": [target('ALERTS{alertstate="firing"}', "", "A", instant=True, fmt="table")],
        "fieldConfig": {"defaults": {}, "overrides": []},
        "options": {"showHeader": True},
        "transformations": [{"id": "organize", "options": {
            "excludeByName": {"Time": True, "Value": True, "__name__": True, "alertstate": True}}}],
    }


DASHBOARDS = {"wallboard.json": wallboard, "operations.json": operations}


def render() -> dict[str, str]:
    return {name: json.dumps(build(), indent=2, ensure_ascii=False) + "\n" for name, build in DASHBOARDS.items()}


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name, text in render().items():
        path = OUT / name
        if check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            OUT.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if stale:
        print(f"out of date: {', '.join(stale)}; run python deploy/grafana/build_dashboards.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

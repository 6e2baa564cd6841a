"""Replay a historical log into Kafka, or compute its per-interval KPI report without Kafka.

    contactpulse replay FILE --format queue_log|connect|twilio|zendesk|contactpulse
                        [--speed N|max] [--broker 127.0.0.1:9092] [--rebase]
    contactpulse replay FILE --format queue_log --report [--csv] [--interval 900] [--tz Europe/Riga]
                        [--threshold 20 ...] [--short-abandon 5]

Replay produces every event keyed like the live sources (contact_id / ticket_id / agent_id) in event-time
order, as fast as possible (max) or at N x real time. Event ids are deterministic, so replaying a file
twice is harmless: the worker drops the repeats.

The report applies the worker's rules (streams/contacts.py, metrics/kpi.py) to the events directly:
a contact counts in the interval where its wait ended (answered or abandoned); abandons within the
short-abandon threshold (wait <= threshold) are left out of everything but their own column; later
abandons count as offered and not met; ASA = total wait of answered / answered; abandon % = abandoned
(after the short threshold) / offered.
"""
from __future__ import annotations

import argparse
import asyncio
import csv
import io
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable, Iterator, Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from metrics.kpi import interval_start, ratio
from streams.adapters import AdapterError, Emitted, Skip
from streams.adapters import connect as connect_adapter
from streams.adapters import contactpulse as own
from streams.adapters.queue_log import read_queue_log
from streams.adapters.twilio import TwilioAdapter
from streams.adapters.zendesk import ZendeskAdapter
from streams.events import parse_ts

FORMATS = ("queue_log", "connect", "twilio", "zendesk", "contactpulse")
DEFAULT_TOPICS = {"contact": "contact-events", "ticket": "ticket-events", "agent": "agent-events"}


def _json_records(path: str, convert, stats: Counter) -> Iterator[Emitted]:
    with open(path, "r", encoding="utf-8") as fh:
        text = fh.read()
    for rec in connect_adapter.iter_json_objects(text):
        try:
            out = convert(rec)
        except AdapterError as exc:
            stats[exc.reason] += 1
            continue
        if isinstance(out, Skip):
            stats[out.reason] += 1
            continue
        stats["records_mapped"] += 1
        yield from out


def read_events(path: str, fmt: str, stats: Counter | None = None) -> list[Emitted]:
    """All events of a file in event-time order (stable: same-time events keep their file order)."""
    stats = Counter() if stats is None else stats
    if fmt == "queue_log":
        events = list(read_queue_log(path, stats))
    elif fmt == "connect":
        events = list(connect_adapter.read_connect_file(path, stats))
    elif fmt == "twilio":
        events = list(_json_records(path, TwilioAdapter().convert, stats))
    elif fmt == "zendesk":
        events = list(_json_records(path, ZendeskAdapter().convert, stats))
    elif fmt == "contactpulse":
        events = list(own.read_jsonl(path, stats))
    else:
        raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    events.sort(key=lambda e: event_ts(e.event))
    return events


def event_ts(ev: dict) -> float:
    ts = parse_ts(ev.get("ts"))
    return ts if ts is not None else 0.0


# -- report ------------------------------------------------------------------------------------------
@dataclass
class Row:
    interval_start: float
    queue: str
    channel: str
    offered: int = 0
    answered: int = 0
    answered_within: dict = field(default_factory=dict)  # threshold -> count
    wait_sum: float = 0.0
    abandoned: int = 0
    short_abandoned: int = 0


def compute_report(events: Iterable[Emitted], *, interval: int = 900, tz: str = "UTC",
                   thresholds: Sequence[int] = (20,), short_abandon: float = 5.0,
                   stats: Counter | None = None) -> list[Row]:
    """Per (interval, queue, channel) counts from contact events, by the worker's rules.

    One record per contact_id: the first offered/answered/abandoned wins (a repeat is a conflict, as in
    the worker); repeated event_ids are dropped. Contacts whose wait never ended are not counted.
    """
    zone = ZoneInfo(tz)
    stats = Counter() if stats is None else stats
    recs: dict[str, dict] = {}
    seen: set[str] = set()
    for em in events:
        if em.kind != "contact":
            continue
        ev = em.event
        if ev["event_id"] in seen:
            stats["duplicate"] += 1
            continue
        seen.add(ev["event_id"])
        ts = event_ts(ev)
        rec = recs.setdefault(ev["contact_id"], {})
        t = ev["type"]
        if t == "offered":
            if "off" in rec:
                stats["conflict"] += 1
                continue
            rec.update(off=ts, q=ev["queue"], ch=ev["channel"])
        elif t in ("answered", "abandoned"):
            if "ans" in rec or "ab" in rec:
                stats["conflict"] += 1
                continue
            rec["ans" if t == "answered" else "ab"] = ts
    rows: dict[tuple, Row] = {}
    for rec in recs.values():
        if "off" not in rec:
            if "ans" in rec or "ab" in rec:
                stats["no_offered"] += 1
            continue
        if "ans" not in rec and "ab" not in rec:
            stats["still_waiting"] += 1
            continue
        ended = rec.get("ans", rec.get("ab"))
        wait = max(0.0, ended - rec["off"])
        start = interval_start(ended, interval, zone)
        row = rows.get((start, rec["q"], rec["ch"]))
        if row is None:
            row = rows[(start, rec["q"], rec["ch"])] = Row(start, rec["q"], rec["ch"],
                                                           answered_within={t: 0 for t in thresholds})
        if "ans" in rec:
            row.offered += 1
            row.answered += 1
            row.wait_sum += wait
            for t in thresholds:
                if wait <= t:
                    row.answered_within[t] += 1
        elif wait <= short_abandon:
            row.short_abandoned += 1
        else:
            row.offered += 1
            row.abandoned += 1
    return [rows[k] for k in sorted(rows)]


def _pct(num: float, den: float) -> str:
    r = ratio(num, den)
    return "" if r is None else f"{100 * r:.1f}"


def report_lines(rows: Sequence[Row], *, thresholds: Sequence[int] = (20,), tz: str = "UTC") -> list[list[str]]:
    zone = ZoneInfo(tz)
    header = ["interval_start", "queue", "channel", "offered", "answered"]
    for t in thresholds:
        header += [f"answered_within_{t}s", f"sl_{t}s_pct"]
    header += ["asa_s", "abandoned", "abandon_pct", "short_abandoned"]
    out = [header]
    for r in rows:
        line = [datetime.fromtimestamp(r.interval_start, zone).isoformat(), r.queue, r.channel,
                str(r.offered), str(r.answered)]
        for t in thresholds:
            line += [str(r.answered_within[t]), _pct(r.answered_within[t], r.offered)]
        asa = ratio(r.wait_sum, r.answered)
        line += ["" if asa is None else f"{asa:.1f}", str(r.abandoned), _pct(r.abandoned, r.offered),
                 str(r.short_abandoned)]
        out.append(line)
    return out


def format_csv(lines: list[list[str]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(lines)
    return buf.getvalue()


def format_table(lines: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in lines) for i in range(len(lines[0]))]
    text = []
    for n, row in enumerate(lines):
        cells = [c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        text.append("  ".join(cells).rstrip())
        if n == 0:
            text.append("  ".join("-" * w for w in widths))
    return "\n".join(text) + "\n"


# -- replay to Kafka ---------------------------------------------------------------------------------
def rebase(events: list[Emitted], now: float, speed: float | None) -> list[Emitted]:
    """Shift every ts by one constant: the last event lands at `now` for a max-speed replay, the first
    one for a paced replay (the ids stay those of the source, so dedupe still works)."""
    if not events:
        return events
    anchor = event_ts(events[-1].event) if speed is None else event_ts(events[0].event)
    shift_ms = round((now - anchor) * 1000)
    out = []
    for em in events:
        ev = dict(em.event)
        ev["ts"] = round(event_ts(ev) * 1000) + shift_ms
        out.append(Emitted(em.kind, ev))
    return out


async def replay_to_kafka(events: Sequence[Emitted], bootstrap: str, *, speed: float | None = None,
                          topics: dict | None = None, window: int = 5000,
                          sleep=asyncio.sleep, clock=time.monotonic, producer=None) -> Counter:
    """Produce events in order; paced at `speed` x real time (None = as fast as possible).

    Every event is acknowledged (acks=all, idempotent producer) before this returns.
    """
    topics = {**DEFAULT_TOPICS, **(topics or {})}
    produced: Counter = Counter()
    own_producer = producer is None
    if own_producer:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                                    linger_ms=10, client_id="contactpulse-replay")
        await producer.start()
    try:
        pending = []
        t0 = event_ts(events[0].event) if events else 0.0
        wall0 = clock()
        for em in events:
            if speed is not None:
                delay = wall0 + (event_ts(em.event) - t0) / speed - clock()
                if delay > 0:
                    if pending:  # do not hold unsent events back while waiting
                        await asyncio.gather(*pending)
                        pending.clear()
                    await sleep(delay)
            pending.append(await producer.send(topics[em.kind], orjson.dumps(em.event),
                                               key=em.key.encode("utf-8")))
            produced[em.kind] += 1
            if len(pending) >= window:
                await asyncio.gather(*pending)
                pending.clear()
        if pending:
            await asyncio.gather(*pending)
    finally:
        if own_producer:
            await producer.stop()
    return produced


def _speed(value: str) -> float | None:
    if value.lower() == "max":
        return None
    try:
        v = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError("speed is a number > 0 (1 = real time) or 'max'") from None
    if not v > 0:
        raise argparse.ArgumentTypeError("speed must be > 0")
    return v


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="contactpulse replay",
                                 description="Replay a historical log into Kafka, or print its KPI report.")
    ap.add_argument("file")
    ap.add_argument("--format", required=True, choices=FORMATS)
    ap.add_argument("--speed", type=_speed, default=None, help="N x real time, or 'max' (default)")
    env_broker = os.environ.get("CONTACTPULSE_BROKER", "127.0.0.1:9092")
    ap.add_argument("--broker", default=env_broker.split("://", 1)[-1])
    ap.add_argument("--contact-topic", default=DEFAULT_TOPICS["contact"])
    ap.add_argument("--ticket-topic", default=DEFAULT_TOPICS["ticket"])
    ap.add_argument("--agent-topic", default=DEFAULT_TOPICS["agent"])
    ap.add_argument("--rebase", action="store_true",
                    help="shift all times so the log ends now (max) or starts now (paced): the worker "
                         "rejects events older than max_event_age_seconds (7 days by default)")
    ap.add_argument("--report", action="store_true", help="print the per-interval KPI table; no Kafka")
    ap.add_argument("--csv", action="store_true", help="report as CSV")
    ap.add_argument("--interval", type=int, default=int(os.environ.get("CONTACTPULSE_INTERVAL_SECONDS", 900)))
    ap.add_argument("--tz", default=os.environ.get("CONTACTPULSE_TIMEZONE", "UTC"))
    ap.add_argument("--threshold", type=int, action="append",
                    help="SL threshold in seconds (repeatable; default 20)")
    ap.add_argument("--short-abandon", type=float,
                    default=float(os.environ.get("CONTACTPULSE_SHORT_ABANDON_SECONDS", 5.0)))
    args = ap.parse_args(argv)
    thresholds = sorted(set(args.threshold or [20]))
    try:
        ZoneInfo(args.tz)
    except (ZoneInfoNotFoundError, ValueError):
        ap.error(f"unknown time zone {args.tz!r} (use an IANA name like Europe/Riga)")
    if args.interval <= 0 or 86400 % args.interval:
        ap.error("--interval must divide a day evenly (900 = 15 min)")
    if any(t <= 0 for t in thresholds) or args.short_abandon < 0:
        ap.error("--threshold must be > 0 and --short-abandon >= 0")
    stats: Counter = Counter()
    try:
        events = read_events(args.file, args.format, stats)
    except (OSError, ValueError) as exc:
        print(f"contactpulse replay: cannot read {args.file}: {exc}", file=sys.stderr)
        return 2
    skipped = {k: v for k, v in stats.items() if k not in ("lines_mapped", "records_mapped")}
    if args.report:
        rows = compute_report(events, interval=args.interval, tz=args.tz, thresholds=thresholds,
                              short_abandon=args.short_abandon, stats=stats)
        lines = report_lines(rows, thresholds=thresholds, tz=args.tz)
        sys.stdout.write(format_csv(lines) if args.csv else format_table(lines))
        if skipped:
            print("skipped input: " + ", ".join(f"{k}={v}" for k, v in sorted(skipped.items())), file=sys.stderr)
        return 0
    if args.rebase:
        events = rebase(events, time.time(), args.speed)
    topics = {"contact": args.contact_topic, "ticket": args.ticket_topic, "agent": args.agent_topic}
    try:
        produced = asyncio.run(replay_to_kafka(events, args.broker, speed=args.speed, topics=topics))
    except Exception as exc:  # connection refused, unknown topic, ...
        print(f"contactpulse replay: Kafka at {args.broker}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"replayed {sum(produced.values())} events "
          f"({', '.join(f'{k}={v}' for k, v in sorted(produced.items())) or 'none'}) to {args.broker}")
    if skipped:
        print("skipped input: " + ", ".join(f"{k}={v}" for k, v in sorted(skipped.items())), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

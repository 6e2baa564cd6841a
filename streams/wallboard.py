"""The wallboard: a live TV page served by the worker itself, for teams without Grafana.

GET /wallboard?queues=sales,support&window=interval&threshold=20   the page (static HTML/CSS/JS, no CDN)
GET /wallboard/snapshot.json?...                                  one snapshot, same parameters
GET /wallboard/events?...                                         server-sent events: a snapshot every second

The numbers are never computed a second time: a snapshot is built from the samples the registered
Prometheus collectors produce for /metrics (local mode), or from the same series queried from Prometheus
and summed over every worker (cluster mode, `wallboard_prometheus_url`). Per queue the channels are
summed as raw counts and only then divided, exactly like the recording rules behind the Grafana
wallboard, so the page, /metrics and Grafana cannot disagree.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import re
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, Mapping

import orjson
from prometheus_client import CollectorRegistry

from metrics.kpi import day_start, interval_start, ratio
from metrics.merge import MergedRegistry
from streams.config import Settings

log = logging.getLogger("contactpulse.wallboard")

STATIC = Path(__file__).resolve().parent / "static"
ASSETS = {"wallboard.css": "text/css", "wallboard.js": "text/javascript"}
WINDOWS = ("interval", "trailing", "today")
QUEUE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/ -]{0,63}$")  # the label rule of streams/events.py
MAX_QUEUES_IN_URL = 48  # more tiles than this would not be readable on one screen anyway
MAX_STREAMS = 64  # concurrent SSE clients per worker; each costs a write per second
PUSH_EVERY_SECONDS = 1.0
PROMETHEUS_TIMEOUT_SECONDS = 2.0

Sample = tuple[str, Mapping[str, str], float]

# The series a snapshot reads, by sample name. Windowed counts are summed per queue and window.
_WINDOWED = {
    "contactpulse_contacts_offered": "offered",
    "contactpulse_contacts_answered": "answered",
    "contactpulse_contacts_abandoned": "abandoned",
    "contactpulse_contacts_sl_denominator": "sl_denominator",
    "contactpulse_answer_wait_seconds_sum": "answer_wait_seconds_sum",
}
SL_NUMERATOR = "contactpulse_contacts_sl_numerator"
WAITING = "contactpulse_contacts_waiting"
OLDEST = "contactpulse_oldest_waiting_age_seconds"
AGENTS = "contactpulse_agents"  # issue 4's pipeline; absent until it runs
FRT_BACKLOG = "contactpulse_tickets_awaiting_first_response"  # issue 3's pipeline; absent until it runs
WANTED = frozenset(_WINDOWED) | {SL_NUMERATOR, WAITING, OLDEST, AGENTS, FRT_BACKLOG}


class BadRequest(ValueError):
    """A URL parameter the page cannot honour; the message is shown to whoever set up the TV."""


@dataclass(frozen=True)
class View:
    queues: tuple[str, ...] | None  # None: every queue the data knows, sorted
    window: str = "interval"
    threshold: int | None = None  # None: each queue's first configured target


def parse_view(query: Mapping[str, str], settings: Settings) -> View:
    queues = None
    raw = (query.get("queues") or query.get("queue") or "").strip()
    if raw:
        names = [q.strip() for q in raw.split(",") if q.strip()]
        bad = [q for q in names if not QUEUE_NAME.match(q)]
        if bad:
            raise BadRequest(f"queues: not a queue name: {bad[0][:70]!r}")
        if len(names) > MAX_QUEUES_IN_URL:
            raise BadRequest(f"queues: at most {MAX_QUEUES_IN_URL} queues on one board, got {len(names)}")
        queues = tuple(dict.fromkeys(names))  # keep the order the URL gives (the TV layout), drop repeats
    window = query.get("window") or "interval"
    if window not in WINDOWS:
        raise BadRequest(f"window: must be one of {', '.join(WINDOWS)}, got {window[:40]!r}")
    threshold = None
    if query.get("threshold"):
        try:
            threshold = int(query["threshold"])
        except ValueError:
            raise BadRequest(f"threshold: expected whole seconds, got {query['threshold'][:20]!r}") from None
        if threshold not in settings.all_thresholds:
            configured = ", ".join(map(str, settings.all_thresholds))
            raise BadRequest(f"threshold: {threshold} s is not a configured target (configured: {configured})")
    return View(queues, window, threshold)


def sl_status(numerator: float, denominator: float, target: float | None, amber_points: float) -> str:
    """green: at or above target; amber: below by at most `amber_points` percentage points; red: further
    below; none: nothing offered (no service level) or no target for this threshold.

    Exact rational arithmetic (counts are whole numbers, targets decimal strings), so 0.8 - 0.05 float
    noise can never flip a colour at the boundary.
    """
    if not denominator or target is None:
        return "none"
    sl = Fraction(numerator) / Fraction(denominator)
    goal = Fraction(str(target))
    if sl >= goal:
        return "green"
    if sl >= goal - Fraction(str(amber_points)) / 100:
        return "amber"
    return "red"


def aggregate(samples: Iterable[Sample], settings: Settings, view: View) -> list[dict[str, Any]]:
    """Per-queue tiles from /metrics-style samples: counts summed over channels (and workers), then divided."""
    per_queue: dict[str, dict[str, Any]] = {}

    def q(name: str) -> dict[str, Any]:
        if name not in per_queue:
            per_queue[name] = {"counts": dict.fromkeys(_WINDOWED.values(), 0.0), "numerators": {},
                               "waiting": 0.0, "oldest": 0.0, "agents_available": None, "frt_backlog": None}
        return per_queue[name]

    for name, labels, value in samples:
        queue = labels.get("queue")
        if queue is None or name not in WANTED or math.isnan(value):
            continue
        if name in _WINDOWED:
            if labels.get("window") == view.window:
                q(queue)["counts"][_WINDOWED[name]] += value
            else:
                q(queue)  # the queue exists, even if only in other windows
        elif name == SL_NUMERATOR:
            if labels.get("window") == view.window:
                nums = q(queue)["numerators"]
                nums[labels["threshold"]] = nums.get(labels["threshold"], 0.0) + value
        elif name == WAITING:
            q(queue)["waiting"] += value
        elif name == OLDEST:
            q(queue)["oldest"] = max(q(queue)["oldest"], value)
        elif name == AGENTS:
            if labels.get("state") == "available":
                entry = q(queue)
                entry["agents_available"] = (entry["agents_available"] or 0.0) + value
        elif name == FRT_BACKLOG:
            entry = q(queue)
            entry["frt_backlog"] = (entry["frt_backlog"] or 0.0) + value

    names = list(view.queues) if view.queues is not None else sorted(per_queue)
    tiles = []
    for name in names:
        data = per_queue.get(name) or {"counts": dict.fromkeys(_WINDOWED.values(), 0.0), "numerators": {},
                                       "waiting": 0.0, "oldest": 0.0, "agents_available": None,
                                       "frt_backlog": None}
        c = data["counts"]
        targets = settings.targets_for(name)
        if view.threshold is None:
            threshold, target = targets[0].threshold_seconds, targets[0].ratio
        else:
            threshold = view.threshold
            target = next((t.ratio for t in targets if t.threshold_seconds == threshold), None)
        numerator = data["numerators"].get(str(threshold), 0.0)
        denominator = c["sl_denominator"]
        tiles.append({
            "queue": name,
            "offered": _num(c["offered"]),
            "answered": _num(c["answered"]),
            "abandoned": _num(c["abandoned"]),
            "sl_threshold_seconds": threshold,
            "sl_target": target,
            "sl_numerator": _num(numerator),
            "sl_denominator": _num(denominator),
            "service_level": ratio(numerator, denominator),
            # Rounded down, so a board never shows "80%" in amber for 79.6% against an 80% target.
            "service_level_percent": math.floor(Fraction(numerator) * 100 / Fraction(denominator)) if denominator else None,
            "sl_status": sl_status(numerator, denominator, target, settings.wallboard_amber_points),
            "waiting": _num(data["waiting"]),
            "oldest_wait_seconds": data["oldest"] if data["waiting"] else 0.0,
            "asa_seconds": ratio(c["answer_wait_seconds_sum"], c["answered"]),
            "abandon_ratio": ratio(c["abandoned"], c["offered"]),
            "agents_available": _num(data["agents_available"]),
            "frt_backlog": _num(data["frt_backlog"]),
        })
    return tiles


def _num(value: float | None) -> float | int | None:
    """Counts as integers in the JSON (they are whole numbers), anything else unchanged."""
    if value is not None and float(value).is_integer():
        return int(value)
    return value


def window_start(window: str, now: float, settings: Settings) -> float:
    if window == "interval":
        return interval_start(now, settings.interval_seconds, settings.tz)
    if window == "today":
        return day_start(now, settings.tz)
    return now - settings.trailing_seconds


def registry_samples(registry) -> list[Sample]:
    """The samples /metrics would show right now, restricted to the series a snapshot reads.

    Only the collectors of those series run (not the per-agent ones that make most of a scrape)."""
    out: list[Sample] = []
    for family in registry.collect(WANTED):
        for s in family.samples:
            if s.name in WANTED:
                out.append((s.name, s.labels, s.value))
    return out


def prometheus_queries(selector: str = "") -> dict[str, str]:
    """PromQL per sample name, summed over every worker (and channel) by queue and window.

    The oldest wait is advanced by the time since its scrape (only where something waits), so the
    cluster value is as fresh as the query and keeps ticking like the local one.
    """
    def sel(*matchers: str) -> str:
        parts = [m for m in (selector, *matchers) if m]
        return "{" + ", ".join(parts) + "}"

    queries = {name: f"sum by (queue, window) ({name}{sel()})" for name in _WINDOWED}
    queries[SL_NUMERATOR] = f"sum by (queue, window, threshold) ({SL_NUMERATOR}{sel()})"
    queries[WAITING] = f"sum by (queue) ({WAITING}{sel()})"
    o = f"{OLDEST}{sel()}"
    queries[OLDEST] = f"max by (queue) ({o} + (time() - timestamp({o})) * ({o} > bool 0))"
    available = 'state="available"'
    queries[AGENTS] = f"sum by (queue, state) ({AGENTS}{sel(available)})"
    queries[FRT_BACKLOG] = f"sum by (queue) ({FRT_BACKLOG}{sel()})"
    return queries


def parse_prometheus_vector(name: str, body: bytes) -> list[Sample]:
    doc = orjson.loads(body)
    if doc.get("status") != "success":
        raise RuntimeError(f"{doc.get('errorType', 'error')}: {doc.get('error', 'query failed')}")
    data = doc["data"]
    if data.get("resultType") != "vector":
        raise RuntimeError(f"expected an instant vector, got {data.get('resultType')}")
    return [(name, r["metric"], float(r["value"][1])) for r in data["result"]]


class Board:
    """Builds snapshots; samples are shared by every client for up to one push period."""

    def __init__(self, settings: Settings, registry, owned: Callable[[], set[int]] | None = None,
                 recovering: Callable[[], bool] = lambda: False, clock: Callable[[], float] = time.time,
                 fetch: Callable[[str, Mapping[str, str]], Awaitable[bytes]] | None = None):
        self.s = settings
        # collect(names) of only the families a snapshot reads (metrics/merge.py)
        self.registry = MergedRegistry(registry) if isinstance(registry, CollectorRegistry) else registry
        self.owned = owned
        self.recovering = recovering
        self.clock = clock
        self._fetch = fetch
        self._session = None
        self._cached: tuple[float, list[Sample], str, str | None] | None = None
        self._lock = asyncio.Lock()
        self.closing = asyncio.Event()
        self.streams = 0
        self.version = asset_version()

    async def fetch(self, url: str, params: Mapping[str, str]) -> bytes:
        if self._fetch is not None:
            return await self._fetch(url, params)
        import aiohttp

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PROMETHEUS_TIMEOUT_SECONDS))
        async with self._session.get(url, params=params) as resp:
            body = await resp.read()
            if resp.status != 200 and not body.startswith(b"{"):
                raise RuntimeError(f"HTTP {resp.status}")
            return body

    async def close(self) -> None:
        self.closing.set()
        if self._session is not None:
            await self._session.close()

    async def _prometheus_samples(self, at: float) -> list[Sample]:
        url = self.s.wallboard_prometheus_url.rstrip("/") + "/api/v1/query"
        queries = prometheus_queries(self.s.wallboard_prometheus_selector)
        bodies = await asyncio.gather(*(self.fetch(url, {"query": q, "time": f"{at:.3f}"})
                                        for q in queries.values()))
        out: list[Sample] = []
        for name, body in zip(queries, bodies):
            out.extend(parse_prometheus_vector(name, body))
        return out

    async def samples(self) -> tuple[float, list[Sample], str, str | None]:
        """(taken at, samples, source, warning), at most one collection per half push period."""
        async with self._lock:
            now = self.clock()
            if self._cached is not None and 0 <= now - self._cached[0] < PUSH_EVERY_SECONDS / 2:
                return self._cached
            warning = None
            if self.s.wallboard_prometheus_url:
                try:
                    taken = self.clock()
                    self._cached = (taken, await self._prometheus_samples(taken), "prometheus", None)
                    return self._cached
                except Exception as exc:  # Prometheus down or misconfigured: show what this worker knows
                    warning = (f"Prometheus unreachable ({type(exc).__name__}: {str(exc)[:120]}); "
                               "showing this worker's partitions only")
                    log.warning("wallboard: %s", warning)
            taken = self.clock()
            self._cached = (taken, registry_samples(self.registry), "worker", warning)
            return self._cached

    def scope(self, source: str) -> str:
        if source == "prometheus":
            return "cluster (all workers, via Prometheus)"
        owned = sorted(self.owned()) if self.owned else []
        shown = ", ".join(map(str, owned)) if owned else "none"
        return f"this worker: partitions {shown} of {self.s.partitions}"

    async def snapshot(self, view: View) -> dict[str, Any]:
        taken, samples, source, warning = await self.samples()
        return {
            "generated_at": taken,
            "source": source,
            "scope": self.scope(source),
            "warning": warning,
            "recovering": bool(self.recovering()),
            "window": view.window,
            "window_start": window_start(view.window, taken, self.s),
            "trailing_seconds": self.s.trailing_seconds,
            "oldest_wait_alert_seconds": self.s.wallboard_oldest_wait_alert_seconds,
            "timezone": self.s.timezone,
            "version": self.version,
            "queues": aggregate(samples, self.s, view),
        }

    async def next_push(self) -> bool:
        """Sleep to the next whole second (so all clients share one collection); False when shutting down."""
        delay = PUSH_EVERY_SECONDS - (self.clock() % PUSH_EVERY_SECONDS)
        try:
            await asyncio.wait_for(self.closing.wait(), timeout=delay)
        except asyncio.TimeoutError:
            return True
        return False


def asset_version() -> str:
    h = hashlib.sha256()
    for name in ("wallboard.html", *sorted(ASSETS)):
        h.update((STATIC / name).read_bytes())
    return h.hexdigest()[:12]


def page_html(version: str) -> bytes:
    html = (STATIC / "wallboard.html").read_text("utf-8")
    return html.replace("{{version}}", version).encode()


def register(app, registry, settings: Settings, owned: Callable[[], set[int]] | None = None) -> Board:
    """Add the wallboard routes to the Faust app's web server (aiohttp underneath)."""
    from aiohttp import web as aioweb

    board = Board(settings, registry, owned,
                  recovering=lambda: bool(getattr(app, "rebalancing", False) or getattr(app, "in_recovery", False)))
    page = page_html(board.version)
    assets = {name: (STATIC / name).read_bytes() for name in ASSETS}
    no_cache = {"Cache-Control": "no-cache"}

    def bad_request(web, exc: BadRequest):
        return web.json({"error": str(exc)}, status=400)

    @app.page("/wallboard")
    async def wallboard_page(web, request):
        try:
            parse_view(request.query, settings)
        except BadRequest as exc:
            return web.html(f"<!doctype html><title>wallboard</title><h1>Wallboard: bad URL</h1>"
                            f"<p>{_escape(str(exc))}</p>", status=400)
        return web.bytes(page, content_type="text/html", headers=no_cache)

    @app.page("/wallboard/static/{name}")
    async def wallboard_asset(web, request, name):
        if name not in assets:
            return web.json({"error": "not found"}, status=404)
        return web.bytes(assets[name], content_type=ASSETS[name],
                         headers={"Cache-Control": "public, max-age=86400"} if request.query.get("v") else no_cache)

    @app.page("/wallboard/snapshot.json")
    async def wallboard_snapshot(web, request):
        try:
            view = parse_view(request.query, settings)
        except BadRequest as exc:
            return bad_request(web, exc)
        return web.bytes(orjson.dumps(await board.snapshot(view)), content_type="application/json",
                         headers=no_cache)

    @app.page("/wallboard/events")
    async def wallboard_events(web, request):
        try:
            view = parse_view(request.query, settings)
        except BadRequest as exc:
            return bad_request(web, exc)
        if board.streams >= MAX_STREAMS:
            return web.json({"error": f"too many wallboards on this worker (max {MAX_STREAMS})"}, status=503)
        # Faust's aiohttp driver hands the aiohttp request through, so a StreamResponse can stream to it.
        resp = aioweb.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                              "X-Accel-Buffering": "no"})
        board.streams += 1
        try:
            await resp.prepare(request)
            # The browser reconnects after this many ms when the worker restarts.
            await resp.write(b"retry: 1000\n\n")
            while not board.closing.is_set():
                await resp.write(b"data: " + orjson.dumps(await board.snapshot(view)) + b"\n\n")
                if not await board.next_push():
                    break
        except ConnectionError:  # the TV went away
            pass
        finally:
            board.streams -= 1
        return resp

    async def on_shutdown(_aiohttp_app) -> None:
        # End the streams first: otherwise the web server waits for them before the worker can stop.
        await board.close()

    app.web.web_app.on_shutdown.append(on_shutdown)
    return board


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


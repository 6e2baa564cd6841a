"""Pure KPI math: window alignment and the service-level family of numbers.

No Kafka, no Faust, no Prometheus here, so every formula is unit-tested on hand-made numbers.
Definitions follow ../shared/kpi-spec.md; the choices it leaves open are recorded in docs/metrics.md.
"""
from __future__ import annotations

from bisect import bisect_left
from datetime import datetime
from functools import lru_cache
from typing import Iterable, Mapping, Sequence
from zoneinfo import ZoneInfo

# Upper bounds (seconds) of the answered-wait histogram; configured thresholds are added to these
# so that SL at every threshold can also be read from the histogram.
WAIT_BUCKETS = (5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1200, 1800, 3600)


@lru_cache(maxsize=8192)
def _starts_for_minute(minute: int, interval: int, tz: ZoneInfo) -> tuple[float, float]:
    """(local midnight, interval start) in epoch seconds for the local day/interval containing this minute.

    Both follow the wall clock, so on a DST day "today" still starts at 00:00 and intervals at :00/:15.
    Zone offsets only change on whole minutes, so one lookup per minute is exact.
    """
    local = datetime.fromtimestamp(minute * 60, tz)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0, fold=0)
    since = local.hour * 3600 + local.minute * 60
    start = since - since % interval
    aligned = local.replace(hour=start // 3600, minute=start % 3600 // 60, second=0, microsecond=0)
    return midnight.timestamp(), aligned.timestamp()


def day_start(ts: float, tz: ZoneInfo) -> float:
    """Start (epoch s) of the local calendar day containing ts."""
    return _starts_for_minute(int(ts // 60), 60, tz)[0]


def interval_start(ts: float, interval: int, tz: ZoneInfo) -> float:
    """Start (epoch s) of the interval containing ts, aligned to the site's local clock (00:00, 00:15, ...)."""
    if interval < 60:  # sub-minute intervals (tests only) cannot use the per-minute cache
        return ts - (ts - day_start(ts, tz)) % interval
    return _starts_for_minute(int(ts // 60), interval, tz)[1]


def minute_start(ts: float) -> float:
    return (ts // 60) * 60


class CurrentWindows:
    """Which stored windows are current at `now`: the interval and day containing it, and the minute
    slots of the trailing window (the current minute and the trailing_seconds/60 - 1 before it).
    `s` is the Settings (interval_seconds, trailing_seconds, tz)."""

    def __init__(self, s, now: float):
        self.interval = int(interval_start(now, s.interval_seconds, s.tz))
        self.day = int(day_start(now, s.tz))
        self.minute = int(minute_start(now))
        self.first_minute = self.minute - s.trailing_seconds + 60

    def window_of(self, kind: str, start: int) -> str | None:
        """The window ("interval", "today", "trailing") a stored window of kind i/d/m is part of now, or None."""
        if kind == "i":
            return "interval" if start == self.interval else None
        if kind == "d":
            return "today" if start == self.day else None
        return "trailing" if self.first_minute <= start <= self.minute else None

    def starts(self) -> dict[str, int]:
        return {"interval": self.interval, "today": self.day, "trailing": self.first_minute}

    def fragments(self) -> frozenset[str]:
        """"{kind}|{start}" of every stored window that is current (what streams/state.iter_windows matches)."""
        minutes = range(self.first_minute, self.minute + 1, 60)
        return frozenset([f"i|{self.interval}", f"d|{self.day}", *(f"m|{m}" for m in minutes)])


def service_level(numerator: float, denominator: float) -> float | None:
    """None when nothing was offered: 'no data' is not 0% and not 100%."""
    return numerator / denominator if denominator else None


def sl_counts(variant: str, answered: int, answered_within: int, abandoned: int, abandoned_within: int
              ) -> tuple[int, int]:
    """(numerator, denominator) of SL(T) for the configured variant; short abandons are already excluded.

    abandons_count      (default) answered within T / (answered + abandoned)
    answered_only       answered within T / answered
    abandons_within_met (answered within T + abandoned within T) / (answered + abandoned)
    """
    if variant == "answered_only":
        return answered_within, answered
    if variant == "abandons_within_met":
        return answered_within + abandoned_within, answered + abandoned
    return answered_within, answered + abandoned


def ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def wait_bucket_bounds(thresholds: Iterable[int]) -> tuple[float, ...]:
    return tuple(sorted(set(WAIT_BUCKETS) | set(thresholds)))


def bucket_index(bounds: Sequence[float], value: float) -> int:
    """Index of the first bucket whose upper bound is >= value (Prometheus 'le'); len(bounds) = +Inf."""
    return bisect_left(bounds, value)


def histogram_quantile(q: float, bounds: Sequence[float], counts: Sequence[int]) -> float | None:
    """Quantile from non-cumulative bucket counts (last = +Inf), interpolated like Prometheus.

    The error is at most one bucket's width; docs/metrics.md lists the buckets.
    """
    total = sum(counts)
    if not total:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(counts):
        if seen + n >= rank and n:
            if i == len(bounds):  # +Inf bucket: the best honest answer is the last finite bound
                return float(bounds[-1])
            lower = bounds[i - 1] if i else 0.0
            return lower + (bounds[i] - lower) * ((rank - seen) / n)
        seen += n
    return float(bounds[-1])


def merge_counts(into: dict, other: Mapping) -> dict:
    """Add one window's counts into another (numbers add, maxima take the max, lists add element-wise)."""
    for key, value in other.items():
        if key == "o":
            continue
        if key.endswith("max"):
            into[key] = max(into.get(key, 0), value)
        elif isinstance(value, dict):
            merge_counts(into.setdefault(key, {}), value)
        elif isinstance(value, list):
            cur = into.setdefault(key, [0] * len(value))
            for i, v in enumerate(value):
                cur[i] += v
        else:
            into[key] = into.get(key, 0) + value
    return into


def window_start(kind: str, ts: float, interval: int, tz: ZoneInfo) -> float:
    """Start of the window of a kind containing ts: "i" interval, "d" local day, "m" minute."""
    if kind == "i":
        return interval_start(ts, interval, tz)
    if kind == "d":
        return day_start(ts, tz)
    return minute_start(ts)


def window_end(kind: str, start: float, interval: int, tz: ZoneInfo) -> float:
    """End of the window that starts at `start` (a local day lasts 23, 24 or 25 hours)."""
    if kind == "i":
        return start + interval
    if kind == "d":
        return day_start(start + 26 * 3600, tz)  # 26 h lands inside the next local day, whatever DST does
    return start + 60


def split_by_window(a: float, b: float, kind: str, interval: int, tz: ZoneInfo) -> list[tuple[float, float]]:
    """[(window start, seconds)] of the time span [a, b) cut at the boundaries of windows of one kind.

    Used to put time spent in a state into the windows it overlaps: 09:14:30-09:16:00 with 15-minute
    intervals gives [(09:00, 30.0), (09:15, 60.0)].
    """
    out: list[tuple[float, float]] = []
    t = a
    while t < b:
        start = window_start(kind, t, interval, tz)
        end = max(window_end(kind, start, interval, tz), t + 1e-3)  # always move on, even on odd clocks
        piece_end = min(b, end)
        out.append((start, piece_end - t))
        t = piece_end
    return out

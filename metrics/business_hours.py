"""Business hours: a weekly schedule in a timezone, and the business seconds between two instants.

Schedule syntax (setting `business_hours`): `;`-separated `DAYS HH:MM-HH:MM[,HH:MM-HH:MM]` items, DAYS a
day (`mon`) or a range (`mon-fri`), e.g. "mon-fri 09:00-17:00; sat 10:00-14:00". `24:00` ends a day.
The clock is the local wall clock of the schedule's timezone, so 09:00 stays 09:00 across DST changes.
"""
from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SPAN = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")

Schedule = dict[int, tuple[tuple[int, int], ...]]  # weekday (0 = Monday) -> ((start minute, end minute), ...)


def parse_schedule(text: str) -> Schedule:
    """Raises ValueError with a readable message."""
    schedule: dict[int, list[tuple[int, int]]] = {}
    for item in filter(None, (i.strip() for i in text.split(";"))):
        parts = item.split(None, 1)
        if len(parts) != 2:
            raise ValueError(f"'{item}' should look like 'mon-fri 09:00-17:00'")
        days_text, spans_text = parts[0].lower(), parts[1]
        first, _, last = days_text.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise ValueError(f"'{days_text}': days are {', '.join(DAYS)} or a range like mon-fri")
        a, b = DAYS.index(first), DAYS.index(last or first)
        days = list(range(a, b + 1)) if a <= b else list(range(a, 7)) + list(range(0, b + 1))
        for span in (s.strip() for s in spans_text.split(",")):
            m = _SPAN.match(span)
            if not m:
                raise ValueError(f"'{span}' should look like 09:00-17:00")
            h1, m1, h2, m2 = map(int, m.groups())
            start, end = h1 * 60 + m1, h2 * 60 + m2
            if h1 > 23 or m1 > 59 or m2 > 59 or end > 1440 or start >= end:
                raise ValueError(f"'{span}' is not a span within one day (use 24:00 for midnight)")
            for d in days:
                schedule.setdefault(d, []).append((start, end))
    if not schedule:
        raise ValueError("no business hours given")
    return {d: tuple(sorted(spans)) for d, spans in schedule.items()}


def _at(day: date, minute: int, tz: ZoneInfo) -> float:
    if minute >= 1440:
        return datetime.combine(day + timedelta(days=1), time(0, 0), tzinfo=tz).timestamp()
    return datetime.combine(day, time(minute // 60, minute % 60), tzinfo=tz).timestamp()


def business_seconds(start: float, end: float, schedule: Schedule, tz: ZoneInfo) -> float:
    """Seconds of [start, end] that fall inside the schedule (0 when end <= start)."""
    if end <= start:
        return 0.0
    day = datetime.fromtimestamp(start, tz).date()
    last = datetime.fromtimestamp(end, tz).date()
    total = 0.0
    while day <= last:
        for a, b in schedule.get(day.weekday(), ()):
            lo, hi = max(start, _at(day, a, tz)), min(end, _at(day, b, tz))
            if hi > lo:
                total += hi - lo
        day += timedelta(days=1)
    return total

"""What the wallboard must show, worked out from /metrics on its own (not with streams/wallboard.py's code),
and the page's display rules mirrored from streams/static/wallboard.js."""
from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

from harness import Metrics

DASH = "\u2014"


def tile_from_metrics(m: Metrics, queue: str, window: str = "interval", threshold: int = 20) -> dict:
    """One queue's numbers: every channel's counts summed, then divided (never an average of ratios)."""
    def total(name: str, **match) -> float:
        return sum(v for labels, v in m.series(name).items()
                   if dict(labels).get("queue") == queue
                   and all(dict(labels).get(k) == str(x) for k, x in match.items()))

    def present(name: str, **match) -> bool:
        return any(dict(labels).get("queue") == queue and all(dict(labels).get(k) == str(x) for k, x in match.items())
                   for labels in m.series(name))

    offered = total("contactpulse_contacts_offered", window=window)
    answered = total("contactpulse_contacts_answered", window=window)
    abandoned = total("contactpulse_contacts_abandoned", window=window)
    num = total("contactpulse_contacts_sl_numerator", window=window, threshold=threshold)
    den = total("contactpulse_contacts_sl_denominator", window=window)
    wait_sum = total("contactpulse_answer_wait_seconds_sum", window=window)
    waiting = total("contactpulse_contacts_waiting")
    oldest = max((v for labels, v in m.series("contactpulse_oldest_waiting_age_seconds").items()
                  if dict(labels)["queue"] == queue), default=0.0)
    return {
        "offered": offered, "answered": answered, "abandoned": abandoned,
        "sl_numerator": num, "sl_denominator": den,
        "service_level": num / den if den else None,
        "service_level_percent": math.floor(Fraction(num) * 100 / Fraction(den)) if den else None,
        "waiting": waiting, "oldest_wait_seconds": oldest if waiting else 0.0,
        "asa_seconds": wait_sum / answered if answered else None,
        "abandon_ratio": abandoned / offered if offered else None,
        "agents_available": total("contactpulse_agents", state="available")
        if present("contactpulse_agents", state="available") else None,
        "frt_backlog": total("contactpulse_tickets_awaiting_first_response")
        if present("contactpulse_tickets_awaiting_first_response") else None,
    }


def js_round(x: float) -> int:
    """Math.round for the non-negative numbers the page shows: halves go up, on the exact binary value."""
    return int(Decimal(x).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def duration(seconds: float | None, round_: bool) -> str:
    if seconds is None:
        return DASH
    s = js_round(seconds) if round_ else math.floor(seconds)
    if s < 60:
        return f"{s} s"
    h, m, r = s // 3600, s % 3600 // 60, s % 60
    return (f"{h}:{m:02d}" if h else f"{m}") + f":{r:02d}"


def shown(metric: str, tile: dict) -> str:
    """The text the page renders for one metric of a snapshot tile (wallboard.js `format`)."""
    if metric == "service_level":
        return DASH if tile["service_level_percent"] is None else f"{tile['service_level_percent']}%"
    if metric == "oldest_wait_seconds":
        return duration(tile["oldest_wait_seconds"], False) if tile["waiting"] else DASH
    if metric == "asa_seconds":
        return duration(tile["asa_seconds"], True)
    if metric == "abandon_ratio":
        r = tile["abandon_ratio"]
        # Number.prototype.toFixed(1): the exact binary value, halves away from zero
        return DASH if r is None else f"{Decimal(r * 100).quantize(Decimal('0.1'), rounding=ROUND_HALF_UP)}%"
    v = tile[metric]
    return DASH if v is None else str(int(v) if float(v).is_integer() else v)


METRICS_SHOWN = ("service_level", "waiting", "oldest_wait_seconds", "asa_seconds", "abandon_ratio",
                 "agents_available", "frt_backlog")

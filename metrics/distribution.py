"""A duration distribution that can be added to, retracted from and merged: count, sum, a Prometheus-style
bucket histogram, the exact values while there are few, and a DDSketch-style log-bucket sketch beyond.

Stored as plain JSON in the tables (keys are strings so a changelog round trip changes nothing):
    {"n": count, "sum": seconds, "h": [non-cumulative bucket counts, last = +Inf],
     "x": [exact values] or None once more than `cap` values were added, "k": {"bin": count}, "z": zeros}
Retraction exists because a ticket's measure can change after it was counted (a reopened ticket is no
longer solved, an earlier first reply turns up late); see docs/metrics.md "Tickets".

Quantiles: exact (linear interpolation between closest ranks, like numpy's default; q=0.5 is the usual
median) while every value is known, else from the sketch: the value at rank q*(n-1) (rounded down) of the sorted
values (DDSketch's definition) within `relative_accuracy` (1% by default) of the true value.
"""
from __future__ import annotations

import math
from bisect import bisect_left
from functools import lru_cache
from typing import Iterable, Sequence

from ddsketch.mapping import LogarithmicMapping


@lru_cache(maxsize=8)
def sketch_mapping(relative_accuracy: float) -> LogarithmicMapping:
    return LogarithmicMapping(relative_accuracy)


def new_dist(n_buckets: int) -> dict:
    return {"n": 0, "sum": 0.0, "h": [0] * (n_buckets + 1), "x": [], "k": {}, "z": 0}


def dist_add(d: dict, value: float, bounds: Sequence[float], cap: int, accuracy: float) -> None:
    d["n"] += 1
    d["sum"] = round(d["sum"] + value, 3)  # values are whole milliseconds: keep the sum free of float drift
    d["h"][bisect_left(bounds, value)] += 1
    if d["x"] is not None:
        if len(d["x"]) < cap:
            d["x"].append(value)
        else:
            d["x"] = None  # too many to keep: quantiles come from the sketch from now on
    if value <= 0:
        d["z"] += 1
    else:
        k = str(sketch_mapping(accuracy).key(value))
        d["k"][k] = d["k"].get(k, 0) + 1


def dist_remove(d: dict, value: float, bounds: Sequence[float], accuracy: float) -> None:
    """Undo one dist_add(value)."""
    d["n"] -= 1
    d["sum"] = round(d["sum"] - value, 3)
    d["h"][bisect_left(bounds, value)] -= 1
    if d["x"] is not None:
        try:
            d["x"].remove(value)
        except ValueError:  # cannot happen when adds and removes pair up; stay honest if it does
            d["x"] = None
    if value <= 0:
        d["z"] -= 1
    else:
        k = str(sketch_mapping(accuracy).key(value))
        left = d["k"].get(k, 0) - 1
        if left > 0:
            d["k"][k] = left
        else:
            d["k"].pop(k, None)


def merge_dists(dists: Iterable[dict], n_buckets: int, cap: int) -> dict:
    """One distribution from several windows (e.g. the minute slots of the trailing window)."""
    out = new_dist(n_buckets)
    for d in dists:
        out["n"] += d["n"]
        out["sum"] = round(out["sum"] + d["sum"], 3)
        for i, c in enumerate(d["h"]):
            out["h"][i] += c
        if out["x"] is not None and d["x"] is not None and len(out["x"]) + len(d["x"]) <= cap:
            out["x"].extend(d["x"])
        else:
            out["x"] = None
        for k, c in d["k"].items():
            out["k"][k] = out["k"].get(k, 0) + c
        out["z"] += d["z"]
    return out


def exact_quantile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between the closest ranks of the sorted values (numpy's default)."""
    if not values:
        return None
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def sketch_quantile(d: dict, q: float, accuracy: float) -> float | None:
    """DDSketch's quantile: the bin holding rank q*(n-1), reported at the bin's representative value."""
    n = d["z"] + sum(d["k"].values())
    if not n:
        return None
    rank = q * (n - 1)
    if rank < d["z"]:
        return 0.0
    seen = d["z"]
    mapping = sketch_mapping(accuracy)
    for k in sorted(d["k"], key=int):
        seen += d["k"][k]
        if seen > rank:
            return mapping.value(int(k))
    return mapping.value(int(max(d["k"], key=int)))


def quantile(d: dict, q: float, accuracy: float) -> float | None:
    """Exact while every value is kept, else from the sketch."""
    if d["x"] is not None and len(d["x"]) == d["n"]:
        return exact_quantile(d["x"], q)
    return sketch_quantile(d, q, accuracy)


def is_exact(d: dict) -> bool:
    return d["x"] is not None and len(d["x"]) == d["n"]


def cumulative_buckets(bounds: Sequence[float], counts: Sequence[int]) -> list[tuple[str, int]]:
    """[(le, cumulative count)] for a Prometheus (gauge) histogram."""
    out, total = [], 0
    for bound, c in zip(list(bounds) + [math.inf], counts):
        total += c
        le = "+Inf" if bound == math.inf else (str(int(bound)) if float(bound).is_integer() else str(bound))
        out.append((le, total))
    return out

"""KPI math on hand-made numbers, boundaries included."""
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from metrics.kpi import (bucket_index, day_start, histogram_quantile, interval_start, merge_counts, sl_counts,
                         wait_bucket_bounds)

RIGA = ZoneInfo("Europe/Riga")


def ts(s: str) -> float:
    return datetime.fromisoformat(s).timestamp()


def test_interval_aligned_to_site_clock():
    # 09:14:59 and 09:15:00 Riga time fall in different 15-minute intervals.
    assert interval_start(ts("2026-11-23T09:14:59+02:00"), 900, RIGA) == ts("2026-11-23T09:00:00+02:00")
    assert interval_start(ts("2026-11-23T09:15:00+02:00"), 900, RIGA) == ts("2026-11-23T09:15:00+02:00")
    # A 30-minute interval in a zone with a half-hour offset still starts on the local :00/:30.
    kolkata = ZoneInfo("Asia/Kolkata")
    assert interval_start(ts("2026-11-23T10:29:00+05:30"), 1800, kolkata) == ts("2026-11-23T10:00:00+05:30")


def test_day_starts_at_local_midnight_across_dst():
    assert day_start(ts("2026-11-23T00:30:00+02:00"), RIGA) == ts("2026-11-23T00:00:00+02:00")
    # 29 March 2026: Riga moves from +02:00 to +03:00 at 03:00; midnight was still +02:00.
    assert day_start(ts("2026-03-29T12:00:00+03:00"), RIGA) == ts("2026-03-29T00:00:00+02:00")


@pytest.mark.parametrize("variant,expected", [
    ("abandons_count", (3, 5)),        # 3 answered within T of 4 answered + 1 abandoned
    ("answered_only", (3, 4)),
    ("abandons_within_met", (4, 5)),   # the abandon within T counts as met
])
def test_sl_variants(variant, expected):
    assert sl_counts(variant, answered=4, answered_within=3, abandoned=1, abandoned_within=1) == expected


def test_bucket_le_boundary():
    bounds = wait_bucket_bounds([20, 25])
    assert bounds[:6] == (5, 10, 15, 20, 25, 30)
    assert bounds[bucket_index(bounds, 20.0)] == 20      # exactly 20 s is "le 20"
    assert bounds[bucket_index(bounds, 20.001)] == 25
    assert bucket_index(bounds, 99999) == len(bounds)    # +Inf


def test_histogram_quantile_interpolates_like_prometheus():
    bounds = (10, 20, 30)
    # 4 values <= 10, 4 in (10, 20], 2 in (20, 30]: the median is the 5th of 10 -> 10 + 10 * (1/4) = 12.5
    assert histogram_quantile(0.5, bounds, [4, 4, 2, 0]) == pytest.approx(12.5)
    assert histogram_quantile(0.9, bounds, [4, 4, 2, 0]) == pytest.approx(25.0)
    assert histogram_quantile(0.5, bounds, [0, 0, 0, 0]) is None


def test_merge_counts_adds_and_takes_max():
    a = {"o": 5, "ans": 2, "wmax": 30.0, "aw": {"20": 1}, "wh": [1, 0]}
    merge_counts(a, {"o": 9, "ans": 3, "wmax": 12.0, "aw": {"20": 2, "10": 1}, "wh": [0, 3]})
    assert a == {"o": 5, "ans": 5, "wmax": 30.0, "aw": {"20": 3, "10": 1}, "wh": [1, 3]}

"""One metric family per name in the exposition, whichever collectors contribute to it.

Every pipeline's collector exports the monitor's own families (contactpulse_events_accepted_total, ...)
with its own `topic` label. The text format allows only one HELP/TYPE block per name (promtool: "second
HELP line for metric name"), so families with the same name and type are merged before rendering.
"""
from __future__ import annotations

from typing import Iterable


class MergedRegistry:
    """Wraps a CollectorRegistry for generate_latest(): same-named families become one."""

    def __init__(self, registry):
        self.registry = registry

    def collect(self) -> Iterable:
        merged: dict[tuple[str, str], object] = {}
        for family in self.registry.collect():
            key = (family.name, family.type)
            if key in merged:
                merged[key].samples.extend(family.samples)
            else:
                merged[key] = family
        yield from merged.values()

"""What a section returns (rows of the table) and the arithmetic on its numbers."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .procfs import Busy
from .targets import DIRECT

__all__ = ["Row", "SectionRun", "check", "minus", "percentile", "ratio"]


@dataclass
class Row:
    """One line of the table: a metric's value for each target."""

    section: str
    metric: str
    unit: str
    values: dict[str, float | None]
    target: str = ""  # azproxy's target, printed beside the numbers
    verdict: bool | None = None  # PASS/MISS for azproxy; None: no target or no value
    ratio: bool = True  # show each value as a multiple of direct

    def ratio_to_direct(self, name: str) -> float | None:
        value, direct = self.values.get(name), self.values.get(DIRECT)
        if not self.ratio or name == DIRECT or value is None or not direct:
            return None
        return value / direct

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratios_to_direct"] = {
            name: self.ratio_to_direct(name)
            for name in self.values
            if self.ratio_to_direct(name) is not None
        }
        return data


@dataclass(frozen=True)
class SectionRun:
    """One section's rows, how long it ran and how busy the machine was."""

    name: str
    rows: list[Row]
    seconds: float
    busy: Busy | None  # None: no /proc here

    def as_json(self) -> dict[str, Any]:
        busy = self.busy
        return {
            "name": self.name,
            "seconds": self.seconds,
            "machine_busy_pct": None if busy is None else busy.machine_pct,
            "outside_busy_pct": None if busy is None else busy.outside_pct,
        }


def check(value: float | None, ok: Callable[[float], bool]) -> bool | None:
    return None if value is None else ok(value)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile q (0-100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b

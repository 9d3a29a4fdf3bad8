"""The hot path's gate: azproxy's CPU per request against the bare aiohttp
floor relay, side by side in alternating rounds.

Both serve the bench's small non-streamed chat under wrk at 50 connections,
azproxy with a pass-through token, its access log on (JSON lines into its
log file: the bench sends its stdout there) and its metrics on (as always).
Each round runs azproxy, then the floor, back to back: on a machine shared
with others, the ratio of two neighbouring runs moves far less than either
figure, so the gate is the median of the per-round ratios.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable

from ..context import Bench, Skip
from ..results import Row, check, ratio
from ..targets import AZPROXY, FLOOR
from ..wrk import WrkResult, run_wrk

__all__ = ["FLOOR_CPU_RATIO", "FLOOR_CPU_TARGET", "floor_rows", "relay_floor"]

# Issue 10's gate for the hot path: what azproxy adds to the framework's own
# cost per request stays under a fifth of it.
FLOOR_CPU_RATIO = 1.2
FLOOR_CPU_TARGET = f"<= {FLOOR_CPU_RATIO:g}x"
CONNECTIONS = 50


async def relay_floor(bench: Bench) -> list[Row]:
    """azproxy's CPU per request next to the leanest aiohttp relay (same loop,
    same session options, nothing else; scripts/floor_relay.py), in rounds
    that alternate between them: 3 with --quick, else 5."""
    bench.require_wrk()
    bench.require_proc()
    proxy, floor = bench.target(AZPROXY), bench.target(FLOOR)
    if proxy is None or floor is None:
        raise Skip("needs the azproxy and floor targets")
    rounds: list[tuple[WrkResult, WrkResult]] = []
    for _ in range(3 if bench.options.quick else 5):
        mine = await run_wrk(bench, proxy, CONNECTIONS)
        rounds.append((mine, await run_wrk(bench, floor, CONNECTIONS)))
    bench.raw["relay_floor"] = [
        {"azproxy_cpu_ms": m.cpu_ms_per_request, "floor_cpu_ms": f.cpu_ms_per_request}
        for m, f in rounds
    ]
    return floor_rows(rounds)


def floor_rows(rounds: list[tuple[WrkResult, WrkResult]]) -> list[Row]:
    """The rows of (azproxy, floor) rounds: medians, and the gate."""
    section = (
        f"CPU per request against the bare aiohttp floor, c{CONNECTIONS} "
        f"(median of {len(rounds)} alternating rounds)"
    )
    cpu_ratio = _median(
        ratio(m.cpu_ms_per_request, f.cpu_ms_per_request) for m, f in rounds
    )
    rps_ratio = _median(ratio(m.requests_per_s, f.requests_per_s) for m, f in rounds)
    both = [r for pair in rounds for r in pair]
    return [
        Row(
            section,
            "bare aiohttp relay CPU per request",
            "ms",
            {AZPROXY: _median(f.cpu_ms_per_request for _, f in rounds)},
            ratio=False,
        ),
        Row(
            section,
            "azproxy CPU per request",
            "ms",
            {AZPROXY: _median(m.cpu_ms_per_request for m, _ in rounds)},
            ratio=False,
        ),
        Row(
            section,
            "azproxy / bare relay, CPU per request",
            "x",
            {AZPROXY: cpu_ratio},
            target=FLOOR_CPU_TARGET,
            verdict=check(cpu_ratio, lambda v: v <= FLOOR_CPU_RATIO),
            ratio=False,
        ),
        Row(
            section,
            "azproxy / bare relay, req/s (not a gate)",
            "x",
            {AZPROXY: rps_ratio},
            ratio=False,
        ),
        Row(
            section,
            "machine CPU busy outside the bench",
            "%",
            {AZPROXY: _median(r.outside_busy_pct for r in both)},
            ratio=False,
        ),
    ]


def _median(values: Iterable[float | None]) -> float | None:
    found = [v for v in values if v is not None]
    return statistics.median(found) if found else None

"""azproxy's CPU per request against the bare aiohttp floor relay, in
alternating rounds."""

from __future__ import annotations

from ..context import Bench, Skip
from ..results import Row, check, ratio
from ..targets import AZPROXY, FLOOR
from ..wrk import run_wrk

__all__ = ["FLOOR_CPU_RATIO", "FLOOR_CPU_TARGET", "relay_floor"]

# Issue 10's gate for the hot path: what azproxy adds to the framework's own
# cost per request stays under a fifth of it.
FLOOR_CPU_RATIO = 1.2
FLOOR_CPU_TARGET = f"<= {FLOOR_CPU_RATIO:g}x"


async def relay_floor(bench: Bench) -> list[Row]:
    """azproxy's CPU per request next to the leanest aiohttp relay (same loop,
    same session options, nothing else; scripts/floor_relay.py) in the same
    run: how much of the cost is the framework and how much is azproxy."""
    bench.require_wrk()
    bench.require_proc()
    proxy, floor = bench.target(AZPROXY), bench.target(FLOOR)
    if proxy is None or floor is None:
        raise Skip("needs the azproxy and floor targets")
    rounds = 1 if bench.options.quick else 2
    cpu: dict[str, list[float]] = {proxy.name: [], floor.name: []}
    for _ in range(rounds):
        for target in (proxy, floor):
            result = await run_wrk(bench, target, 50)
            if result.cpu_ms_per_request is not None:
                cpu[target.name].append(result.cpu_ms_per_request)
    mean = {k: sum(v) / len(v) if v else None for k, v in cpu.items()}
    section = f"CPU per request against the bare aiohttp floor, c50 ({rounds} rounds)"
    vs_floor = ratio(mean[proxy.name], mean[floor.name])
    return [
        Row(
            section,
            "bare aiohttp relay",
            "ms",
            {AZPROXY: mean[floor.name]},
            ratio=False,
        ),
        Row(section, "azproxy", "ms", {AZPROXY: mean[proxy.name]}, ratio=False),
        Row(
            section,
            "azproxy / bare relay",
            "x",
            {AZPROXY: vs_floor},
            target=FLOOR_CPU_TARGET,
            verdict=check(vs_floor, lambda v: v <= FLOOR_CPU_RATIO),
            ratio=False,
        ),
    ]

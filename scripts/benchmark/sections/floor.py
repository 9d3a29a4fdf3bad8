"""azproxy's CPU per request against the bare aiohttp floor relay, in
alternating rounds."""

from __future__ import annotations

from ..context import Bench, Skip
from ..results import Row, ratio
from ..services import LOOPBACK, start_floor
from ..targets import AZPROXY, AZURE_URL_PATH, DIRECT, OPENAI_PATH, Target
from ..wrk import run_wrk

__all__ = ["relay_floor"]


async def relay_floor(bench: Bench) -> list[Row]:
    """azproxy's CPU per request next to the leanest aiohttp relay (same loop,
    same session options, nothing else; scripts/floor_relay.py) in the same
    run: how much of the cost is the framework and how much is azproxy."""
    bench.require_wrk()
    bench.require_proc()
    proxy, sim = bench.target(AZPROXY), bench.target(DIRECT)
    if proxy is None or sim is None:
        raise Skip("needs the azproxy and direct targets")
    upstream = f"http://{LOOPBACK}:{sim.port}{AZURE_URL_PATH}"
    service = start_floor(bench.services, upstream)
    floor = Target("floor", service.port, OPENAI_PATH, {}, lambda: [service.popen.pid])
    rounds = 1 if bench.options.quick else 2
    cpu: dict[str, list[float]] = {proxy.name: [], floor.name: []}
    try:
        for _ in range(rounds):
            for target in (proxy, floor):
                result = await run_wrk(bench, target, 50)
                if result.cpu_ms_per_request is not None:
                    cpu[target.name].append(result.cpu_ms_per_request)
    finally:
        bench.services.stop(service)
    mean = {k: sum(v) / len(v) if v else None for k, v in cpu.items()}
    section = f"CPU per request against the bare aiohttp floor, c50 ({rounds} rounds)"
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
            {AZPROXY: ratio(mean[proxy.name], mean[floor.name])},
            ratio=False,
        ),
    ]

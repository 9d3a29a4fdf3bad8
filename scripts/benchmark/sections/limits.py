"""What per-key limits cost: CPU per request of an access key with limits
against one without, through the same azproxy process, side by side, with the
bare aiohttp relay (the floor) in the same rounds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict

from ..context import Bench, Skip
from ..results import Row, check, ratio
from ..services import LOOPBACK, start_azproxy
from ..targets import AZPROXY, DEPLOYMENT, DIRECT, FLOOR, Target, azproxy_target
from ..wrk import WrkResult, run_wrk

__all__ = ["limits_cost"]

PLAIN_KEY = "bench-plain-key-0123456789"
LIMITED_KEY = "bench-limited-key-0123456789"
# Limits high enough never to refuse: every limit is checked and counted on
# every request, and none gets in the way of the load.
LIMITS = (
    "rpm = 100000000, tpm = 1000000000000, max_concurrent = 100000, "
    'token_quota = 1000000000000000, token_quota_period = "month"'
)


def config_text(upstream: str) -> str:
    """A server-side config: the simulator as the one endpoint, both keys."""
    return f"""
access_keys = [
  {{ key = "{PLAIN_KEY}", name = "plain" }},
  {{ key = "{LIMITED_KEY}", name = "limited", {LIMITS} }},
]

[endpoints.sim]
url = "{upstream}"
api_key = "bench"

[model_map]
"{DEPLOYMENT}" = "sim/{DEPLOYMENT}"
"""


TARGET_RATIO = 1.10  # the target: under 10 % more CPU per request
CONNECTIONS = 50


async def limits_cost(bench: Bench) -> list[Row]:
    """Small JSON, 50 connections, one azproxy with server-side keys: a key
    without limits and a key with every limit (rpm, tpm, max_concurrent, a
    quota), in alternating rounds so both see the same noise."""
    bench.require_wrk()
    bench.require_proc()
    if (sim := bench.target(DIRECT)) is None:
        raise Skip("needs the direct target")
    config = bench.tmp / "limits.toml"
    config.write_text(config_text(f"http://{LOOPBACK}:{sim.port}"))
    service = start_azproxy(
        bench.services, sim.port, ["--config", str(config)], name="azproxy-limits"
    )
    base = azproxy_target(service, "azproxy-key")
    plain = Target(base.name, base.port, base.path, _bearer(PLAIN_KEY), base.pids)
    limited = Target(
        "azproxy-key-limits", base.port, base.path, _bearer(LIMITED_KEY), base.pids
    )
    floor = bench.target(FLOOR)
    rounds = 2 if bench.options.quick else 4
    results: dict[str, list[WrkResult]] = {plain.name: [], limited.name: []}
    floors: list[WrkResult] = []
    try:
        for index in range(rounds):
            # Each key goes first in turn: the second run of a pair may
            # find the machine warmer or busier.
            pair = (plain, limited) if index % 2 == 0 else (limited, plain)
            for target in pair:
                results[target.name].append(await run_wrk(bench, target, CONNECTIONS))
            if floor is not None:
                floors.append(await run_wrk(bench, floor, CONNECTIONS))
    finally:
        bench.services.stop(service)
    bench.raw["limits_cost"] = {
        name: [asdict(r) for r in runs] for name, runs in results.items()
    }
    section = f"limits: non-stream JSON, c{CONNECTIONS} (wrk, {rounds} rounds each)"
    return _rows(section, results[plain.name], results[limited.name], floors)


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _rows(
    section: str,
    plain: list[WrkResult],
    limited: list[WrkResult],
    floors: list[WrkResult],
) -> list[Row]:
    def mean(
        runs: list[WrkResult], get: Callable[[WrkResult], float | None]
    ) -> float | None:
        values = [v for v in map(get, runs) if v is not None]
        return sum(values) / len(values) if values else None

    def pair(
        metric: str, unit: str, get: Callable[[WrkResult], float | None]
    ) -> list[Row]:
        return [
            Row(
                section,
                f"{metric}, key without limits",
                unit,
                {AZPROXY: mean(plain, get)},
                ratio=False,
            ),
            Row(
                section,
                f"{metric}, key with limits",
                unit,
                {AZPROXY: mean(limited, get)},
                ratio=False,
            ),
        ]

    def cpu(runs: list[WrkResult]) -> float | None:
        return mean(runs, lambda r: r.cpu_ms_per_request)

    cpu_ratio = ratio(cpu(limited), cpu(plain))
    beside_floor = (
        [
            Row(
                section,
                "bare aiohttp relay CPU per request",
                "ms",
                {AZPROXY: cpu(floors)},
                ratio=False,
            ),
            Row(
                section,
                "key without limits / bare relay, CPU per request",
                "x",
                {AZPROXY: ratio(cpu(plain), cpu(floors))},
                ratio=False,
            ),
            Row(
                section,
                "key with limits / bare relay, CPU per request",
                "x",
                {AZPROXY: ratio(cpu(limited), cpu(floors))},
                ratio=False,
            ),
        ]
        if floors
        else []
    )
    return [
        *pair("server CPU per request", "ms", lambda r: r.cpu_ms_per_request),
        *beside_floor,
        Row(
            section,
            "CPU per request, with limits / without",
            "x",
            {AZPROXY: cpu_ratio},
            target=f"< {TARGET_RATIO:g}x",
            verdict=check(cpu_ratio, lambda v: v < TARGET_RATIO),
            ratio=False,
        ),
        *pair("requests/s", "req/s", lambda r: r.requests_per_s),
        *pair("latency p50", "ms", lambda r: r.p50_ms),
        *pair("machine CPU busy", "%", lambda r: r.machine_busy_pct),
        *pair("machine CPU busy outside the bench", "%", lambda r: r.outside_busy_pct),
        *pair("errors", "count", lambda r: r.errors),
    ]

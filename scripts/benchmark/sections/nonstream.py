"""Small non-streamed JSON under wrk, at 1 and at 50 connections, through
every target (the floor relay included)."""

from __future__ import annotations

from ..context import Bench
from ..results import Row, check, minus, ratio
from ..targets import AZPROXY, DIRECT, FLOOR, NGINX
from ..wrk import busy_rows, per_target, wrk_all
from .floor import FLOOR_CPU_RATIO, FLOOR_CPU_TARGET

__all__ = ["nonstream_c1", "nonstream_c50"]


async def nonstream_c1(bench: Bench) -> list[Row]:
    """Small JSON, one connection: latency, and what the proxy adds to it."""
    section = "non-stream JSON, c1 (wrk)"
    res = await wrk_all(bench, 1, "nonstream_c1")
    direct_p50 = res[DIRECT].p50_ms
    added = {
        name: minus(r.p50_ms, direct_p50) for name, r in res.items() if name != DIRECT
    }
    rps = per_target(res, lambda r: r.requests_per_s)
    return [
        Row(section, "latency p50", "ms", per_target(res, lambda r: r.p50_ms)),
        Row(section, "latency p99", "ms", per_target(res, lambda r: r.p99_ms)),
        Row(section, "requests/s", "req/s", rps),
        Row(
            section,
            "azproxy req/s / floor req/s",
            "x",
            {AZPROXY: ratio(rps.get(AZPROXY), rps.get(FLOOR))},
            ratio=False,
        ),
        Row(
            section,
            "added latency p50 (vs direct)",
            "ms",
            added,
            target="< 0.5 ms",
            verdict=check(added.get(AZPROXY), lambda v: v < 0.5),
            ratio=False,
        ),
        Row(
            section, "errors", "count", per_target(res, lambda r: r.errors), ratio=False
        ),
        *busy_rows(section, res),
    ]


async def nonstream_c50(bench: Bench) -> list[Row]:
    """Small JSON, 50 connections: throughput, latency, CPU per request."""
    section = "non-stream JSON, c50 (wrk)"
    res = await wrk_all(bench, 50, "nonstream_c50")
    rps = per_target(res, lambda r: r.requests_per_s)
    vs_nginx = ratio(rps.get(AZPROXY), rps.get(NGINX))
    cpu = per_target(res, lambda r: r.cpu_ms_per_request)
    vs_floor_cpu = ratio(cpu.get(AZPROXY), cpu.get(FLOOR))
    return [
        Row(
            section,
            "requests/s",
            "req/s",
            rps,
            target=">= 0.40x direct",
            verdict=check(
                ratio(rps.get(AZPROXY), rps.get(DIRECT)), lambda v: v >= 0.40
            ),
        ),
        Row(
            section,
            "azproxy req/s / nginx req/s",
            "x",
            {AZPROXY: vs_nginx},
            target=">= 0.33x",
            verdict=check(vs_nginx, lambda v: v >= 0.33),
            ratio=False,
        ),
        Row(
            section,
            "azproxy req/s / floor req/s",
            "x",
            {AZPROXY: ratio(rps.get(AZPROXY), rps.get(FLOOR))},
            ratio=False,
        ),
        Row(section, "latency p50", "ms", per_target(res, lambda r: r.p50_ms)),
        Row(section, "latency p99", "ms", per_target(res, lambda r: r.p99_ms)),
        Row(
            section,
            "server CPU per request",
            "ms",
            cpu,
            target="<= 0.15 ms",
            verdict=check(cpu.get(AZPROXY), lambda v: v <= 0.15),
        ),
        Row(
            section,
            "azproxy CPU per request / floor's",
            "x",
            {AZPROXY: vs_floor_cpu},
            target=FLOOR_CPU_TARGET,
            verdict=check(vs_floor_cpu, lambda v: v <= FLOOR_CPU_RATIO),
            ratio=False,
        ),
        Row(
            section, "errors", "count", per_target(res, lambda r: r.errors), ratio=False
        ),
        *busy_rows(section, res),
    ]

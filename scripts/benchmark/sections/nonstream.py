"""Small non-streamed JSON under wrk, at 1 and at 50 connections, through
every target."""

from __future__ import annotations

from ..context import Bench
from ..results import Row, check, minus, ratio
from ..targets import AZPROXY, DIRECT, NGINX
from ..wrk import per_target, wrk_all

__all__ = ["nonstream_c1", "nonstream_c50"]


async def nonstream_c1(bench: Bench) -> list[Row]:
    """Small JSON, one connection: latency, and what the proxy adds to it."""
    section = "non-stream JSON, c1 (wrk)"
    res = await wrk_all(bench, 1, "nonstream_c1")
    direct_p50 = res[DIRECT].p50_ms
    added = {
        name: minus(r.p50_ms, direct_p50) for name, r in res.items() if name != DIRECT
    }
    return [
        Row(section, "latency p50", "ms", per_target(res, lambda r: r.p50_ms)),
        Row(section, "latency p99", "ms", per_target(res, lambda r: r.p99_ms)),
        Row(
            section, "requests/s", "req/s", per_target(res, lambda r: r.requests_per_s)
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
    ]


async def nonstream_c50(bench: Bench) -> list[Row]:
    """Small JSON, 50 connections: throughput, latency, CPU per request."""
    section = "non-stream JSON, c50 (wrk)"
    res = await wrk_all(bench, 50, "nonstream_c50")
    rps = per_target(res, lambda r: r.requests_per_s)
    vs_nginx = ratio(rps.get(AZPROXY), rps.get(NGINX))
    cpu = per_target(res, lambda r: r.cpu_ms_per_request)
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
            section, "errors", "count", per_target(res, lambda r: r.errors), ratio=False
        ),
    ]

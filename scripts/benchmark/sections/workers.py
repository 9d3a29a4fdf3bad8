"""azproxy with 1 and with 2 workers under wrk, in alternating rounds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict

from ..context import Bench, Skip
from ..procfs import busy_pct, machine_jiffies
from ..results import Row, check, ratio
from ..services import start_azproxy
from ..targets import AZPROXY, DIRECT, azproxy_target
from ..wrk import WrkResult, run_wrk

__all__ = ["workers_c50"]

WORKERS = 2  # 1 worker against this many


async def workers_c50(bench: Bench) -> list[Row]:
    """Small JSON, 50 connections, through azproxy with 1 and with 2 workers
    (`--workers 2`), in alternating rounds so both see the same noise: the
    throughput a second worker adds. The simulator and wrk run on the same
    machine, so the gain is capped by the cores they leave over; the
    "machine CPU busy" rows show how much room one worker left."""
    bench.require_wrk()
    bench.require_proc()
    one, sim = bench.target(AZPROXY), bench.target(DIRECT)
    if one is None or sim is None:
        raise Skip("needs the azproxy and direct targets")
    service = start_azproxy(
        bench.services, sim.port, ["--workers", str(WORKERS)], name="azproxy-workers"
    )
    two = azproxy_target(service, f"azproxy-{WORKERS}-workers")
    rounds = 1 if bench.options.quick else 2
    section = f"workers: non-stream JSON, c50 (wrk, {rounds} rounds each)"
    results: dict[str, list[WrkResult]] = {one.name: [], two.name: []}
    busy: dict[str, list[float]] = {one.name: [], two.name: []}
    try:
        for _ in range(rounds):
            for target in (one, two):
                before = machine_jiffies()
                results[target.name].append(await run_wrk(bench, target, 50))
                busy[target.name].append(busy_pct(before, machine_jiffies()))
    finally:
        bench.services.stop(service)
    bench.raw["workers_c50"] = {
        name: {"wrk": [asdict(r) for r in runs], "machine_busy_pct": busy[name]}
        for name, runs in results.items()
    }

    def mean(name: str, get: Callable[[WrkResult], float | None]) -> float | None:
        values = [v for v in map(get, results[name]) if v is not None]
        return sum(values) / len(values) if values else None

    def rows(
        metric: str, unit: str, get: Callable[[WrkResult], float | None]
    ) -> list[Row]:
        return [
            Row(section, f"{metric}, {label}", unit, {AZPROXY: mean(t.name, get)})
            for label, t in (("1 worker", one), (f"{WORKERS} workers", two))
        ]

    gain = ratio(
        mean(two.name, lambda r: r.requests_per_s),
        mean(one.name, lambda r: r.requests_per_s),
    )
    errors = sum(r.errors for runs in results.values() for r in runs)
    return [
        *(
            # Near 100 with one worker: no core left for a second one to use.
            Row(
                section,
                f"machine CPU busy, {label}",
                "%",
                {AZPROXY: sum(busy[t.name]) / len(busy[t.name])},
            )
            for label, t in (("1 worker", one), (f"{WORKERS} workers", two))
        ),
        *rows("requests/s", "req/s", lambda r: r.requests_per_s),
        Row(
            section,
            f"requests/s gain, {WORKERS} workers / 1",
            "x",
            {AZPROXY: gain},
            ratio=False,
            # Here the simulator and wrk share the cores: see the docstring.
            target="> 1x",
            verdict=check(gain, lambda v: v > 1.0),
        ),
        *rows("latency p50", "ms", lambda r: r.p50_ms),
        *rows("latency p99", "ms", lambda r: r.p99_ms),
        *rows("server CPU per request", "ms", lambda r: r.cpu_ms_per_request),
        Row(section, "errors (both)", "count", {AZPROXY: errors}, ratio=False),
    ]

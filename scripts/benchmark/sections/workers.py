"""azproxy with 1 and with 2 workers under wrk, beside the other targets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict

from ..context import Bench, Skip
from ..results import Row, check, ratio
from ..services import start_azproxy
from ..targets import AZPROXY, DIRECT, FLOOR, azproxy_target
from ..wrk import WrkResult, run_wrk

__all__ = ["workers_c50"]

WORKERS = 2  # 1 worker against this many
PerName = Callable[[str], float | None]  # a figure for the target of that name


async def workers_c50(bench: Bench) -> list[Row]:
    """Small JSON, 50 connections, through azproxy with 1 and with 2 workers
    (`--workers 2`), beside the other targets (each one process: the "1
    worker" rows), in alternating rounds so all see the same noise: the
    throughput a second worker adds. The simulator and wrk run on the same
    machine, so the gain is capped by the cores they leave over; the
    "machine CPU busy" rows show how much room one worker left."""
    bench.require_wrk()
    bench.require_proc()
    if bench.target(AZPROXY) is None or (sim := bench.target(DIRECT)) is None:
        raise Skip("needs the azproxy and direct targets")
    service = start_azproxy(
        bench.services, sim.port, ["--workers", str(WORKERS)], name="azproxy-workers"
    )
    two = azproxy_target(service, f"azproxy-{WORKERS}-workers")
    rounds = 1 if bench.options.quick else 2
    # The others first, as in the other sections, then 2 workers, each round.
    results: dict[str, list[WrkResult]] = {t.name: [] for t in [*bench.targets, two]}
    try:
        for _ in range(rounds):
            for target in (*bench.targets, two):
                results[target.name].append(await run_wrk(bench, target, 50))
    finally:
        bench.services.stop(service)
    bench.raw["workers_c50"] = {
        name: {
            "wrk": [asdict(r) for r in runs],
            "machine_busy_pct": [r.machine_busy_pct for r in runs],
        }
        for name, runs in results.items()
    }
    section = f"workers: non-stream JSON, c50 (wrk, {rounds} rounds each)"
    return _rows(section, results, [t.name for t in bench.targets], two.name)


def _rows(
    section: str, results: dict[str, list[WrkResult]], single: list[str], two: str
) -> list[Row]:
    """Each figure's mean over the rounds: a row for the targets with one
    worker (or one process), and one for azproxy with WORKERS."""

    def mean(name: str, get: Callable[[WrkResult], float | None]) -> float | None:
        values = [v for v in map(get, results.get(name, [])) if v is not None]
        return sum(values) / len(values) if values else None

    def mean_of(get: Callable[[WrkResult], float | None]) -> PerName:
        return lambda name: mean(name, get)

    def rows(
        metric: str, unit: str, value: PerName, as_ratio: bool = True
    ) -> list[Row]:
        return [
            Row(
                section,
                f"{metric}, 1 worker",
                unit,
                {name: value(name) for name in single},
                ratio=as_ratio,
            ),
            Row(
                section,
                f"{metric}, {WORKERS} workers",
                unit,
                {AZPROXY: value(two)},
                ratio=as_ratio,
            ),
        ]

    def errors(name: str) -> float:
        return sum(r.errors for r in results[name])

    rps_one = mean(AZPROXY, lambda r: r.requests_per_s)
    rps_two = mean(two, lambda r: r.requests_per_s)
    rps_floor = mean(FLOOR, lambda r: r.requests_per_s)
    gain = ratio(rps_two, rps_one)
    return [
        # Near 100 with one worker: no core left for a second one to use.
        *rows("machine CPU busy", "%", mean_of(lambda r: r.machine_busy_pct), False),
        *rows(
            "machine CPU busy outside the bench",
            "%",
            mean_of(lambda r: r.outside_busy_pct),
            False,
        ),
        *rows("requests/s", "req/s", mean_of(lambda r: r.requests_per_s)),
        Row(
            section,
            f"requests/s gain, {WORKERS} workers / 1",
            "x",
            {AZPROXY: gain},
            ratio=False,
            # Here the simulator and wrk share the cores: see workers_c50.
            target="> 1x",
            verdict=check(gain, lambda v: v > 1.0),
        ),
        *(
            Row(
                section,
                f"azproxy req/s / floor req/s, {label}",
                "x",
                {AZPROXY: ratio(rps, rps_floor)},
                ratio=False,
            )
            for label, rps in (("1 worker", rps_one), (f"{WORKERS} workers", rps_two))
        ),
        *rows("latency p50", "ms", mean_of(lambda r: r.p50_ms)),
        *rows("latency p99", "ms", mean_of(lambda r: r.p99_ms)),
        *rows("server CPU per request", "ms", mean_of(lambda r: r.cpu_ms_per_request)),
        *rows("errors", "count", errors, False),
    ]

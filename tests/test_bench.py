"""scripts/benchmark: the command line, the section registry, the machine-load
accounting, and the rows the throughput sections build (wrk faked out).

Nothing here measures performance: the numbers are made up, and the tests
check where they end up in the report.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from benchmark import cli, runner
from benchmark.context import Bench, Options, Skip
from benchmark.procfs import CLK_TCK, Busy, LoadSample, load_sample, proc_available
from benchmark.report import column_names, render_table, write_json
from benchmark.results import Row, SectionRun
from benchmark.sections import SECTIONS, floor, limits, nonstream, workers
from benchmark.services import Service, Services
from benchmark.targets import AZPROXY, DIRECT, FLOOR, NGINX, TARGET_ORDER, Target
from benchmark.wrk import WrkResult, parse_wrk

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench.py"

WRK_OUTPUT = """\
Running 2s test @ http://127.0.0.1:1234/v1/chat/completions
  1 threads and 50 connections
  Latency Distribution
     50%    5.20ms
     75%    7.10ms
     90%  850.00us
     99%    1.20s
  8000 requests in 2.00s, 3.10MB read
  Non-2xx or 3xx responses: 3
Requests/sec:   4000.00
"""


def make_bench(tmp_path: Path, only: tuple[str, ...] = ()) -> Bench:
    options = Options(
        quick=True, duration_s=1, warmup_s=1, stream_rounds=1, json_out=None, only=only
    )
    targets = [
        Target(name, 1, "/", {}, list, streams=name != FLOOR) for name in TARGET_ORDER
    ]
    return Bench(options, Services(tmp_path), targets, "wrk", tmp_path)


def wrk_result(rps: float, cpu_ms: float, busy: float, outside: float) -> WrkResult:
    return WrkResult(
        requests=int(rps * 2),
        duration_s=2.0,
        requests_per_s=rps,
        p50_ms=1000 / rps,
        p75_ms=1000 / rps,
        p90_ms=1000 / rps,
        p99_ms=2000 / rps,
        socket_errors=0,
        non_2xx=0,
        cpu_ms_per_request=cpu_ms,
        machine_busy_pct=busy,
        outside_busy_pct=outside,
    )


# Made-up results: azproxy at 0.6x the floor's throughput, 1.5x its CPU.
RESULTS = {
    DIRECT: wrk_result(8000, 0.10, 60, 5),
    AZPROXY: wrk_result(2400, 0.30, 100, 30),
    FLOOR: wrk_result(4000, 0.20, 95, 20),
    NGINX: wrk_result(6000, 0.05, 90, 10),
}


def by_metric(rows: list[Row]) -> dict[str, dict[str, float | None]]:
    return {row.metric: row.values for row in rows}


def test_the_entry_point_lists_every_section_and_refuses_unknown_ones() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert all(name in done.stdout for name in SECTIONS)
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--only", "nonstream_c1,nosuch"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "no section named nosuch" in done.stderr


def test_only_selects_sections_by_their_registered_names() -> None:
    options = cli.parse_args(["--quick", "--only", "workers_c50, nonstream_c1"])
    assert options.only == ("workers_c50", "nonstream_c1")
    assert list(SECTIONS)[:2] == ["nonstream_c1", "nonstream_c50"]


def test_parse_wrk_reads_every_figure_in_milliseconds() -> None:
    result = parse_wrk(WRK_OUTPUT)
    assert (result.requests, result.requests_per_s, result.duration_s) == (
        8000,
        4000.0,
        2.0,
    )
    assert (result.p50_ms, result.p90_ms, result.p99_ms) == (5.2, 0.85, 1200.0)
    assert (result.non_2xx, result.socket_errors, result.errors) == (3, 0, 3)


def test_busy_splits_the_machine_into_the_bench_and_the_rest() -> None:
    before = LoadSample(machine_busy=1000, machine_total=4000, bench=300)
    after = LoadSample(machine_busy=1150, machine_total=4200, bench=400)
    assert Busy.between(before, after) == Busy(machine_pct=75.0, outside_pct=25.0)
    # The clocks are read a moment apart: never a negative share.
    more_bench = dataclasses.replace(after, bench=460)
    assert Busy.between(before, more_bench).outside_pct == 0.0
    assert Busy.between(before, before) == Busy(0.0, 0.0)


@pytest.mark.skipif(not proc_available(), reason="needs Linux /proc")
def test_the_bench_counts_its_descendants_also_once_reaped() -> None:
    # A grandchild burns 0.3 s of CPU and both end before the second sample:
    # a server stopped in the middle of a section still counts as the bench.
    burn = (
        "import time\nt = time.process_time()\n"
        "while time.process_time() - t < 0.3: pass"
    )
    child = f"import subprocess, sys\nsubprocess.run([sys.executable, '-c', {burn!r}])"
    before = load_sample()
    subprocess.run([sys.executable, "-c", child], check=True)
    after = load_sample()
    bench_ticks = after.bench - before.bench
    assert bench_ticks >= 0.25 * CLK_TCK
    # The same unit as the machine's counters, which include it.
    assert after.machine_busy - before.machine_busy >= 0.5 * bench_ticks


async def test_nonstream_sections_report_the_floor_and_the_machine_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def fake_wrk_all(bench: Bench, connections: int, key: str) -> Any:
        return {t.name: RESULTS[t.name] for t in bench.targets}

    monkeypatch.setattr(nonstream, "wrk_all", fake_wrk_all)
    bench = make_bench(tmp_path)
    c50 = await nonstream.nonstream_c50(bench)
    rows = by_metric(c50)
    assert rows["requests/s"] == {n: r.requests_per_s for n, r in RESULTS.items()}
    assert rows["azproxy req/s / floor req/s"] == {AZPROXY: pytest.approx(0.6)}
    assert rows["azproxy CPU per request / floor's"] == {AZPROXY: pytest.approx(1.5)}
    gate = next(r for r in c50 if r.metric == "azproxy CPU per request / floor's")
    assert (gate.target, gate.verdict) == ("<= 1.2x", False)
    assert rows["machine CPU busy"] == {DIRECT: 60, AZPROXY: 100, FLOOR: 95, NGINX: 90}
    assert rows["machine CPU busy outside the bench"][FLOOR] == 20

    rows = by_metric(await nonstream.nonstream_c1(bench))
    assert rows["azproxy req/s / floor req/s"] == {AZPROXY: pytest.approx(0.6)}
    assert set(rows["latency p50"]) == set(TARGET_ORDER)
    assert rows["machine CPU busy outside the bench"][AZPROXY] == 30


@pytest.mark.skipif(not proc_available(), reason="needs Linux /proc")
async def test_the_floor_gate_is_the_median_of_side_by_side_rounds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Three rounds (--quick), azproxy then the floor in each. The second
    # round ran while someone else loaded the machine: both figures doubled,
    # their ratio did not. One slow azproxy run (round 3) moves a mean of
    # the rounds, not their median.
    cpu = {AZPROXY: [0.25, 0.50, 0.40], FLOOR: [0.20, 0.40, 0.20]}
    runs: list[str] = []

    async def fake_run_wrk(bench: Bench, target: Target, connections: int) -> Any:
        assert connections == 50
        index = runs.count(target.name)
        runs.append(target.name)
        return wrk_result(1000.0 / (index + 1), cpu[target.name][index], 90, index)

    monkeypatch.setattr(floor, "run_wrk", fake_run_wrk)
    rows = by_metric(await floor.relay_floor(make_bench(tmp_path)))
    assert runs == [AZPROXY, FLOOR] * 3
    assert rows["azproxy / bare relay, CPU per request"] == {
        AZPROXY: pytest.approx(1.25)  # of 1.25, 1.25, 2.0
    }
    assert rows["azproxy CPU per request"] == {AZPROXY: pytest.approx(0.40)}
    assert rows["bare aiohttp relay CPU per request"] == {AZPROXY: pytest.approx(0.20)}
    assert rows["azproxy / bare relay, req/s (not a gate)"] == {AZPROXY: 1.0}
    assert rows["machine CPU busy outside the bench"] == {AZPROXY: 1}


async def test_workers_section_runs_every_target_beside_two_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    two_workers = RESULTS[AZPROXY].requests_per_s * 1.5
    order: list[str] = []

    async def fake_run_wrk(bench: Bench, target: Target, connections: int) -> Any:
        order.append(target.name)
        if target.name.startswith(f"{AZPROXY}-"):
            return wrk_result(two_workers, 0.35, 100, 0)
        return RESULTS[target.name]

    def fake_start_azproxy(*args: Any, **kwargs: Any) -> Service:
        return Service("azproxy-workers", None, tmp_path / "log", 2)  # type: ignore[arg-type]

    bench = make_bench(tmp_path)
    monkeypatch.setattr(workers, "run_wrk", fake_run_wrk)
    monkeypatch.setattr(workers, "start_azproxy", fake_start_azproxy)
    stopped: list[Service] = []
    monkeypatch.setattr(bench.services, "stop", stopped.append)
    rows = by_metric(await workers.workers_c50(bench))
    assert order == [*TARGET_ORDER, "azproxy-2-workers"]  # --quick: one round
    assert [s.name for s in stopped] == ["azproxy-workers"]
    assert rows["requests/s, 1 worker"] == {
        n: r.requests_per_s for n, r in RESULTS.items()
    }
    assert rows["requests/s, 2 workers"] == {AZPROXY: two_workers}
    assert rows["azproxy req/s / floor req/s, 1 worker"] == {
        AZPROXY: pytest.approx(0.6)
    }
    assert rows["azproxy req/s / floor req/s, 2 workers"] == {
        AZPROXY: pytest.approx(0.9)
    }
    assert rows["machine CPU busy outside the bench, 1 worker"] == {
        n: r.outside_busy_pct for n, r in RESULTS.items()
    }


async def test_limits_section_compares_two_keys_of_one_azproxy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, dict[str, str]]] = []

    async def fake_run_wrk(bench: Bench, target: Target, connections: int) -> Any:
        seen.append((target.name, target.headers))
        if target.name == FLOOR:
            return wrk_result(4000, 0.20, 100, 40)
        limited = target.name.endswith("limits")
        return wrk_result(2000, 0.33 if limited else 0.30, 100, 40)

    started: list[list[str]] = []

    def fake_start_azproxy(
        services: Services, port: int, args: list[str], **_: Any
    ) -> Service:
        started.append(args)
        return Service("azproxy-limits", None, tmp_path / "log", 2)  # type: ignore[arg-type]

    bench = make_bench(tmp_path)
    monkeypatch.setattr(limits, "run_wrk", fake_run_wrk)
    monkeypatch.setattr(limits, "start_azproxy", fake_start_azproxy)
    monkeypatch.setattr(bench.services, "stop", lambda service: None)
    rows = await limits.limits_cost(bench)
    # One process, two keys, each first in turn (--quick: two rounds), the
    # floor relay after each pair.
    plain = ("azproxy-key", f"Bearer {limits.PLAIN_KEY}")
    limited = ("azproxy-key-limits", f"Bearer {limits.LIMITED_KEY}")
    assert [(n, h.get("Authorization")) for n, h in seen] == [
        plain,
        limited,
        (FLOOR, None),
        limited,
        plain,
        (FLOOR, None),
    ]
    config = (tmp_path / "limits.toml").read_text()
    assert started == [["--config", str(tmp_path / "limits.toml")]]
    assert 'name = "limited", rpm = ' in config and "token_quota = " in config
    gate = next(r for r in rows if r.metric == "CPU per request, with limits / without")
    assert gate.values == {AZPROXY: pytest.approx(1.1)}
    assert (gate.target, gate.verdict) == ("< 1.1x", False)
    assert by_metric(rows)["machine CPU busy, key with limits"] == {AZPROXY: 100}
    assert by_metric(rows)["bare aiohttp relay CPU per request"] == {AZPROXY: 0.2}
    assert by_metric(rows)["key without limits / bare relay, CPU per request"] == {
        AZPROXY: pytest.approx(1.5)
    }
    assert by_metric(rows)["key with limits / bare relay, CPU per request"] == {
        AZPROXY: pytest.approx(1.65)
    }


async def test_each_section_run_is_timed_with_the_machine_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def section(rows: list[Row] | Exception) -> Callable[[Bench], Any]:
        async def run(bench: Bench) -> list[Row]:
            if isinstance(rows, Exception):
                raise rows
            return rows

        return run

    async def no_preflight(bench: Bench) -> None:
        return None

    row = Row("a title", "a metric", "ms", {AZPROXY: 1.0})
    registry = {
        "measured": section([row]),
        "skipped": section(Skip("no tool")),
        "broken": section(RuntimeError("boom")),
        "unchosen": section([row]),
    }
    monkeypatch.setattr(runner, "SECTIONS", registry)
    monkeypatch.setattr(runner, "_preflight", no_preflight)
    bench = make_bench(tmp_path, only=("measured", "skipped", "broken"))
    runs, failed = await runner.run_sections(bench)
    assert failed
    assert [(r.name, r.rows) for r in runs] == [("measured", [row])]
    assert (runs[0].busy is not None) == proc_available()
    assert bench.notes == [
        "skipped: skipped: no tool",
        "FAILED: broken: RuntimeError: boom",
    ]


def test_the_report_shows_the_floor_column_and_each_sections_load(
    tmp_path: Path,
) -> None:
    rows = [
        Row(
            "c50",
            "requests/s",
            "req/s",
            {n: r.requests_per_s for n, r in RESULTS.items()},
        ),
        Row("streams", "gap", "ms", {DIRECT: 5.0, AZPROXY: 5.0, NGINX: 5.0}),
    ]
    runs = [
        SectionRun("nonstream_c50", rows[:1], 12.2, Busy(88.2, 26.0)),
        SectionRun("streams_c50", rows[1:], 4.0, None),
    ]
    names = column_names(runs)
    assert names == [DIRECT, AZPROXY, FLOOR, NGINX]
    lines = render_table(runs, names).splitlines()
    assert lines[0].split()[2:6] == names
    assert "4000 (0.50x)" in lines[3]  # the floor's req/s, its ratio to direct
    assert (
        lines[4]
        == "  [nonstream_c50: 12 s; machine CPU 88% busy, 26% outside the bench]"
    )
    assert lines[-1] == "  [streams_c50: 4 s]"  # no /proc: no load

    out = tmp_path / "bench.json"
    write_json(out, {"cpus": 2}, runs, make_bench(tmp_path))
    document = json.loads(out.read_text())
    assert document["sections"][0] == {
        "name": "nonstream_c50",
        "seconds": 12.2,
        "machine_busy_pct": 88.2,
        "outside_busy_pct": 26.0,
    }
    assert [r["metric"] for r in document["rows"]] == ["requests/s", "gap"]

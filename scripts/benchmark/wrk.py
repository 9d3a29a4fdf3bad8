"""wrk, the load generator for non-streamed requests: one run, its parsed
report, and the server CPU and machine load read around it."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

from .context import Bench, progress
from .procfs import Busy, cpu_seconds, load_sample, proc_available
from .results import Row
from .targets import SMALL_BODY, Target

__all__ = [
    "WrkResult",
    "busy_rows",
    "parse_wrk",
    "per_target",
    "run_wrk",
    "wrk_all",
]

# One wrk thread is plenty for a Python server and leaves the second core to
# the servers under test (wrk needs threads <= connections anyway).
WRK_THREADS = 1
R = TypeVar("R")


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    requests_per_s: float
    p50_ms: float
    p75_ms: float
    p90_ms: float
    p99_ms: float
    socket_errors: int
    non_2xx: int
    cpu_ms_per_request: float | None = None  # the target's server processes
    machine_busy_pct: float | None = None  # all CPUs, during the measured run
    outside_busy_pct: float | None = None  # of it, not the bench's processes

    @property
    def errors(self) -> int:
        return self.socket_errors + self.non_2xx


_TIME_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_PERCENTILE_RE = re.compile(r"^\s*(50|75|90|99)%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.M)
_REQUESTS_RE = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", re.M)
_RPS_RE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_SOCKET_ERRORS_RE = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"
)
_NON_2XX_RE = re.compile(r"Non-2xx or 3xx responses: (\d+)")


def parse_wrk(output: str) -> WrkResult:
    """Parse wrk's text report (run with --latency)."""
    percentiles = {
        int(q): float(value) * _TIME_UNITS_MS[unit]
        for q, value, unit in _PERCENTILE_RE.findall(output)
    }
    requests = _REQUESTS_RE.search(output)
    rps = _RPS_RE.search(output)
    if requests is None or rps is None or len(percentiles) != 4:
        raise ValueError(f"unexpected wrk output:\n{output}")
    socket_errors = _SOCKET_ERRORS_RE.search(output)
    non_2xx = _NON_2XX_RE.search(output)
    return WrkResult(
        requests=int(requests.group(1)),
        duration_s=float(requests.group(2)) * _TIME_UNITS_MS[requests.group(3)] / 1e3,
        requests_per_s=float(rps.group(1)),
        p50_ms=percentiles[50],
        p75_ms=percentiles[75],
        p90_ms=percentiles[90],
        p99_ms=percentiles[99],
        socket_errors=sum(map(int, socket_errors.groups())) if socket_errors else 0,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
    )


def _lua_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _wrk_script(bench: Bench, target: Target) -> Path:
    path = bench.tmp / f"wrk-{target.name}.lua"
    lines = ['wrk.method = "POST"', f"wrk.body = {_lua_string(SMALL_BODY)}"]
    headers = {"Content-Type": "application/json", **target.headers}
    lines += [
        f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items()
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


async def _run_wrk_once(
    bench: Bench, target: Target, connections: int, duration_s: int
) -> WrkResult:
    argv = [
        bench.require_wrk(),
        f"-t{min(WRK_THREADS, connections)}",
        f"-c{connections}",
        f"-d{duration_s}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(_wrk_script(bench, target)),
        target.url,
    ]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), duration_s + 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {err.decode().strip()}")
    return parse_wrk(out.decode())


async def run_wrk(bench: Bench, target: Target, connections: int) -> WrkResult:
    """A warm-up run, then the measured run with the server's CPU time and
    the machine's load read around it."""
    options = bench.options
    progress(f"wrk c{connections} -> {target.name}")
    await _run_wrk_once(bench, target, connections, options.warmup_s)
    if not proc_available():
        return await _run_wrk_once(bench, target, connections, options.duration_s)
    pids = target.pids()
    cpu_before, load_before = cpu_seconds(pids), load_sample()
    result = await _run_wrk_once(bench, target, connections, options.duration_s)
    busy = Busy.between(load_before, load_sample())
    cpu_s = cpu_seconds(pids) - cpu_before
    return dataclasses.replace(
        result,
        cpu_ms_per_request=cpu_s * 1e3 / result.requests if result.requests else None,
        machine_busy_pct=busy.machine_pct,
        outside_busy_pct=busy.outside_pct,
    )


async def wrk_all(bench: Bench, connections: int, key: str) -> dict[str, WrkResult]:
    """One run per target, in order; the results also go to --json as `key`."""
    bench.require_wrk()
    results = {t.name: await run_wrk(bench, t, connections) for t in bench.targets}
    bench.raw[key] = {name: asdict(r) for name, r in results.items()}
    for name, r in results.items():
        if r.errors:
            bench.note(
                f"warning: {key} via {name}: {r.non_2xx} non-2xx responses, "
                f"{r.socket_errors} socket errors out of {r.requests} requests"
            )
    return results


def per_target(
    results: dict[str, R], get: Callable[[R], float | None]
) -> dict[str, float | None]:
    return {name: get(r) for name, r in results.items()}


def busy_rows(section: str, results: dict[str, WrkResult]) -> list[Row]:
    """How busy the machine was during each target's run: near 100 % means no
    core was left over; the part outside the bench is the noise."""
    return [
        Row(
            section,
            "machine CPU busy",
            "%",
            per_target(results, lambda r: r.machine_busy_pct),
            ratio=False,
        ),
        Row(
            section,
            "machine CPU busy outside the bench",
            "%",
            per_target(results, lambda r: r.outside_busy_pct),
            ratio=False,
        ),
    ]

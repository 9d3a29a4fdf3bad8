"""The command line: options, starting the targets, running the sections,
printing the report, and stopping everything it started, whatever happens."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Sequence
from pathlib import Path
from types import FrameType
from typing import TypeVar

from .context import Bench, Options
from .report import LEGEND, column_names, metadata, render_table, write_json
from .runner import run_sections
from .sections import SECTIONS
from .services import (
    LOOPBACK,
    Services,
    StartError,
    find_tool,
    start_azproxy,
    start_floor,
    start_nginx,
    start_simulator,
)
from .targets import (
    AZURE_URL_PATH,
    azproxy_target,
    direct_target,
    floor_target,
    nginx_target,
)

__all__ = ["main"]

T = TypeVar("T")


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        description="Benchmark azproxy against the simulator direct, "
        "a bare aiohttp relay and nginx."
    )
    parser.add_argument(
        "--quick", action="store_true", help="shorter runs (about 30 s in all)"
    )
    parser.add_argument(
        "--duration",
        type=int,
        metavar="S",
        help="seconds per measured wrk run (default 5, or 2 with --quick)",
    )
    parser.add_argument(
        "--json", type=Path, metavar="OUT", help="also write every number to OUT"
    )
    parser.add_argument(
        "--only",
        metavar="SECTIONS",
        help="comma list of sections to run: " + ", ".join(SECTIONS),
    )
    parser.add_argument(
        "--baseline-src",
        type=Path,
        metavar="PATH",
        help="the hostile section also measures the azproxy of this source "
        "tree (another checkout), in a baseline column",
    )
    args = parser.parse_args(argv)
    if args.duration is not None and args.duration < 1:
        parser.error("--duration must be at least 1 second")
    baseline = args.baseline_src
    if baseline is not None:
        baseline = baseline.resolve()
        if not (baseline / "azproxy" / "__init__.py").is_file():
            parser.error(f"--baseline-src: no azproxy package in {baseline}")
    only = tuple(n.strip() for n in (args.only or "").split(",") if n.strip())
    unknown = set(only) - set(SECTIONS)
    if unknown:
        parser.error(f"--only: no section named {', '.join(sorted(unknown))}")
    duration = args.duration or (2 if args.quick else 5)
    return Options(
        quick=args.quick,
        duration_s=duration,
        warmup_s=1 if args.quick else 2,
        stream_rounds=2,
        json_out=args.json,
        only=only,
        baseline_src=baseline,
    )


def _start_targets(bench: Bench, nginx: str | None) -> None:
    """The simulator and azproxy, or no run; the floor and nginx where they
    start. In the table's order."""
    services = bench.services
    sim = start_simulator(services)
    bench.targets.append(direct_target(sim))
    bench.targets.append(azproxy_target(start_azproxy(services, sim.port)))
    try:
        upstream = f"http://{LOOPBACK}:{sim.port}{AZURE_URL_PATH}"
        bench.targets.append(floor_target(start_floor(services, upstream)))
    except StartError as exc:
        bench.note(f"skipped: the floor relay did not start: {exc}")
    if nginx is None:
        bench.note("skipped: nginx not found: no nginx column")
        return
    try:
        bench.targets.append(nginx_target(start_nginx(services, nginx, sim.port)))
    except StartError as exc:
        bench.note(f"skipped: nginx did not start: {exc}")


def _run_async(main: Awaitable[T]) -> T:
    async def wrapper() -> T:
        return await main

    try:
        import uvloop
    except ImportError:
        return asyncio.run(wrapper())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(wrapper())


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # stop the servers on kill, too
    started = time.monotonic()
    wrk, nginx = find_tool("wrk"), find_tool("nginx")
    meta = metadata(options, wrk, nginx)
    print(
        f"azproxy bench: {meta['cpus']} CPUs, load {meta['loadavg_at_start']}, "
        f"wrk runs {options.warmup_s} s warm-up + {options.duration_s} s",
        flush=True,
    )
    tmp = Path(tempfile.mkdtemp(prefix="azproxy-bench."))
    services = Services(tmp)
    bench = Bench(options, services, [], wrk, tmp)
    try:
        _start_targets(bench, nginx)
        runs, failed = _run_async(run_sections(bench))
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the servers", file=sys.stderr, flush=True)
        return 130
    except StartError as exc:
        print(f"bench: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the cleanup finish
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            services.stop_all()
            shutil.rmtree(tmp, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)

    print()
    print(render_table(runs, column_names(runs)) if runs else "no measurements ran")
    print(f"\n{LEGEND}")
    if bench.notes:
        print("\nnotes:")
        for text in bench.notes:
            print(f"  {text}")
    elapsed = time.monotonic() - started
    print(f"\ntotal time {elapsed:.0f} s")
    if options.json_out is not None:
        meta["elapsed_s"] = elapsed
        write_json(options.json_out, meta, runs, bench)
        print(f"wrote {options.json_out}")
    return 1 if failed else 0

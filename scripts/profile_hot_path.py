#!/usr/bin/env python3
"""Profile the hot path: azproxy beside the bare aiohttp floor, per request.

    python scripts/profile_hot_path.py [--requests N] [--connections C]
        [--rounds R] [--callgrind] [--py-spy] [--top K] [--out DIR]
        [--baseline-src PATH]

Both relays serve the bench's request (a small non-streamed chat; azproxy
with a pass-through token) against one simulator, azproxy as the bench runs
it: access log on, written to a file (its stdout), metrics on. Every figure
is the relay process's own, per request, after a warm-up:

- CPU (always): utime + stime from /proc around N requests, in µs; the
  median of R rounds that alternate between the two. Noisy on a shared
  machine (the share of the machine others used is printed beside it).
  With --baseline-src, another checkout's azproxy joins the rounds: a change
  measured before and after, side by side, each as a ratio to the floor.
- --callgrind: instructions, counted by valgrind's callgrind (switched on
  by callgrind_control after the warm-up, so start-up is not counted), and
  the K C functions with the most, inclusive. The same code and requests
  give the same count whatever else the machine does: compare a change by
  this, not by the CPU times. About 50x slower: keep N near 2,000.
- --py-spy: where the Python time goes: py-spy samples during N requests,
  the K Python functions with the most samples, self and inclusive, in µs
  per request (the share of samples times the CPU measured meanwhile).

Files (callgrind dumps, py-spy samples, the servers' logs) stay in --out
(default: a new temporary folder), for callgrind_annotate and the like.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmark.procfs import Busy, cpu_seconds, load_sample
from benchmark.services import (
    LOOPBACK,
    Service,
    Services,
    start_azproxy,
    start_floor,
    start_simulator,
)
from benchmark.targets import (
    AZURE_URL_PATH,
    OPENAI_PATH,
    PASSTHROUGH_TOKEN,
    SMALL_BODY,
)

__all__ = [
    "Measured",
    "build_request",
    "differences",
    "main",
    "parse_callgrind_functions",
    "parse_callgrind_total",
    "read_line_counts",
    "read_response",
    "sample_shares",
    "send_requests",
]

AZPROXY, FLOOR, BASELINE = "azproxy", "floor", "baseline"
# Under valgrind Python starts (and imports aiohttp) 20-50x slower.
VALGRIND_READY_S = 300.0
# Requests made once callgrind counts, before its counters are zeroed: the
# instrumented code is translated then, not during the measured requests.
CALLGRIND_SETTLE = 200
PY_SPY_RATE = 1000  # samples per second


# ---------------------------------------------------------------------------
# The load: keep-alive connections, one request at a time on each


def build_request(path: str, headers: dict[str, str], body: str) -> bytes:
    """One HTTP/1.1 POST with a JSON body, as wrk sends the bench's."""
    encoded = body.encode()
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {LOOPBACK}",
        "Content-Type: application/json",
        f"Content-Length: {len(encoded)}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + encoded


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One response with a Content-Length (both relays send one for a small
    JSON answer): its status and body."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    found = re.search(rb"\r\ncontent-length:\s*(\d+)", head, re.IGNORECASE)
    if found is None:
        raise RuntimeError(f"no Content-Length in {head[:200]!r}")
    return status, await reader.readexactly(int(found.group(1)))


async def _one_connection(port: int, request: bytes, count: int) -> None:
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        for _ in range(count):
            writer.write(request)
            status, body = await read_response(reader)
            if status != 200:
                raise RuntimeError(f"HTTP {status}: {body[:300]!r}")
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def send_requests(
    port: int, request: bytes, total: int, connections: int
) -> None:
    """`total` requests over `connections` keep-alive connections."""
    per, extra = divmod(total, connections)
    counts = [per + (index < extra) for index in range(connections)]
    async with asyncio.TaskGroup() as group:
        for count in filter(None, counts):
            group.create_task(_one_connection(port, request, count))


# ---------------------------------------------------------------------------
# The relays


@dataclass
class Relay:
    name: str
    service: Service
    request: bytes

    @property
    def pid(self) -> int:
        return self.service.popen.pid

    def load(self, total: int, connections: int) -> None:
        asyncio.run(send_requests(self.service.port, self.request, total, connections))


def _start(
    services: Services,
    name: str,
    upstream_port: int,
    wrapper: Sequence[str] = (),
    env: dict[str, str] | None = None,
    src: Path | None = None,
) -> Relay:
    """`src`: for BASELINE, the source tree whose azproxy it runs."""
    ready_s = VALGRIND_READY_S if wrapper or env else 20.0
    if name in (AZPROXY, BASELINE):
        service = start_azproxy(
            services,
            upstream_port,
            name=name,
            env=env,
            src=src,
            wrapper=wrapper,
            ready_timeout_s=ready_s,
        )
        headers = {"Authorization": f"Bearer {PASSTHROUGH_TOKEN}"}
    else:
        upstream = f"http://{LOOPBACK}:{upstream_port}{AZURE_URL_PATH}"
        service = start_floor(
            services, upstream, wrapper=wrapper, ready_timeout_s=ready_s, env=env
        )
        headers = {}
    return Relay(name, service, build_request(OPENAI_PATH, headers, SMALL_BODY))


@dataclass
class Measured:
    """One relay's figures, per request."""

    cpu_us: list[float] = field(default_factory=list)  # one per round
    outside_pct: list[float] = field(default_factory=list)  # others' share
    instructions: float | None = None
    functions: list[tuple[str, float]] = field(default_factory=list)  # inclusive
    own: dict[str, float] = field(default_factory=dict)  # exclusive, every one
    python_self: list[tuple[str, float]] = field(default_factory=list)  # µs
    python_inclusive: list[tuple[str, float]] = field(default_factory=list)
    lines: dict[str, float] = field(default_factory=dict)  # executed, own
    calls: dict[str, float] = field(default_factory=dict)  # frames entered


def _measure_cpu(relay: Relay, requests: int, connections: int) -> tuple[float, float]:
    """(CPU µs per request of the relay, % of the machine others used)."""
    pids = [relay.pid]
    before, load_before = cpu_seconds(pids), load_sample()
    relay.load(requests, connections)
    busy = Busy.between(load_before, load_sample())
    return (cpu_seconds(pids) - before) * 1e6 / requests, busy.outside_pct


# ---------------------------------------------------------------------------
# callgrind


def _callgrind_control(*args: str) -> None:
    subprocess.run(
        ["callgrind_control", *args], check=True, capture_output=True, timeout=120
    )


_TOTAL_RE = re.compile(r"^(?:summary|totals):\s*(\d+)", re.M)


def parse_callgrind_total(dump: str) -> int:
    """The instructions a callgrind dump counted."""
    found = _TOTAL_RE.search(dump)
    if found is None:
        raise ValueError("no summary or totals line in the callgrind dump")
    return int(found.group(1))


# "  1,234,567 (12.34%)  file:function [object]" in callgrind_annotate's table.
_FUNCTION_RE = re.compile(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(\S.*)$")


def parse_callgrind_functions(annotated: str) -> list[tuple[str, int]]:
    """(function, instructions) from callgrind_annotate's table, in order;
    the program total line is left out. A function is named by its file
    (without the build folder) and name, not by the object it is in."""
    found = []
    for line in annotated.splitlines():
        matched = _FUNCTION_RE.match(line)
        if matched is None or "PROGRAM TOTALS" in line:
            continue
        where = matched.group(2).strip().partition(" [")[0]
        for marker in ("Python-3", "/project/"):  # CPython's, a wheel's build
            if marker in where:
                where = where.partition(marker)[2].partition("/")[2]
        found.append((where, int(matched.group(1).replace(",", ""))))
    return found


def _callgrind(
    services: Services,
    name: str,
    upstream_port: int,
    out: Path,
    requests: int,
    connections: int,
    top: int,
) -> Measured:
    for tool in ("valgrind", "callgrind_control", "callgrind_annotate"):
        if shutil.which(tool) is None:
            raise SystemExit(f"--callgrind needs {tool} (apt-get install valgrind)")
    wrapper = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}/callgrind.{name}.%p",
    ]
    relay = _start(services, name, upstream_port, wrapper)
    relay.load(requests // 4, connections)  # warm-up, not instrumented
    _callgrind_control("--instr=on", str(relay.pid))
    relay.load(CALLGRIND_SETTLE, connections)
    _callgrind_control("--zero", str(relay.pid))
    relay.load(requests, connections)
    _callgrind_control("--dump", str(relay.pid))
    services.stop(relay.service)
    dumps = sorted(out.glob(f"callgrind.{name}.{relay.pid}.*"))
    if not dumps:
        raise RuntimeError(f"callgrind wrote no dump for {name} in {out}")
    dump = dumps[-1]
    measured = Measured()
    measured.instructions = parse_callgrind_total(dump.read_text()) / requests
    inclusive = _annotate(dump, "--inclusive=yes")
    measured.functions = [
        (function, count / requests)
        for function, count in parse_callgrind_functions(inclusive)[:top]
    ]
    for function, count in parse_callgrind_functions(_annotate(dump)):
        measured.own[function] = measured.own.get(function, 0.0) + count / requests
    return measured


def _annotate(dump: Path, *options: str) -> str:
    """callgrind_annotate's table of every function, kept beside the dump."""
    annotated = subprocess.run(
        ["callgrind_annotate", *options, "--threshold=100", str(dump)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    suffix = "inclusive" if options else "self"
    (dump.parent / f"{dump.name}.{suffix}.txt").write_text(annotated)
    return annotated


# ---------------------------------------------------------------------------
# Python lines executed (benchmark/line_counter.py)

LINE_COUNTER = Path(__file__).resolve().parent / "benchmark" / "line_counter.py"
_SITECUSTOMIZE = """\
import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("line_counter", {counter!r})
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
_module.install(Path({out!r}))
"""


def read_line_counts(records: Iterable[str]) -> dict[str, tuple[int, int]]:
    """line_counter's output: (calls, lines) by "function (file:line)", the
    file shortened as py-spy's frames are."""
    found: dict[str, tuple[int, int]] = {}
    for text in records:
        record = json.loads(text)
        where = _function(f"{record['function']} ({record['file']}:0)")
        key = f"{where[:-1]}:{record['line']})"
        calls, lines = found.get(key, (0, 0))
        found[key] = (calls + record["calls"], lines + record["lines"])
    return found


def _lines(
    services: Services,
    name: str,
    upstream_port: int,
    out: Path,
    requests: int,
    connections: int,
    top: int,
) -> Measured:
    counts = out / f"lines.{name}.jsonl"
    started = counts.with_name(counts.name + ".started")
    started.unlink(missing_ok=True)
    site = out / f"site-{name}"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(
        _SITECUSTOMIZE.format(counter=str(LINE_COUNTER), out=str(counts))
    )
    relay = _start(services, name, upstream_port, env={"PYTHONPATH": str(site)})
    relay.load(requests // 4, connections)  # warm-up
    relay.service.popen.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while not started.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not start counting lines")
        time.sleep(0.05)
    relay.load(requests, connections)
    relay.service.popen.send_signal(signal.SIGUSR2)
    time.sleep(1.0)  # the counts are written from the signal handler
    services.stop(relay.service)
    measured = Measured()
    by_function = read_line_counts(counts.read_text().splitlines())
    measured.lines = {f: n / requests for f, (_, n) in by_function.items()}
    measured.calls = {f: c / requests for f, (c, _) in by_function.items()}
    return measured


# ---------------------------------------------------------------------------
# py-spy


def sample_shares(
    raw: Iterable[str],
) -> tuple[Counter[str], Counter[str], int]:
    """From py-spy's raw (collapsed) output: samples per Python function,
    self and inclusive (a function once per stack, however deep it
    recurses), and the samples in all. Frames are "name (file:line)"; the
    line is dropped, so a function's lines count together."""
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw:
        stack, _, count_text = line.rstrip("\n").rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_function(frame) for frame in stack.split(";")]
        total += count
        self_counts[frames[-1]] += count
        for function in set(frames):
            inclusive[function] += count
    return self_counts, inclusive, total


def _function(frame: str) -> str:
    """ "name (path/to/file.py:123)" -> "name (file.py)"; a thread or
    process frame is kept as it is."""
    name, _, where = frame.partition(" (")
    if not where:
        return frame
    path = where.rstrip(")").rpartition(":")[0]
    for marker in ("site-packages/", "/azproxy/", "/scripts/"):
        if marker in path:
            path = path.rpartition(marker)[2]
            if marker != "site-packages/":
                path = marker.strip("/") + "/" + path
            break
    return f"{name} ({path})"


def _py_spy(
    services: Services,
    name: str,
    upstream_port: int,
    out: Path,
    requests: int,
    connections: int,
    top: int,
) -> Measured:
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        raise SystemExit("--py-spy needs py-spy (pip install py-spy)")
    relay = _start(services, name, upstream_port, ())
    relay.load(requests // 4, connections)  # warm-up
    samples = out / f"py-spy.{name}.txt"
    recorder = subprocess.Popen(
        [
            py_spy,
            "record",
            "--pid",
            str(relay.pid),
            "--rate",
            str(PY_SPY_RATE),
            "--format",
            "raw",
            "--output",
            str(samples),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1.0)  # py-spy attaches
        cpu_us, _ = _measure_cpu(relay, requests, connections)
    finally:
        recorder.send_signal(signal.SIGINT)  # py-spy writes what it has
        recorder.wait(60)
    services.stop(relay.service)
    self_counts, inclusive, total = sample_shares(
        samples.read_text().splitlines() if samples.exists() else []
    )
    measured = Measured(cpu_us=[cpu_us])
    if total:
        measured.python_self = [
            (f, cpu_us * n / total) for f, n in self_counts.most_common(top)
        ]
        measured.python_inclusive = [
            (f, cpu_us * n / total) for f, n in inclusive.most_common(top)
        ]
    return measured


# ---------------------------------------------------------------------------
# The report


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _report(results: dict[str, Measured], options: argparse.Namespace) -> None:
    proxy, floor = results[AZPROXY], results[FLOOR]
    print(
        f"\n{options.requests} requests per round over {options.connections} "
        "connections; per request, the relay process only:"
    )
    for label, get, unit in (
        ("CPU (median of rounds)", lambda m: _median(m.cpu_us), "µs"),
        ("instructions (callgrind)", lambda m: m.instructions, ""),
        ("Python lines executed", lambda m: sum(m.lines.values()) or None, ""),
        ("Python frames entered", lambda m: sum(m.calls.values()) or None, ""),
    ):
        mine, theirs = get(proxy), get(floor)
        if mine is None and theirs is None:
            continue
        line = f"  {label:26}"
        for name, value in ((AZPROXY, mine), (FLOOR, theirs)):
            if value is not None:
                line += f"  {name} {value:11,.1f} {unit:2}"
        if mine is not None and theirs is not None:
            line += f"  ratio {mine / theirs:.2f}x  difference {mine - theirs:,.1f}"
        print(line)
    for name, m in results.items():
        if len(m.cpu_us) > 1:
            rounds = ", ".join(f"{v:.0f}" for v in m.cpu_us)
            others = ", ".join(f"{v:.0f}" for v in m.outside_pct)
            print(f"  {name}: CPU µs per round {rounds}; others used {others} %")
    for name in (AZPROXY, BASELINE):
        relay = results.get(name)
        if relay is not None and relay.cpu_us and floor.cpu_us:
            ratios = [a / b for a, b in zip(relay.cpu_us, floor.cpu_us, strict=True)]
            print(
                f"  {name} / floor, CPU per request, round by round: "
                f"{', '.join(f'{r:.2f}' for r in ratios)}; "
                f"median {statistics.median(ratios):.2f}x"
            )
    for name, m in results.items():
        _table(f"{name}: C functions, instructions per request, inclusive", m.functions)
    if proxy.own and floor.own:
        _table(
            "C functions whose own instructions per request differ most "
            "(azproxy minus floor)",
            differences(proxy.own, floor.own)[: options.top],
        )
    for name, m in results.items():
        _table(
            f"{name}: Python lines executed per request, by function",
            sorted(m.lines.items(), key=lambda row: -row[1])[: options.top],
        )
    for name, m in results.items():
        _table(f"{name}: Python functions, µs per request, self", m.python_self)
        _table(
            f"{name}: Python functions, µs per request, inclusive", m.python_inclusive
        )
    print(f"\nfiles: {options.out}")


def differences(
    mine: dict[str, float], theirs: dict[str, float]
) -> list[tuple[str, float]]:
    """Per function, mine minus theirs, the largest differences (either
    way) first."""
    found = [(f, mine.get(f, 0.0) - theirs.get(f, 0.0)) for f in {*mine, *theirs}]
    return sorted(found, key=lambda row: -abs(row[1]))


def _table(title: str, rows: list[tuple[str, float]]) -> None:
    if not rows:
        return
    print(f"\n{title}")
    for function, value in rows:
        print(f"  {value:12,.1f}  {function}")


# ---------------------------------------------------------------------------


def _options(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="azproxy's cost per request beside the bare aiohttp floor."
    )
    parser.add_argument("--requests", type=int, default=5000, metavar="N")
    parser.add_argument("--connections", type=int, default=8, metavar="C")
    parser.add_argument("--rounds", type=int, default=3, metavar="R")
    parser.add_argument("--callgrind", action="store_true")
    parser.add_argument("--py-spy", action="store_true")
    parser.add_argument("--lines", action="store_true")
    parser.add_argument("--top", type=int, default=30, metavar="K")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR")
    parser.add_argument(
        "--baseline-src",
        type=Path,
        default=None,
        metavar="PATH",
        help="also run the azproxy package in PATH (another checkout, such as "
        "`git archive COMMIT | tar -x -C PATH`) in the CPU rounds, as baseline",
    )
    parser.add_argument(
        "--only",
        choices=(AZPROXY, FLOOR),
        default=None,
        help="profile one relay (the CPU rounds still run both)",
    )
    options = parser.parse_args(argv)
    if options.out is None:
        options.out = Path(tempfile.mkdtemp(prefix="azproxy-profile-"))
    options.out.mkdir(parents=True, exist_ok=True)
    return options


def _cpu_rounds(
    services: Services, upstream_port: int, options: argparse.Namespace
) -> dict[str, Measured]:
    names = (AZPROXY, FLOOR) + ((BASELINE,) if options.baseline_src else ())
    results = {name: Measured() for name in names}
    if options.rounds < 1:
        return results
    relays = [
        _start(services, name, upstream_port, (), src=options.baseline_src)
        for name in names
    ]
    for relay in relays:
        relay.load(options.requests // 2, options.connections)  # warm-up
    for _ in range(options.rounds):
        for relay in relays:
            cpu_us, outside = _measure_cpu(relay, options.requests, options.connections)
            results[relay.name].cpu_us.append(cpu_us)
            results[relay.name].outside_pct.append(outside)
    for relay in relays:
        services.stop(relay.service)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    options = _options(argv)
    services = Services(options.out)
    try:
        simulator = start_simulator(services)
        results = _cpu_rounds(services, simulator.port, options)
        profilers: list[Callable[..., Measured]] = []
        if options.callgrind:
            profilers.append(_callgrind)
        if options.py_spy:
            profilers.append(_py_spy)
        if options.lines:
            profilers.append(_lines)
        for profile in profilers:
            for name in (options.only,) if options.only else (AZPROXY, FLOOR):
                found = profile(
                    services,
                    name,
                    simulator.port,
                    options.out,
                    options.requests,
                    options.connections,
                    options.top,
                )
                merged = results[name]
                merged.instructions = found.instructions or merged.instructions
                merged.functions = found.functions or merged.functions
                merged.own = found.own or merged.own
                merged.lines = found.lines or merged.lines
                merged.calls = found.calls or merged.calls
                merged.python_self = found.python_self or merged.python_self
                merged.python_inclusive = (
                    found.python_inclusive or merged.python_inclusive
                )
    finally:
        services.stop_all()
    _report(results, options)
    return 0


if __name__ == "__main__":
    sys.exit(main())

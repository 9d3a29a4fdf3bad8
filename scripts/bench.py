#!/usr/bin/env python3
"""Benchmark azproxy against the simulator direct and against nginx.

One run starts the Azure OpenAI simulator, azproxy and (where installed) nginx
as a plain reverse proxy in front of the simulator, each on a free loopback
port, runs the same bounded load against all three and prints a table with
ratios to direct access. Everything it starts, it stops.

    python scripts/bench.py [--quick] [--duration S] [--json OUT] [--only SECTIONS]

Targets (the columns):
  direct    the simulator itself
  azproxy   OpenAI-style requests through `azproxy serve`
  nginx     Azure-style requests through nginx (proxy_buffering off,
            HTTP/1.1 keepalive upstream), the reference for a lean proxy

Each measurement is a small async function `(Bench) -> list[Row]` listed in
MEASUREMENTS; adding a section means writing one and appending it. Targets
beside the numbers are printed as PASS/MISS and never asserted. Absolute
numbers depend on the machine and its other load; the ratios are the point.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import importlib.metadata
import itertools
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Sequence,
)
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import aiohttp

DEPLOYMENT = "gpt-4o"
API_VERSION = "2024-10-21"
AZURE_PATH = f"/openai/deployments/{DEPLOYMENT}/chat/completions"
AZURE_URL_PATH = f"{AZURE_PATH}?api-version={API_VERSION}"
OPENAI_PATH = "/v1/chat/completions"
PASSTHROUGH_TOKEN = f"bench:{DEPLOYMENT}:bench-key"
MESSAGES = [{"role": "user", "content": "Say hello"}]
SMALL_BODY = json.dumps({"model": DEPLOYMENT, "messages": MESSAGES})
STREAM_BODY = json.dumps({"model": DEPLOYMENT, "messages": MESSAGES, "stream": True})

STREAM_CHUNKS = 100
STREAM_DELAY_MS = 5.0
STREAM_CONCURRENCY = 50
RSS_STREAMS = 200
WORKERS = 2  # the workers section: 1 worker against this many
# An event that arrives less than this after the previous one came in a burst:
# with 5 ms between events upstream, bursts mean someone buffered.
BUNCHED_MS = 1.0
# One wrk thread is plenty for a Python server and leaves the second core to
# the servers under test (wrk needs threads <= connections anyway).
WRK_THREADS = 1
READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
STREAM_TIMEOUT_S = 60.0
LOOPBACK = "127.0.0.1"
DIRECT, AZPROXY, NGINX = "direct", "azproxy", "nginx"
TARGET_ORDER = (DIRECT, AZPROXY, NGINX)
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
R = TypeVar("R")


# ---------------------------------------------------------------------------
# Results


@dataclass
class Row:
    """One line of the table: a metric's value for each target."""

    section: str
    metric: str
    unit: str
    values: dict[str, float | None]
    target: str = ""  # azproxy's target, printed beside the numbers
    verdict: bool | None = None  # PASS/MISS for azproxy; None: no target or no value
    ratio: bool = True  # show each value as a multiple of direct

    def ratio_to_direct(self, name: str) -> float | None:
        value, direct = self.values.get(name), self.values.get(DIRECT)
        if not self.ratio or name == DIRECT or value is None or not direct:
            return None
        return value / direct

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratios_to_direct"] = {
            name: self.ratio_to_direct(name)
            for name in self.values
            if self.ratio_to_direct(name) is not None
        }
        return data


class Skip(Exception):
    """A measurement cannot run here (a tool is missing); the run goes on."""


class StartError(RuntimeError):
    """A server did not start or did not become ready in time."""


def check(value: float | None, ok: Callable[[float], bool]) -> bool | None:
    return None if value is None else ok(value)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile q (0-100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


# ---------------------------------------------------------------------------
# Processes: start on free loopback ports, wait until ready, always stop


@dataclass
class Service:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    port: int

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class Services:
    """Every process the benchmark started; stop_all() ends them all."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.started: list[Service] = []

    def start(
        self, name: str, argv: Sequence[str], port: int, env: dict[str, str]
    ) -> Service:
        log = self.tmp / f"{name}.log"
        with log.open("wb") as out:
            # A session of its own: Ctrl-C reaches only this script, which
            # then stops the servers in order (and can kill a whole group).
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        service = Service(name, popen, log, port)
        self.started.append(service)
        return service

    def stop(self, service: Service) -> None:
        """Stop one service early (a section that started its own)."""
        self.started.remove(service)
        stop(service)

    def stop_all(self) -> None:
        while self.started:
            stop(self.started.pop())


def stop(service: Service) -> None:
    popen = service.popen
    if popen.poll() is not None:
        return
    popen.terminate()
    try:
        popen.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        # The leader is still alive, so its process group id is still ours.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGKILL)
        popen.wait(STOP_TIMEOUT_S)


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (held open together while chosen)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((LOOPBACK, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def tcp_open(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5):
            return True
    except OSError:
        return False


_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_ok(url: str) -> bool:
    try:
        with _NO_PROXY_OPENER.open(url, timeout=1.0) as response:
            return int(response.status) == 200
    except (OSError, ValueError):
        return False


def wait_ready(
    service: Service, ready: Callable[[], bool], timeout_s: float = READY_TIMEOUT_S
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        code = service.popen.poll()
        if code is not None:
            raise StartError(
                f"{service.name} exited with code {code}:\n{service.log_tail()}"
            )
        if ready():
            return
        if time.monotonic() > deadline:
            raise StartError(
                f"{service.name} not ready after {timeout_s:g} s:\n{service.log_tail()}"
            )
        time.sleep(0.05)


def child_env() -> dict[str, str]:
    """The current environment without AZPROXY_* settings: a default config."""
    return {k: v for k, v in os.environ.items() if not k.startswith("AZPROXY_")}


def start_simulator(services: Services) -> Service:
    (port,) = free_ports(1)
    argv = [sys.executable, "-m", "azproxy", "simulate", "--host", LOOPBACK]
    service = services.start(
        "simulator", [*argv, "--port", str(port)], port, child_env()
    )
    wait_ready(service, lambda: tcp_open(port))
    return service


def start_azproxy(
    services: Services,
    upstream_port: int,
    extra_args: Sequence[str] = (),
    name: str = "azproxy",
    env: dict[str, str] | None = None,
) -> Service:
    (port,) = free_ports(1)
    argv = [
        sys.executable,
        "-m",
        "azproxy",
        "serve",
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        "--upstream",
        f"http://{LOOPBACK}:{upstream_port}",
        *extra_args,
    ]
    service = services.start(name, argv, port, child_env() | (env or {}))

    def ready() -> bool:
        # With --workers, one worker may answer before the others serve:
        # "listening on" is logged once all of them do.
        return http_ok(f"http://{LOOPBACK}:{port}/healthz") and (
            b"listening on" in service.log.read_bytes()
        )

    wait_ready(service, ready)
    return service


def find_tool(name: str) -> str | None:
    """A program on PATH, or in the sbin folders a non-root PATH may lack."""
    extra = os.pathsep.join(("/usr/local/sbin", "/usr/sbin", "/sbin"))
    return shutil.which(name) or shutil.which(name, path=extra)


def nginx_conf(port: int, upstream_port: int) -> str:
    # As in notes/containers.md, with room for 200 streams (400 connections)
    # and keepalive limits raised so nginx does not recycle connections that
    # azproxy and the simulator would keep (a fair comparison, not a tuning).
    return f"""\
worker_processes 1;
pid nginx.pid;
error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path tmp_body;
    proxy_temp_path       tmp_proxy;
    fastcgi_temp_path     tmp_fastcgi;
    uwsgi_temp_path       tmp_uwsgi;
    scgi_temp_path        tmp_scgi;
    keepalive_requests 1000000;
    upstream simulator {{
        server {LOOPBACK}:{upstream_port};
        keepalive 256;
        keepalive_requests 1000000;
    }}
    server {{
        listen {LOOPBACK}:{port};
        location / {{
            proxy_pass http://simulator;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_buffering off;
            proxy_cache off;
            proxy_read_timeout 600s;
            proxy_send_timeout 600s;
            client_max_body_size 32m;
        }}
    }}
}}
"""


def start_nginx(services: Services, nginx: str, upstream_port: int) -> Service:
    (port,) = free_ports(1)
    prefix = services.tmp / "nginx"
    prefix.mkdir()
    # Workers run as an unprivileged user when started by root: let them in.
    prefix.chmod(0o755)
    services.tmp.chmod(0o755)
    (prefix / "nginx.conf").write_text(nginx_conf(port, upstream_port))
    argv = [nginx, "-p", f"{prefix}/", "-c", "nginx.conf", "-e", "stderr"]
    service = services.start(
        "nginx", [*argv, "-g", "daemon off;"], port, dict(os.environ)
    )
    wait_ready(service, lambda: tcp_open(port))
    return service


# ---------------------------------------------------------------------------
# /proc: CPU time and memory of the server processes


def proc_available() -> bool:
    return Path("/proc/self/stat").exists()


def _stat_fields(pid: int) -> list[str]:
    # Fields after "(comm)": state is field 3, so field N is index N - 3.
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()


def child_pids(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if int(_stat_fields(int(entry.name))[1]) == parent:
                found.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
    return found


def cpu_seconds(pids: Iterable[int]) -> float:
    """utime + stime of the processes (all their threads), in seconds."""
    ticks = 0
    for pid in pids:
        fields = _stat_fields(pid)
        ticks += int(fields[11]) + int(fields[12])  # fields 14 and 15
    return ticks / CLK_TCK


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) CPU time of the whole machine so far, from /proc/stat."""
    first = Path("/proc/stat").read_text().split("\n", 1)[0]  # "cpu  user nice ..."
    fields = [int(v) for v in first.split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # without guest time, already counted in user
    return total - idle, total


def busy_pct(before: tuple[int, int], after: tuple[int, int]) -> float:
    busy, total = after[0] - before[0], after[1] - before[1]
    return 100 * busy / total if total else 0.0


def status_kib(pids: Iterable[int], key: str) -> int:
    """Sum of a /proc/PID/status memory line (VmRSS, VmHWM), in KiB."""
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                total += int(line.split()[1])
    return total


def reset_peak_rss(pids: Iterable[int]) -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False if refused."""
    try:
        for pid in pids:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


# ---------------------------------------------------------------------------
# The benchmark's state


@dataclass
class Target:
    """One way to reach the simulator: its URL, headers and server PIDs."""

    name: str
    port: int
    path: str
    headers: dict[str, str]
    pids: Callable[[], list[int]]

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}{self.path}"


def direct_target(simulator: Service) -> Target:
    return Target(
        DIRECT,
        simulator.port,
        AZURE_URL_PATH,
        {"api-key": "bench"},
        lambda: [simulator.popen.pid],
    )


def azproxy_target(proxy: Service, name: str = AZPROXY) -> Target:
    return Target(
        name,
        proxy.port,
        OPENAI_PATH,
        {"Authorization": f"Bearer {PASSTHROUGH_TOKEN}"},
        # The serving process and any workers it forks.
        lambda: [proxy.popen.pid, *child_pids(proxy.popen.pid)],
    )


def nginx_target(nginx: Service) -> Target:
    return Target(
        NGINX,
        nginx.port,
        AZURE_URL_PATH,
        {"api-key": "bench"},
        lambda: [nginx.popen.pid, *child_pids(nginx.popen.pid)],  # master + worker
    )


@dataclass(frozen=True)
class Options:
    quick: bool
    duration_s: int
    warmup_s: int
    stream_rounds: int
    json_out: Path | None
    only: tuple[str, ...] = ()  # section names to run; empty: all


@dataclass
class Bench:
    options: Options
    services: Services
    targets: list[Target]
    wrk: str | None
    tmp: Path
    raw: dict[str, Any] = field(default_factory=dict)  # details for --json
    notes: list[str] = field(default_factory=list)

    def target(self, name: str) -> Target | None:
        return next((t for t in self.targets if t.name == name), None)

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(text, flush=True)

    def require_wrk(self) -> str:
        if self.wrk is None:
            raise Skip("wrk not found (apt-get install wrk)")
        return self.wrk

    def require_proc(self) -> None:
        if not proc_available():
            raise Skip("no /proc on this system")


def progress(text: str) -> None:
    print(f"  .. {text}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# wrk: non-streamed requests


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


def lua_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def wrk_script(bench: Bench, target: Target) -> Path:
    path = bench.tmp / f"wrk-{target.name}.lua"
    lines = ['wrk.method = "POST"', f"wrk.body = {lua_string(SMALL_BODY)}"]
    headers = {"Content-Type": "application/json", **target.headers}
    lines += [
        f"wrk.headers[{lua_string(k)}] = {lua_string(v)}" for k, v in headers.items()
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


async def run_wrk_once(
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
        str(wrk_script(bench, target)),
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
    """A warm-up run, then the measured run with the server's CPU time read
    around it."""
    options = bench.options
    progress(f"wrk c{connections} -> {target.name}")
    await run_wrk_once(bench, target, connections, options.warmup_s)
    pids = target.pids() if proc_available() else []
    cpu_before = cpu_seconds(pids)
    result = await run_wrk_once(bench, target, connections, options.duration_s)
    cpu_s = cpu_seconds(pids) - cpu_before
    cpu_ms = cpu_s * 1e3 / result.requests if pids and result.requests else None
    return dataclasses.replace(result, cpu_ms_per_request=cpu_ms)


async def wrk_all(bench: Bench, connections: int, key: str) -> dict[str, WrkResult]:
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


# ---------------------------------------------------------------------------
# Streams: an aiohttp client timing every SSE event


@dataclass(frozen=True)
class StreamSample:
    ttfb_ms: float  # request sent -> first body bytes (the first event)
    ttlb_ms: float  # request sent -> last event
    gaps_ms: list[float]  # between consecutive events' arrivals
    complete: bool  # ended with data: [DONE]
    error: str | None = None
    # request sent -> first answer event: Azure's prompt-filter-only event
    # (which sse_compat=openai drops) does not count, so every target is
    # timed to the same event.
    answer_ms: float | None = None


def is_answer_event(event: bytes) -> bool:
    return not (b'"choices":[]' in event and b"prompt_filter_results" in event)


@dataclass(frozen=True)
class StreamStats:
    streams: int
    errors: int
    ttfb_p50_ms: float | None
    ttfb_p99_ms: float | None
    answer_p50_ms: float | None
    answer_p99_ms: float | None
    ttlb_p50_ms: float | None
    ttlb_p99_ms: float | None
    gap_p50_ms: float | None
    gap_p99_ms: float | None
    bunched_pct: float | None  # gaps under BUNCHED_MS, in % of all gaps

    @classmethod
    def of(cls, samples: Sequence[StreamSample]) -> StreamStats:
        good = [s for s in samples if s.complete and s.error is None]
        gaps = [g for s in good for g in s.gaps_ms]
        ttfb = [s.ttfb_ms for s in good]
        answer = [s.answer_ms for s in good if s.answer_ms is not None]
        ttlb = [s.ttlb_ms for s in good]
        bunched = sum(g < BUNCHED_MS for g in gaps)
        return cls(
            streams=len(samples),
            errors=len(samples) - len(good),
            ttfb_p50_ms=percentile(ttfb, 50),
            ttfb_p99_ms=percentile(ttfb, 99),
            answer_p50_ms=percentile(answer, 50),
            answer_p99_ms=percentile(answer, 99),
            ttlb_p50_ms=percentile(ttlb, 50),
            ttlb_p99_ms=percentile(ttlb, 99),
            gap_p50_ms=percentile(gaps, 50),
            gap_p99_ms=percentile(gaps, 99),
            bunched_pct=100 * bunched / len(gaps) if gaps else None,
        )


def client_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        timeout=aiohttp.ClientTimeout(total=STREAM_TIMEOUT_S),
    )


async def one_stream(
    session: aiohttp.ClientSession, target: Target, chunks: int, delay_ms: float
) -> StreamSample:
    headers = {
        "Content-Type": "application/json",
        "x-sim-chunks": str(chunks),
        "x-sim-chunk-delay-ms": str(delay_ms),
        "x-sim-first-byte-ms": "0",
        **target.headers,
    }
    start = time.perf_counter()
    first: float | None = None
    answer: float | None = None
    arrivals: list[float] = []
    last_event = b""
    try:
        async with session.post(target.url, data=STREAM_BODY, headers=headers) as resp:
            if resp.status != 200:
                body = (await resp.read())[:200].decode(errors="replace")
                return StreamSample(0, 0, [], False, f"HTTP {resp.status}: {body}")
            pending = b""
            async for chunk in resp.content.iter_any():
                now = time.perf_counter()
                if first is None:
                    first = now
                *events, pending = (pending + chunk).split(b"\n\n")
                for event in events:
                    arrivals.append(now)
                    last_event = event
                    if answer is None and is_answer_event(event):
                        answer = now
    except (aiohttp.ClientError, TimeoutError) as exc:
        return StreamSample(0, 0, [], False, f"{type(exc).__name__}: {exc}")
    if first is None or not arrivals:
        return StreamSample(0, 0, [], False, "empty body")
    gaps = [(b - a) * 1e3 for a, b in itertools.pairwise(arrivals)]
    return StreamSample(
        ttfb_ms=(first - start) * 1e3,
        ttlb_ms=(arrivals[-1] - start) * 1e3,
        gaps_ms=gaps,
        complete=last_event.strip() == b"data: [DONE]",
        answer_ms=None if answer is None else (answer - start) * 1e3,
    )


async def stream_round(
    session: aiohttp.ClientSession,
    target: Target,
    concurrency: int,
    chunks: int = STREAM_CHUNKS,
    delay_ms: float = STREAM_DELAY_MS,
) -> list[StreamSample]:
    return list(
        await asyncio.gather(
            *(one_stream(session, target, chunks, delay_ms) for _ in range(concurrency))
        )
    )


def report_stream_errors(
    bench: Bench, key: str, name: str, samples: Iterable[StreamSample]
) -> None:
    bad = [s for s in samples if s.error is not None or not s.complete]
    if bad:
        why = bad[0].error or "no data: [DONE] at the end"
        bench.note(
            f"warning: {key} via {name}: {len(bad)} streams failed (first: {why})"
        )


async def streams_c50(bench: Bench) -> list[Row]:
    """100 events 5 ms apart, 50 at a time: first/last byte and event gaps."""
    section = (
        f"streams {STREAM_CHUNKS} chunks x {STREAM_DELAY_MS:g} ms, "
        f"c{STREAM_CONCURRENCY} ({bench.options.stream_rounds} rounds)"
    )
    stats: dict[str, StreamStats] = {}
    for target in bench.targets:
        progress(f"streams c{STREAM_CONCURRENCY} -> {target.name}")
        async with client_session() as session:
            # Warm-up: open the connections (client side and proxy upstream).
            await stream_round(session, target, STREAM_CONCURRENCY, chunks=3)
            samples: list[StreamSample] = []
            for _ in range(bench.options.stream_rounds):
                samples += await stream_round(session, target, STREAM_CONCURRENCY)
        report_stream_errors(bench, "streams_c50", target.name, samples)
        stats[target.name] = StreamStats.of(samples)
    bench.raw["streams_c50"] = {name: asdict(s) for name, s in stats.items()}

    def get(attr: str) -> dict[str, float | None]:
        return {name: getattr(s, attr) for name, s in stats.items()}

    ttfb, answer = get("ttfb_p50_ms"), get("answer_p50_ms")
    gap_p50, bunched = get("gap_p50_ms"), get("bunched_pct")
    # No buffering: the median gap keeps the upstream's spacing and no more
    # events arrive in bursts than when reading the simulator directly.
    buffered_ok = check(
        ratio(gap_p50.get(AZPROXY), gap_p50.get(DIRECT)), lambda v: v >= 0.8
    )
    bunched_ok = check(
        minus(bunched.get(AZPROXY), bunched.get(DIRECT)), lambda v: v <= 10
    )
    return [
        # azproxy's first byte is its first answer event: by default
        # (sse_compat=openai) it drops Azure's prompt-filter-only event,
        # which the others send first. So the target compares the time to
        # the same event, the first answer event, for every target.
        Row(section, "time to first byte p50", "ms", ttfb),
        Row(section, "time to first byte p99", "ms", get("ttfb_p99_ms")),
        Row(
            section,
            "time to first answer event p50",
            "ms",
            answer,
            target="<= 1.3x direct",
            verdict=check(
                ratio(answer.get(AZPROXY), answer.get(DIRECT)), lambda v: v <= 1.3
            ),
        ),
        Row(section, "time to first answer event p99", "ms", get("answer_p99_ms")),
        Row(section, "time to last byte p50", "ms", get("ttlb_p50_ms")),
        Row(section, "time to last byte p99", "ms", get("ttlb_p99_ms")),
        Row(
            section,
            "event gap p50",
            "ms",
            gap_p50,
            target=">= 0.8x direct (no buffering)",
            verdict=buffered_ok,
        ),
        Row(section, "event gap p99", "ms", get("gap_p99_ms")),
        Row(
            section,
            f"events < {BUNCHED_MS:g} ms after previous",
            "%",
            bunched,
            target="<= direct + 10 pts",
            verdict=bunched_ok,
            ratio=False,
        ),
        Row(section, "failed streams", "count", get("errors"), ratio=False),
    ]


async def streams_200_rss(bench: Bench) -> list[Row]:
    """Peak RSS of each server while it carries 200 concurrent streams."""
    bench.require_proc()
    section = f"{RSS_STREAMS} concurrent streams: server memory"
    idle: dict[str, float | None] = {}
    peak: dict[str, float | None] = {}
    ttlb: dict[str, float | None] = {}
    errors: dict[str, float | None] = {}
    for target in bench.targets:
        progress(f"{RSS_STREAMS} streams -> {target.name}")
        pids = target.pids()
        if not reset_peak_rss(pids):
            bench.note(
                f"note: could not reset {target.name}'s peak RSS; "
                "it is the peak since start"
            )
        idle[target.name] = status_kib(pids, "VmRSS") / 1024
        async with client_session() as session:
            samples = await stream_round(session, target, RSS_STREAMS)
        peak[target.name] = status_kib(pids, "VmHWM") / 1024
        report_stream_errors(bench, "streams_200", target.name, samples)
        stats = StreamStats.of(samples)
        ttlb[target.name] = stats.ttlb_p50_ms
        errors[target.name] = stats.errors
    bench.raw["streams_200"] = {
        "rss_before_mib": idle,
        "peak_rss_mib": peak,
        "ttlb_p50_ms": ttlb,
        "errors": errors,
    }
    return [
        Row(section, "RSS before", "MiB", idle),
        Row(
            section,
            "peak RSS (VmHWM)",
            "MiB",
            peak,
            target="<= 60 MiB",
            verdict=check(peak.get(AZPROXY), lambda v: v <= 60),
        ),
        Row(section, "time to last byte p50", "ms", ttlb),
        Row(section, "failed streams", "count", errors, ratio=False),
    ]


# ---------------------------------------------------------------------------
# Uploads: a 500 MiB file streamed through azproxy, and azproxy's memory

UPLOAD_MIB = 500
UPLOAD_BLOCK = bytes(range(256)) * 4096  # 1 MiB
UPLOAD_BOUNDARY = "azproxy-bench-upload"


async def upload_rss(bench: Bench) -> list[Row]:
    """RSS of azproxy before and at its peak while a 500 MiB file upload
    streams through it to the simulator (which hashes it, keeping nothing)."""
    bench.require_proc()
    proxy, sim = bench.target(AZPROXY), bench.target(DIRECT)
    if proxy is None or sim is None:
        raise Skip("needs the azproxy and direct targets")
    section = f"{UPLOAD_MIB} MiB file upload through azproxy (POST /v1/files)"
    progress(section)
    head = (
        f"--{UPLOAD_BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        f"--{UPLOAD_BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="file"; filename="big.jsonl"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{UPLOAD_BOUNDARY}--\r\n".encode()
    size = UPLOAD_MIB * len(UPLOAD_BLOCK)
    digest = hashlib.sha256()

    async def body() -> AsyncIterator[bytes]:
        yield head
        for _ in range(UPLOAD_MIB):
            digest.update(UPLOAD_BLOCK)
            yield UPLOAD_BLOCK
        yield tail

    pids, sim_pids = proxy.pids(), sim.pids()
    if not reset_peak_rss(pids + sim_pids):
        bench.note("note: could not reset peak RSS; upload peaks are since start")
    before = status_kib(pids, "VmRSS") / 1024
    sim_before = status_kib(sim_pids, "VmRSS") / 1024
    headers = {
        **proxy.headers,
        "Content-Type": f"multipart/form-data; boundary={UPLOAD_BOUNDARY}",
        "Content-Length": str(len(head) + size + len(tail)),
    }
    url = f"http://{LOOPBACK}:{proxy.port}/v1/files"
    started = time.perf_counter()
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session,
        session.post(url, data=body(), headers=headers) as resp,
    ):
        answer = await resp.json(content_type=None)
        received_hash = resp.headers.get("x-sim-sha256")
    seconds = time.perf_counter() - started
    peak = status_kib(pids, "VmHWM") / 1024
    sim_peak = status_kib(sim_pids, "VmHWM") / 1024
    intact = (
        resp.status == 200
        and answer.get("bytes") == size
        and received_hash == digest.hexdigest()
    )
    if not intact:
        bench.note(f"warning: upload_rss: HTTP {resp.status}, answer {answer}")
    growth = peak - before
    bench.raw["upload_rss"] = {
        "bytes": size,
        "seconds": seconds,
        "rss_before_mib": before,
        "peak_rss_mib": peak,
        "simulator_rss_before_mib": sim_before,
        "simulator_peak_rss_mib": sim_peak,
        "intact": intact,
    }
    return [
        Row(section, "azproxy RSS before", "MiB", {AZPROXY: before}, ratio=False),
        Row(section, "azproxy peak RSS (VmHWM)", "MiB", {AZPROXY: peak}, ratio=False),
        Row(
            section,
            "azproxy RSS growth (peak - before)",
            "MiB",
            {AZPROXY: growth},
            target="<= 50 MiB",
            verdict=check(growth, lambda v: v <= 50),
            ratio=False,
        ),
        Row(
            section,
            "simulator RSS growth (it hashes the stream)",
            "MiB",
            {DIRECT: sim_peak - sim_before},
            ratio=False,
        ),
        Row(
            section,
            "upload throughput",
            "MiB/s",
            {AZPROXY: UPLOAD_MIB / seconds},
            ratio=False,
        ),
        Row(
            section,
            "bytes and SHA-256 intact at the simulator",
            "1=yes",
            {AZPROXY: float(intact)},
            target="1",
            verdict=intact,
            ratio=False,
        ),
    ]


# ---------------------------------------------------------------------------
# sse_compat: what tidying Azure's streams costs (openai) against raw bytes

SSE_STREAMS = 50
SSE_CHUNKS = 100
SSE_DELAY_MS = 1.0
SSE_ROUNDS_QUICK = 6
SSE_ROUNDS = 20


async def count_events(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str]
) -> tuple[int, bool]:
    """Events in one streamed answer, and whether any was Azure-only."""
    async with session.post(url, data=STREAM_BODY, headers=headers) as resp:
        if resp.status != 200:
            raise RuntimeError(f"stream got HTTP {resp.status}")
        body = await resp.read()
    events = [e for e in body.split(b"\n\n") if e.strip()]
    azure_only = b'"prompt_filter_results"' in body or b"content_filter_offsets" in body
    return len(events), azure_only


async def sse_round(
    session: aiohttp.ClientSession, target: Target, async_filter: bool
) -> tuple[float, int, int, bool]:
    """One round of concurrent streams: (CPU seconds of the target, streams,
    events received, whether any Azure-only event was received)."""
    headers = {
        "Content-Type": "application/json",
        "x-sim-chunks": str(SSE_CHUNKS),
        "x-sim-chunk-delay-ms": str(SSE_DELAY_MS),
        **target.headers,
    }
    if async_filter:
        headers["x-sim-async-filter"] = "1"
    pids = target.pids()
    cpu_before = cpu_seconds(pids)
    results = await asyncio.gather(
        *(count_events(session, target.url, headers) for _ in range(SSE_STREAMS))
    )
    cpu = cpu_seconds(pids) - cpu_before
    return cpu, len(results), sum(n for n, _ in results), any(a for _, a in results)


async def sse_compat_cost(bench: Bench) -> list[Row]:
    """Server CPU per stream and per event with sse_compat=openai and raw, on
    the same load: Azure's default stream (one prompt-filter chunk) and with
    the asynchronous filter (an annotation chunk after every content chunk).
    The two modes run in alternating rounds, so both see the same noise."""
    bench.require_proc()
    openai_target, sim = bench.target(AZPROXY), bench.target(DIRECT)
    if openai_target is None or sim is None:
        raise Skip("needs the azproxy and direct targets")
    raw_service = start_azproxy(bench.services, sim.port, ["--sse-compat", "raw"])
    modes = {"raw": azproxy_target(raw_service, "azproxy-raw"), "openai": openai_target}
    rounds = SSE_ROUNDS_QUICK if bench.options.quick else SSE_ROUNDS
    rows: list[Row] = []
    try:
        for async_filter in (False, True):
            kind = "asynchronous filter" if async_filter else "default filter"
            section = (
                f"sse_compat cost, {kind}: {rounds} x {SSE_STREAMS} streams "
                f"of {SSE_CHUNKS} chunks"
            )
            progress(section)
            totals = {mode: (0.0, 0, 0, False) for mode in modes}
            async with client_session() as session:
                for target in modes.values():  # warm-up: connections, caches
                    await sse_round(session, target, async_filter)
                for _ in range(rounds):
                    for mode, target in modes.items():
                        cpu, streams, events, leaked = await sse_round(
                            session, target, async_filter
                        )
                        c, s, e, lk = totals[mode]
                        totals[mode] = (c + cpu, s + streams, e + events, lk or leaked)
            rows += sse_rows(bench, section, kind, totals)
    finally:
        bench.services.stop(raw_service)
    return rows


def sse_rows(
    bench: Bench,
    section: str,
    kind: str,
    measured: dict[str, tuple[float, int, int, bool]],
) -> list[Row]:
    raw_cpu, streams, raw_events, _ = measured["raw"]
    openai_cpu, _, openai_events, leaked = measured["openai"]
    per_stream = {m: cpu * 1e3 / streams for m, (cpu, *_) in measured.items()}
    bench.raw[f"sse_compat_{kind.split()[0]}"] = {
        m: {"cpu_s": c, "streams": s, "events": e}
        for m, (c, s, e, _) in measured.items()
    }
    if leaked:
        bench.note(f"warning: {section}: Azure-only events reached an openai client")
    return [
        Row(
            section,
            "azproxy CPU per stream, raw",
            "ms",
            {AZPROXY: per_stream["raw"]},
            ratio=False,
        ),
        Row(
            section,
            "azproxy CPU per stream, openai",
            "ms",
            {AZPROXY: per_stream["openai"]},
            ratio=False,
        ),
        Row(
            section,
            "openai CPU / raw CPU",
            "x",
            {AZPROXY: ratio(openai_cpu, raw_cpu)},
            ratio=False,
        ),
        Row(
            section,
            "added CPU per upstream event (openai - raw)",
            "us",
            {AZPROXY: (openai_cpu - raw_cpu) * 1e6 / raw_events},
            ratio=False,
        ),
        Row(
            section,
            "events per stream reaching the client, raw",
            "events",
            {AZPROXY: raw_events / streams},
            ratio=False,
        ),
        Row(
            section,
            "events per stream reaching the client, openai",
            "events",
            {AZPROXY: openai_events / streams},
            ratio=False,
        ),
    ]


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


Measurement = Callable[[Bench], Coroutine[Any, Any, list[Row]]]


# The sections, in order. Each returns its rows; add one by appending here.
async def relay_floor(bench: Bench) -> list[Row]:
    """azproxy's CPU per request next to the leanest aiohttp relay (same loop,
    same session options, nothing else; scripts/floor_relay.py) in the same
    run: how much of the cost is the framework and how much is azproxy."""
    bench.require_wrk()
    bench.require_proc()
    proxy, sim = bench.target(AZPROXY), bench.target(DIRECT)
    if proxy is None or sim is None:
        raise Skip("needs the azproxy and direct targets")
    (port,) = free_ports(1)
    upstream = f"http://{LOOPBACK}:{sim.port}{AZURE_URL_PATH}"
    script = Path(__file__).with_name("floor_relay.py")
    argv = [sys.executable, str(script), str(port), upstream]
    service = bench.services.start("floor", argv, port, child_env())
    wait_ready(service, lambda: tcp_open(port))
    floor = Target("floor", port, OPENAI_PATH, {}, lambda: [service.popen.pid])
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


STORM_CONCURRENCY = 10
STORM_RETRY_AFTER_MS = 1000
STORM_KEY = "bench-access-key-0123456789"


async def storm_429(bench: Bench) -> list[Row]:
    """A 429 storm on one of two deployments of a model (server-side routing):
    where the requests go, how often the storm-hit deployment is still asked,
    and the latency failover adds, against the same load without the storm."""
    sim = bench.target(DIRECT)
    if sim is None:
        raise Skip("needs the simulator")
    env = {
        "AZURE_OPENAI_ENDPOINT": f"http://{LOOPBACK}:{sim.port}",
        "AZURE_OPENAI_API_KEY": "bench-key",
        "AZPROXY_MODEL_MAP": f"{DEPLOYMENT}=dep-a,{DEPLOYMENT}=dep-b",
        "AZPROXY_ACCESS_KEYS": STORM_KEY,
    }
    service = start_azproxy(bench.services, sim.port, name="azproxy-storm", env=env)
    url = f"http://{LOOPBACK}:{service.port}{OPENAI_PATH}"
    seconds = 2.0 if bench.options.quick else 5.0
    sim_url = f"http://{LOOPBACK}:{sim.port}"
    section = (
        f"429 storm on 1 of 2 deployments, c{STORM_CONCURRENCY}, {seconds:g} s "
        f"(Retry-After {STORM_RETRY_AFTER_MS} ms)"
    )
    try:
        async with client_session() as session:

            async def faults(kinds: list[str]) -> dict[str, int]:
                body = {"deployment": "dep-a", "faults": kinds}
                async with session.post(f"{sim_url}/_sim/faults", json=body) as r:
                    r.raise_for_status()
                async with session.get(f"{sim_url}/_sim/stats") as r:
                    requests: dict[str, int] = (await r.json())["requests"]
                    return requests

            await storm_load(session, url, 0.5)  # warm-up
            progress(f"{section}: without the storm")
            calm = await storm_load(session, url, seconds)
            before = await faults([f"429:{STORM_RETRY_AFTER_MS}*"])
            progress(f"{section}: with the storm")
            storm = await storm_load(session, url, seconds)
            after = await faults([])
    finally:
        bench.services.stop(service)
    hits_a = after.get("dep-a", 0) - before.get("dep-a", 0)
    bench.raw["storm_429"] = {"calm": calm, "storm": storm, "dep_a_hits": hits_a}
    added_p50 = minus(percentile(storm["ms"], 50), percentile(calm["ms"], 50))
    added_p99 = minus(percentile(storm["ms"], 99), percentile(calm["ms"], 99))
    ok = storm["status"].get(200, 0)

    def one(name: str, unit: str, value: float | None, **kw: Any) -> Row:
        return Row(section, name, unit, {AZPROXY: value}, ratio=False, **kw)

    return [
        one("requests during the storm", "count", float(len(storm["ms"]))),
        one(
            "answered 200",
            "%",
            100 * ok / max(len(storm["ms"]), 1),
            target="100 %",
            verdict=ok == len(storm["ms"]),
        ),
        one("served by dep-b", "count", float(storm["served"].get("dep-b", 0))),
        one(
            "served by dep-a (storm-hit)",
            "count",
            float(storm["served"].get("dep-a", 0)),
        ),
        one(
            "requests that reached dep-a",
            "count",
            float(hits_a),
            target=f"about one per {STORM_RETRY_AFTER_MS} ms",
        ),
        one("latency p50 without the storm", "ms", percentile(calm["ms"], 50)),
        one("latency p50 during the storm", "ms", percentile(storm["ms"], 50)),
        one("added latency p50", "ms", added_p50),
        one("added latency p99", "ms", added_p99),
    ]


async def storm_load(
    session: aiohttp.ClientSession, url: str, seconds: float
) -> dict[str, Any]:
    """A closed loop of STORM_CONCURRENCY clients for `seconds`."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    served: dict[str, int] = {}
    headers = {
        "Authorization": f"Bearer {STORM_KEY}",
        "Content-Type": "application/json",
    }
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            async with session.post(url, data=SMALL_BODY, headers=headers) as resp:
                await resp.read()
                latencies.append((time.perf_counter() - start) * 1e3)
                statuses[resp.status] = statuses.get(resp.status, 0) + 1
                name = resp.headers.get("x-azproxy-deployment", "")
                served[name] = served.get(name, 0) + 1

    await asyncio.gather(*(client() for _ in range(STORM_CONCURRENCY)))
    return {"ms": latencies, "status": statuses, "served": served}


MEASUREMENTS: list[Measurement] = [
    nonstream_c1,
    nonstream_c50,
    relay_floor,
    streams_c50,
    streams_200_rss,
    upload_rss,
    sse_compat_cost,
    storm_429,
    workers_c50,
]


# ---------------------------------------------------------------------------
# Checking the targets answer, running the sections, printing


async def preflight(bench: Bench) -> None:
    """One JSON answer and one short stream per target, before measuring:
    a broken setup must not be benchmarked as a fast one."""
    async with client_session() as session:
        for target in list(bench.targets):
            problem = await preflight_problem(session, target)
            if problem is None:
                continue
            if target.name == DIRECT:
                raise StartError(f"the simulator does not answer properly: {problem}")
            bench.targets.remove(target)
            bench.note(f"skipped: {target.name}: {problem}")


async def preflight_problem(
    session: aiohttp.ClientSession, target: Target
) -> str | None:
    headers = {"Content-Type": "application/json", **target.headers}
    try:
        async with session.post(target.url, data=SMALL_BODY, headers=headers) as resp:
            body = await resp.read()
            if resp.status != 200 or b'"choices"' not in body:
                return f"JSON request got HTTP {resp.status}: {body[:200]!r}"
    except (aiohttp.ClientError, TimeoutError) as exc:
        return f"JSON request failed: {type(exc).__name__}: {exc}"
    (sample,) = await stream_round(session, target, 1, chunks=3, delay_ms=1)
    if sample.error is not None or not sample.complete:
        return f"stream request failed: {sample.error or 'no data: [DONE] at the end'}"
    return None


async def run_measurements(bench: Bench) -> tuple[list[Row], bool]:
    await preflight(bench)
    rows: list[Row] = []
    failed = False
    for measure in MEASUREMENTS:
        name = measure.__name__
        if bench.options.only and name not in bench.options.only:
            continue
        try:
            rows += await measure(bench)
        except Skip as exc:
            bench.note(f"skipped: {name}: {exc}")
        except Exception as exc:  # one broken section must not hide the rest
            failed = True
            bench.note(f"FAILED: {name}: {type(exc).__name__}: {exc}")
    return rows, failed


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    magnitude = abs(value)
    if value == int(value) or magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def render_table(rows: Sequence[Row], names: Sequence[str]) -> str:
    header = ["metric", "unit", *names, "", "azproxy target"]
    lines: list[list[str] | str] = []
    section = None
    for row in rows:
        if row.section != section:
            section = row.section
            lines.append(section)
        cells = [f"  {row.metric}", row.unit]
        for name in names:
            cell = fmt(row.values.get(name))
            r = row.ratio_to_direct(name)
            if r is not None:
                cell += f" ({r:.2f}x)"
            cells.append(cell)
        verdict = "" if row.verdict is None else ("PASS" if row.verdict else "MISS")
        cells += [verdict, row.target]
        lines.append(cells)
    table = [header] + [line for line in lines if isinstance(line, list)]
    widths = [max(len(cells[i]) for cells in table) for i in range(len(header))]

    def join(cells: Sequence[str]) -> str:
        parts = [cells[0].ljust(widths[0]), cells[1].ljust(widths[1])]
        parts += [c.rjust(w) for c, w in zip(cells[2:-2], widths[2:-2], strict=True)]
        parts += [cells[-2].ljust(widths[-2]), cells[-1]]  # verdict, target
        return "  ".join(parts).rstrip()

    out = [join(header), "-" * len(join(header))]
    for line in lines:
        out.append(line if isinstance(line, str) else join(line))
    return "\n".join(out)


def tool_version(argv: Sequence[str]) -> str | None:
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (done.stdout + done.stderr).strip().splitlines()
    return text[0] if text else None


def metadata(options: Options, wrk: str | None, nginx: str | None) -> dict[str, Any]:
    def version(package: str) -> str | None:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "azproxy": version("azproxy"),
        "aiohttp": version("aiohttp"),
        "uvloop": version("uvloop"),
        "wrk": tool_version([wrk, "--version"]) if wrk else None,
        "nginx": tool_version([nginx, "-v"]) if nginx else None,
        "options": {
            k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()
        },
        "stream": {
            "chunks": STREAM_CHUNKS,
            "chunk_delay_ms": STREAM_DELAY_MS,
            "concurrency": STREAM_CONCURRENCY,
            "rss_streams": RSS_STREAMS,
            "bunched_ms": BUNCHED_MS,
        },
    }


def run_async(main: Awaitable[Any]) -> Any:
    async def wrapper() -> Any:
        return await main

    try:
        import uvloop
    except ImportError:
        return asyncio.run(wrapper())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(wrapper())


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        description="Benchmark azproxy against the simulator direct and nginx."
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
        help="comma list of sections to run: "
        + ", ".join(m.__name__ for m in MEASUREMENTS),
    )
    args = parser.parse_args(argv)
    if args.duration is not None and args.duration < 1:
        parser.error("--duration must be at least 1 second")
    only = tuple(n.strip() for n in (args.only or "").split(",") if n.strip())
    unknown = set(only) - {m.__name__ for m in MEASUREMENTS}
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
    )


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
        sim = start_simulator(services)
        bench.targets.append(direct_target(sim))
        bench.targets.append(azproxy_target(start_azproxy(services, sim.port)))
        if nginx is None:
            bench.note("skipped: nginx not found: no nginx column")
        else:
            try:
                ngx = start_nginx(services, nginx, sim.port)
            except StartError as exc:
                bench.note(f"skipped: nginx did not start: {exc}")
            else:
                bench.targets.append(nginx_target(ngx))
        rows, failed = run_async(run_measurements(bench))
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

    names = [n for n in TARGET_ORDER if any(n in row.values for row in rows)]
    print()
    print(render_table(rows, names) if rows else "no measurements ran")
    print(
        "\n(x) = ratio to direct. In CPU and memory rows, direct is the simulator "
        "process itself and nginx is master + worker.\nTargets are azproxy's; "
        "PASS/MISS is informative, never asserted. Absolute numbers depend on "
        "the machine's other load."
    )
    if bench.notes:
        print("\nnotes:")
        for text in bench.notes:
            print(f"  {text}")
    elapsed = time.monotonic() - started
    print(f"\ntotal time {elapsed:.0f} s")
    if options.json_out is not None:
        meta["elapsed_s"] = elapsed
        document = {
            "meta": meta,
            "rows": [row.as_json() for row in rows],
            "raw": bench.raw,
            "notes": bench.notes,
        }
        options.json_out.write_text(json.dumps(document, indent=2) + "\n")
        print(f"wrote {options.json_out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

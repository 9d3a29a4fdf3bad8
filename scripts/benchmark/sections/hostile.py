"""Hostile clients (issue 9, items 1, 5 and 6): what they cost azproxy.

- A 30 MB JSON bomb (`{"model":"gpt-4o","x":[[],[],...]}`) sent with
  credentials for which the model matters (a model-map pass-through token),
  alone and three at once, and a polite 30 MB body (a chat with a base64
  image) beside it: azproxy's answer, its RSS growth and the slowest /healthz
  answer while it handled them.
- 30 clients sending a legitimate 32 MB JSON body but its last byte: RSS
  while they are held, how many got 503 (the body budget) or 408
  (client_body_timeout_s, 2 s here), and RSS after that and once they left.
- 100 streams whose clients read nothing, from an upstream sending ~300-byte
  events (then 1 MB ones) as fast as they are taken, held until azproxy is
  idle (every stream blocked on its client): RSS growth, and the CPU azproxy
  spent until then.

Each measurement starts a fresh `azproxy serve`: memory a previous one took
and kept would hide the next one's growth. Azure is benchmark/fake_azure.py,
which answers at once and parses nothing. With --baseline-src the same
measurements run on that checkout's azproxy as well, in the baseline column,
each just before this checkout's; flags only this checkout knows (issue 9's
settings) are passed to it alone. --quick leaves out the three bombs and
the 1 MB events, and holds 10 bodies instead of 30.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from ..context import Bench, progress
from ..hostile_load import (
    Memory,
    SilentStream,
    close_all,
    hold_until_idle,
    image_chat,
    json_bomb,
    open_paused_body,
    open_silent_stream,
    post_json,
    read_status,
    with_healthz_poll,
)
from ..procfs import child_pids, cpu_seconds
from ..results import Row, check
from ..services import (
    Service,
    StartError,
    azproxy_origin,
    start_azproxy,
    start_fake_azure,
)
from ..targets import AZPROXY, BASELINE

__all__ = ["Plan", "Variant", "hostile", "no_worse", "tally"]

BOMB_BYTES = 30_000_000
HELD_BODY_BYTES = 32_000_000  # legitimate: under max_body_mb's 32 MiB
HELD_CLIENTS, HELD_CLIENTS_QUICK = 30, 10
BODY_TIMEOUT_S = 2.0  # client_body_timeout_s for the held bodies (default 60)
ANSWER_MARGIN_S = 2.5  # for the 408s to arrive after the timeout
SEND_TIMEOUT_S = 30.0
LEFT_SETTLE_S = 0.5  # after the clients left, before reading RSS
SILENT_STREAMS = 100
SMALL_EVENT, LARGE_EVENT = 300, 1_000_000
# Streams are held until azproxy is idle, every one blocked on its client:
# until then it relays what the client's and its own socket buffers still
# take (megabytes each), and its memory settles only at the end (5-7 s for
# 100 streams on a 2-core machine; a fixed shorter hold reports a fraction).
HOLD_MAX_S = 15.0  # once they are all open
STREAM_START_TIMEOUT_S = 30.0
REQUEST_TIMEOUT_S = 120.0
MIB = 1024 * 1024
# The targets are in MB (10^6 bytes); the table's memory is in MiB.
BOMB_TARGET_MIB = 160e6 / MIB
STREAMS_TARGET_MIB = 80e6 / MIB
HEALTHZ_TARGET_MS = 1000.0


@dataclass(frozen=True)
class Variant:
    """One azproxy to measure: a column of the table."""

    column: str
    src: Path | None  # None: this checkout

    def args(self, current_only: Sequence[str]) -> list[str]:
        """Flags for this azproxy: another checkout may not know this one's."""
        return list(current_only) if self.src is None else []


@dataclass(frozen=True)
class BodyRun:
    statuses: list[int]
    slowest_ms: float
    growth_mib: float
    healthz_worst_ms: float | None


@dataclass(frozen=True)
class HeldRun:
    statuses: list[int | None]  # None: no answer by the end of the wait
    held_growth_mib: float  # peak while held
    after_growth_mib: float  # when the answers were in, or the wait ended
    left_growth_mib: float  # once the clients closed their connections


@dataclass(frozen=True)
class StreamsRun:
    started: int  # streams that answered 200
    growth_mib: float  # peak while held
    held_s: float  # from the first request until azproxy was idle
    cpu_s: float  # azproxy's CPU time meanwhile


R = TypeVar("R", BodyRun, HeldRun, StreamsRun)


@dataclass(frozen=True)
class Plan:
    """What every measurement of the section shares."""

    bench: Bench
    variants: list[Variant]
    upstream_port: int  # the fake Azure's
    raw: dict[str, Any]  # the numbers, for --json

    async def each(
        self, key: str, title: str, measure: Callable[[Variant], Awaitable[R]]
    ) -> dict[str, R]:
        """The measurement for each variant in turn, kept under `key` with
        the seconds it took (the azproxy's start and stop included)."""
        found: dict[str, R] = {}
        kept: dict[str, Any] = {}
        for variant in self.variants:
            progress(f"{title} -> {variant.column}")
            started = time.monotonic()
            found[variant.column] = run = await measure(variant)
            kept[variant.column] = asdict(run) | {"seconds": time.monotonic() - started}
        self.raw[key] = kept
        return found


async def hostile(bench: Bench) -> list[Row]:
    """Items 1, 5 and 6 of issue 9, for this checkout and the baseline."""
    bench.require_proc()
    variants = _variants(bench)
    upstream = start_fake_azure(bench.services)
    plan = Plan(bench, variants, upstream.port, {})
    bench.raw["hostile"] = plan.raw
    try:
        return [
            *await _bombs(plan),
            *await _polite(plan),
            *await _held(plan),
            *await _streams(plan),
        ]
    finally:
        bench.services.stop(upstream)


async def _bombs(plan: Plan) -> list[Row]:
    bomb = json_bomb(BOMB_BYTES)
    rows: list[Row] = []
    for n in (1,) if plan.bench.options.quick else (1, 3):
        title = f"{n} x JSON bomb, 30 MB of nested empty arrays (model-map token)"
        runs = await plan.each(
            f"bomb_x{n}",
            title,
            functools.partial(_send_bodies, plan, body=bomb, copies=n),
        )
        for column, run in runs.items():
            if len(set(run.statuses)) > 1:
                plan.bench.note(f"hostile: {title}: {column}: {tally(run.statuses)}")
        rows += _bomb_rows(title, runs)
    return rows


async def _polite(plan: Plan) -> list[Row]:
    title = "polite 30 MB body: a chat with a base64 image (model-map token)"
    polite = image_chat(BOMB_BYTES)
    runs = await plan.each("polite", title, lambda v: _send_bodies(plan, v, polite, 1))
    return _polite_rows(title, runs)


async def _held(plan: Plan) -> list[Row]:
    clients = HELD_CLIENTS_QUICK if plan.bench.options.quick else HELD_CLIENTS
    title = (
        f"{clients} JSON bodies of 32 MB paused 1 byte before their end "
        f"(client_body_timeout_s {BODY_TIMEOUT_S:g} s where known)"
    )
    runs = await plan.each(
        "held_bodies", title, lambda v: _hold_bodies(plan, v, clients)
    )
    return _held_rows(title, runs)


async def _streams(plan: Plan) -> list[Row]:
    rows: list[Row] = []
    for size in (
        (SMALL_EVENT,) if plan.bench.options.quick else (SMALL_EVENT, LARGE_EVENT)
    ):
        title = (
            f"{SILENT_STREAMS} streams whose clients read nothing, "
            f"{_bytes(size)} events as fast as taken, held until azproxy idles"
        )
        runs = await plan.each(
            f"silent_streams_{size}",
            title,
            functools.partial(_silent_streams, plan, event_bytes=size),
        )
        rows += _stream_rows(title, runs, size)
    return rows


def _variants(bench: Bench) -> list[Variant]:
    """The baseline (if asked for) first, then this checkout."""
    now = Variant(AZPROXY, None)
    src = bench.options.baseline_src
    if src is None:
        return [now]
    origin = azproxy_origin(src)
    if not origin.is_relative_to(src):
        raise StartError(f"--baseline-src {src} runs the azproxy of {origin}")
    commit = _commit(src)
    bench.raw["hostile_baseline"] = {"src": str(src), "commit": commit}
    bench.note(f"hostile: baseline is {src} ({commit or 'no git commit'})")
    return [Variant(BASELINE, src), now]


def _commit(src: Path) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(src), "log", "-1", "--format=%h %s"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


@contextlib.asynccontextmanager
async def _serving(
    plan: Plan, variant: Variant, current_only: Sequence[str] = ()
) -> AsyncIterator[tuple[Service, Memory]]:
    """A fresh azproxy, warmed up by one request, and its memory from then."""
    bench = plan.bench
    service = start_azproxy(
        bench.services,
        plan.upstream_port,
        variant.args(current_only),
        name=f"azproxy-hostile-{variant.column}",
        src=variant.src,
    )
    try:
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            status, _ = await post_json(session, service.port, image_chat(1000))
        if status != 200:
            raise RuntimeError(f"{variant.column}: a small request got HTTP {status}")
        memory = Memory([service.popen.pid, *child_pids(service.popen.pid)])
        if not memory.peak_reset:
            bench.note("note: hostile: peak RSS could not be reset; it is since start")
        yield service, memory
    finally:
        bench.services.stop(service)


async def _send_bodies(
    plan: Plan, variant: Variant, body: bytes, copies: int
) -> BodyRun:
    """`copies` clients at once send `body`, while another polls /healthz."""
    async with _serving(plan, variant) as (service, memory):

        async def send() -> list[tuple[int, float]]:
            timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                return await asyncio.gather(
                    *(post_json(session, service.port, body) for _ in range(copies))
                )

        answers, worst = await with_healthz_poll(service.port, send())
        return BodyRun(
            statuses=[status for status, _ in answers],
            slowest_ms=max(seconds for _, seconds in answers) * 1e3,
            growth_mib=memory.peak_growth_mib(),
            healthz_worst_ms=worst,
        )


async def _hold_bodies(plan: Plan, variant: Variant, clients: int) -> HeldRun:
    """`clients` bodies paused one byte before their end; their answers
    within the body timeout and a margin; memory then and once they left."""
    body = image_chat(HELD_BODY_BYTES)
    timeout = ["--client-body-timeout-s", f"{BODY_TIMEOUT_S:g}"]
    async with _serving(plan, variant, timeout) as (service, memory):
        connections = await asyncio.gather(
            *(
                open_paused_body(service.port, body, SEND_TIMEOUT_S)
                for _ in range(clients)
            )
        )
        wait_s = BODY_TIMEOUT_S + ANSWER_MARGIN_S
        try:
            statuses = await asyncio.gather(
                *(read_status(reader, wait_s) for reader, _ in connections)
            )
            held, after = memory.peak_growth_mib(), memory.growth_mib()
        finally:
            await close_all([writer for _, writer in connections])
        await asyncio.sleep(LEFT_SETTLE_S)
        return HeldRun(list(statuses), held, after, memory.growth_mib())


async def _silent_streams(plan: Plan, variant: Variant, event_bytes: int) -> StreamsRun:
    """SILENT_STREAMS streams nobody reads, held until azproxy idles."""
    async with _serving(plan, variant) as (service, memory):
        # Timed from the first request: azproxy relays flat out while the
        # streams are still being opened (each one's head waits its turn).
        started, cpu_before = time.monotonic(), cpu_seconds(memory.pids)
        opened = await asyncio.gather(
            *(
                open_silent_stream(service.port, event_bytes, STREAM_START_TIMEOUT_S)
                for _ in range(SILENT_STREAMS)
            ),
            return_exceptions=True,
        )
        streams = [s for s in opened if isinstance(s, SilentStream)]
        try:
            failed = next((e for e in opened if isinstance(e, BaseException)), None)
            if failed is not None:
                raise failed
            await hold_until_idle(memory.pids, HOLD_MAX_S)
            held_s = time.monotonic() - started
            cpu_s = cpu_seconds(memory.pids) - cpu_before
            growth = memory.peak_growth_mib()
        finally:
            await close_all([stream.writer for stream in streams])
        answered = sum(s.status == 200 for s in streams)
        return StreamsRun(answered, growth, held_s, cpu_s)


# ---------------------------------------------------------------------------
# The rows


def tally(statuses: Sequence[int | None]) -> str:
    """Answers by status, most frequent first: "3 x 400", "2 x 408, 1 x none"."""
    counts = Counter("none" if s is None else str(s) for s in statuses)
    return ", ".join(f"{n} x {status}" for status, n in counts.most_common())


def no_worse(now: float | None, baseline: float | None, slack: float) -> bool | None:
    """Whether `now` costs no more than the baseline, give or take 20 % and
    `slack` (a shared machine's noise); None without both numbers."""
    if now is None or baseline is None:
        return None
    return now <= baseline * 1.2 + slack


def _row(
    title: str,
    metric: str,
    unit: str,
    values: dict[str, float | None],
    target: str = "",
    ok: Callable[[float], bool] | None = None,
) -> Row:
    verdict = None if ok is None else check(values.get(AZPROXY), ok)
    return Row(title, metric, unit, values, target, verdict, ratio=False)


def _status(statuses: Sequence[int | None]) -> float | None:
    """The one status all got, for the table (the tally is in --json)."""
    return float(statuses[0]) if len(set(statuses)) == 1 and statuses[0] else None


def _bomb_rows(title: str, runs: dict[str, BodyRun]) -> list[Row]:
    return [
        _row(
            title,
            "HTTP status (all)",
            "code",
            {c: _status(r.statuses) for c, r in runs.items()},
            "400 body_too_complex",
            lambda v: v == 400,
        ),
        _row(title, "time to answer", "ms", {c: r.slowest_ms for c, r in runs.items()}),
        _row(
            title,
            "RSS growth (peak)",
            "MiB",
            {c: r.growth_mib for c, r in runs.items()},
            f"< {BOMB_TARGET_MIB:.0f} MiB (160 MB)",
            lambda v: v < BOMB_TARGET_MIB,
        ),
        _row(
            title,
            "slowest /healthz meanwhile",
            "ms",
            {c: r.healthz_worst_ms for c, r in runs.items()},
            f"< {HEALTHZ_TARGET_MS:.0f} ms",
            lambda v: v < HEALTHZ_TARGET_MS,
        ),
    ]


def _polite_rows(title: str, runs: dict[str, BodyRun]) -> list[Row]:
    base = runs.get(BASELINE)
    now = runs[AZPROXY]
    return [
        _row(
            title,
            "HTTP status",
            "code",
            {c: _status(r.statuses) for c, r in runs.items()},
            "200",
            lambda v: v == 200,
        ),
        Row(
            title,
            "time to answer",
            "ms",
            {c: r.slowest_ms for c, r in runs.items()},
            "no more than baseline",
            no_worse(now.slowest_ms, None if base is None else base.slowest_ms, 50),
            ratio=False,
        ),
        Row(
            title,
            "RSS growth (peak)",
            "MiB",
            {c: r.growth_mib for c, r in runs.items()},
            "no more than baseline",
            no_worse(now.growth_mib, None if base is None else base.growth_mib, 5),
            ratio=False,
        ),
        _row(
            title,
            "slowest /healthz meanwhile",
            "ms",
            {c: r.healthz_worst_ms for c, r in runs.items()},
        ),
    ]


def _held_rows(title: str, runs: dict[str, HeldRun]) -> list[Row]:
    def count(status: int | None) -> dict[str, float | None]:
        return {c: float(r.statuses.count(status)) for c, r in runs.items()}

    wait = f"{BODY_TIMEOUT_S + ANSWER_MARGIN_S:g} s"
    return [
        _row(
            title,
            "RSS growth while held (peak)",
            "MiB",
            {c: r.held_growth_mib for c, r in runs.items()},
        ),
        _row(title, "answered 408 (client_body_timeout_s)", "count", count(408)),
        _row(title, "answered 503 (body budget)", "count", count(503)),
        _row(title, f"no answer within {wait}", "count", count(None)),
        _row(
            title,
            f"RSS growth {wait} after the pause",
            "MiB",
            {c: r.after_growth_mib for c, r in runs.items()},
        ),
        _row(
            title,
            "RSS growth once the clients left",
            "MiB",
            {c: r.left_growth_mib for c, r in runs.items()},
        ),
    ]


def _stream_rows(title: str, runs: dict[str, StreamsRun], size: int) -> list[Row]:
    small = size == SMALL_EVENT
    return [
        _row(
            title,
            "streams answered 200",
            "count",
            {c: float(r.started) for c, r in runs.items()},
            f"{SILENT_STREAMS}",
            lambda v: v == SILENT_STREAMS,
        ),
        _row(
            title,
            "RSS growth (peak)",
            "MiB",
            {c: r.growth_mib for c, r in runs.items()},
            f"< {STREAMS_TARGET_MIB:.0f} MiB (80 MB)" if small else "",
            (lambda v: v < STREAMS_TARGET_MIB) if small else None,
        ),
        _row(
            title,
            "time until azproxy idles (from the first request)",
            "s",
            {c: r.held_s for c, r in runs.items()},
        ),
        _row(
            title,
            "azproxy CPU meanwhile",
            "s",
            {c: r.cpu_s for c, r in runs.items()},
        ),
    ]


def _bytes(size: int) -> str:
    return f"{size // 1_000_000} MB" if size >= 1_000_000 else f"{size}-byte"

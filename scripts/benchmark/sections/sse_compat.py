"""What tidying Azure's streams costs (sse_compat=openai) against relaying
them raw."""

from __future__ import annotations

import asyncio

import aiohttp

from ..context import Bench, Skip, progress
from ..procfs import cpu_seconds
from ..results import Row, ratio
from ..services import start_azproxy
from ..stream_client import client_session
from ..targets import AZPROXY, DIRECT, STREAM_BODY, Target, azproxy_target

__all__ = ["sse_compat_cost"]

SSE_STREAMS = 50
SSE_CHUNKS = 100
SSE_DELAY_MS = 1.0
SSE_ROUNDS_QUICK = 6
SSE_ROUNDS = 20

# Per mode: (CPU seconds of the target, streams, events received, whether
# any Azure-only event was received).
Totals = tuple[float, int, int, bool]


async def _count_events(
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


async def _sse_round(
    session: aiohttp.ClientSession, target: Target, async_filter: bool
) -> Totals:
    """One round of concurrent streams through the target."""
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
        *(_count_events(session, target.url, headers) for _ in range(SSE_STREAMS))
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
                    await _sse_round(session, target, async_filter)
                for _ in range(rounds):
                    for mode, target in modes.items():
                        cpu, streams, events, leaked = await _sse_round(
                            session, target, async_filter
                        )
                        c, s, e, lk = totals[mode]
                        totals[mode] = (c + cpu, s + streams, e + events, lk or leaked)
            rows += _sse_rows(bench, section, kind, totals)
    finally:
        bench.services.stop(raw_service)
    return rows


def _sse_rows(
    bench: Bench, section: str, kind: str, measured: dict[str, Totals]
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

"""An aiohttp client that times every SSE event of streamed answers."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import aiohttp

from .context import Bench
from .results import percentile
from .targets import STREAM_BODY, Target

__all__ = [
    "BUNCHED_MS",
    "STREAM_CHUNKS",
    "STREAM_DELAY_MS",
    "StreamSample",
    "StreamStats",
    "client_session",
    "report_stream_errors",
    "stream_round",
]

STREAM_CHUNKS = 100
STREAM_DELAY_MS = 5.0
STREAM_TIMEOUT_S = 60.0
# An event that arrives less than this after the previous one came in a burst:
# with 5 ms between events upstream, bursts mean someone buffered.
BUNCHED_MS = 1.0


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


def _is_answer_event(event: bytes) -> bool:
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


async def _one_stream(
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
                    if answer is None and _is_answer_event(event):
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
            *(
                _one_stream(session, target, chunks, delay_ms)
                for _ in range(concurrency)
            )
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

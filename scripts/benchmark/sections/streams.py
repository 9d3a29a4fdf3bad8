"""Streamed answers through every target that streams: first and last byte,
the first answer event, and the gaps between events (no buffering)."""

from __future__ import annotations

from dataclasses import asdict

from ..context import Bench, progress
from ..results import Row, check, minus, ratio
from ..stream_client import (
    BUNCHED_MS,
    STREAM_CHUNKS,
    STREAM_DELAY_MS,
    StreamSample,
    StreamStats,
    client_session,
    report_stream_errors,
    stream_round,
)
from ..targets import AZPROXY, DIRECT

__all__ = ["STREAM_CONCURRENCY", "streams_c50"]

STREAM_CONCURRENCY = 50


async def streams_c50(bench: Bench) -> list[Row]:
    """100 events 5 ms apart, 50 at a time: first/last byte and event gaps."""
    section = (
        f"streams {STREAM_CHUNKS} chunks x {STREAM_DELAY_MS:g} ms, "
        f"c{STREAM_CONCURRENCY} ({bench.options.stream_rounds} rounds)"
    )
    stats: dict[str, StreamStats] = {}
    for target in bench.stream_targets:
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

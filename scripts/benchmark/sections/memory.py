"""Server memory while every streaming target carries 200 concurrent streams."""

from __future__ import annotations

from ..context import Bench, progress
from ..procfs import reset_peak_rss, status_kib
from ..results import Row, check
from ..stream_client import (
    StreamStats,
    client_session,
    report_stream_errors,
    stream_round,
)
from ..targets import AZPROXY

__all__ = ["RSS_STREAMS", "streams_200_rss"]

RSS_STREAMS = 200


async def streams_200_rss(bench: Bench) -> list[Row]:
    """Peak RSS of each server while it carries 200 concurrent streams."""
    bench.require_proc()
    section = f"{RSS_STREAMS} concurrent streams: server memory"
    idle: dict[str, float | None] = {}
    peak: dict[str, float | None] = {}
    ttlb: dict[str, float | None] = {}
    errors: dict[str, float | None] = {}
    for target in bench.stream_targets:
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

"""A 500 MiB file upload streamed through azproxy, and azproxy's memory."""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator

import aiohttp

from ..context import Bench, Skip, progress
from ..procfs import reset_peak_rss, status_kib
from ..results import Row, check
from ..services import LOOPBACK
from ..targets import AZPROXY, DIRECT

__all__ = ["upload_rss"]

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

"""The real `azproxy serve` process: SIGTERM under load, no resource growth."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.faults.conftest import ACCESS_KEY, AUTH, CHAT, STREAM, Sim
from tests.processes import Running, running


@pytest.fixture
def server(sim: Sim, tmp_path: Path) -> Iterator[Running]:
    env = {
        "AZURE_OPENAI_ENDPOINT": sim.url,
        "AZURE_OPENAI_API_KEY": "sim-key",
        "AZPROXY_MODEL_MAP": "gpt-4o=dep-a",
        "AZPROXY_ACCESS_KEYS": ACCESS_KEY,
        "AZPROXY_SHUTDOWN_GRACE_S": "20",
    }
    with running(["serve", "--port", "0"], tmp_path / "log", env=env) as proc:
        yield proc


async def test_sigterm_during_20_streams_lets_them_all_complete(
    server: Running,
) -> None:
    slow = AUTH | {"x-sim-chunks": "20", "x-sim-chunk-delay-ms": "50"}
    url = f"{server.url}/v1/chat/completions"
    async with aiohttp.ClientSession() as session:
        responses = await asyncio.gather(
            *(session.post(url, data=STREAM, headers=slow) for _ in range(20))
        )
        for response in responses:
            assert response.status == 200
            await response.content.readany()
        server.process.send_signal(signal.SIGTERM)
        bodies = await asyncio.gather(*(r.read() for r in responses))
    for body in bodies:
        assert body.endswith(b"data: [DONE]\n\n")
        assert b'"error"' not in body
    deadline = time.monotonic() + 10
    while server.process.poll() is None:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert server.process.returncode == 0


def resources(pid: int) -> tuple[int, int]:
    """(open file descriptors, resident memory in KiB) of a process."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    status = Path(f"/proc/{pid}/status").read_text()
    rss = next(
        int(line.split()[1])
        for line in status.splitlines()
        if line.startswith("VmRSS:")
    )
    return fds, rss


async def test_1000_sequential_requests_leak_no_descriptors_or_memory(
    server: Running,
) -> None:
    url = f"{server.url}/v1/chat/completions"
    async with aiohttp.ClientSession() as session:

        async def one(stream: bool) -> None:
            async with session.post(
                url, data=STREAM if stream else CHAT, headers=AUTH
            ) as response:
                assert response.status == 200
                await response.read()

        for n in range(200):  # warm up: pools, caches, allocator arenas
            await one(stream=n % 2 == 0)
        fds_before, rss_before = resources(server.process.pid)
        for n in range(1000):
            await one(stream=n % 2 == 0)
        fds_after, rss_after = resources(server.process.pid)
    assert fds_after - fds_before <= 2
    assert rss_after - rss_before < 10 * 1024  # KiB: loose, allocator noise

"""A fleet sharing deployment state through Redis (redis_url): what it costs
per request, and how fast a cooldown one process learns reaches another.

Three azproxy processes with the same server-side config (one model, dep-a
first and dep-b after it): `alone` without Redis, `a` and `b` on one
redis-server started here. CPU per small non-streamed chat is measured on
`alone` and `a` in alternating rounds of the same load, for a key without
limits and for a LIMITED one (rpm, tpm, max_concurrent and a token quota, all
too high to refuse anything: every request is counted, in the process
without Redis, in Redis with it), with the bare aiohttp relay (the floor)
under the same load in each round. Then, in each trial,
dep-a answers one 429 to `a`; `b` is asked in a tight loop, and the delay is
the time from the request to `a` that meets the 429 being sent, to the first request
`b` sends to dep-b without trying dep-a: an upper bound, which includes
`a`'s own round trips to the 429 and to dep-b, and one request to `b`.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import time

import aiohttp

from ..context import Bench, Skip, progress
from ..procfs import cpu_seconds
from ..results import Row
from ..services import LOOPBACK, Service, _free_ports, _wait_ready, start_azproxy
from ..stream_client import client_session
from ..targets import DIRECT, FLOOR, OPENAI_PATH, SMALL_BODY

__all__ = ["fleet"]

KEY = "bench-fleet-key-0123456789"
LIMITED_KEY = "bench-fleet-limited-key-0123456789"
LIMITS = (
    "rpm = 100000000, tpm = 1000000000, max_concurrent = 100000, "
    "token_quota = 1000000000000"
)
CONFIG = """
access_keys = ["{key}", {{ key = "{limited}", name = "limited", {limits} }}]

[endpoints.sim]
url = "http://{host}:{port}"
api_key = "bench-key"

[model_map]
"gpt-4o" = [
  {{ endpoint = "sim", deployment = "dep-a", priority = 1 }},
  {{ endpoint = "sim", deployment = "dep-b", priority = 2 }},
]
"""
CONCURRENCY = 50
COOLDOWN_MS = 1500
HEADERS = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
LIMITED = HEADERS | {"Authorization": f"Bearer {LIMITED_KEY}"}


def _start_redis(bench: Bench) -> Service:
    server = shutil.which("redis-server") or shutil.which("/usr/bin/redis-server")
    if server is None:
        raise Skip("redis-server not found (apt-get install redis-server)")
    (port,) = _free_ports(1)
    folder = bench.tmp / "redis"
    folder.mkdir(exist_ok=True)
    argv = [server, "--port", str(port), "--bind", LOOPBACK, "--dir", str(folder)]
    argv += ["--save", "", "--appendonly", "no"]
    service = bench.services.start("redis", argv, port, {})
    _wait_ready(service, lambda: b"Ready to accept" in service.log.read_bytes())
    return service


async def _load(
    session: aiohttp.ClientSession,
    url: str,
    requests: int,
    headers: dict[str, str] = HEADERS,
) -> None:
    per_client = requests // CONCURRENCY

    async def client() -> None:
        for _ in range(per_client):
            async with session.post(url, data=SMALL_BODY, headers=headers) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"fleet load got HTTP {resp.status}")

    await asyncio.gather(*(client() for _ in range(CONCURRENCY)))


async def _served_by(session: aiohttp.ClientSession, url: str) -> str:
    async with session.post(url, data=SMALL_BODY, headers=HEADERS) as resp:
        await resp.read()
        return resp.headers.get("x-azproxy-deployment", "")


async def fleet(bench: Bench) -> list[Row]:
    bench.require_proc()
    sim = bench.target(DIRECT)
    if sim is None:
        raise Skip("needs the simulator")
    redis = _start_redis(bench)
    config = bench.tmp / "fleet.toml"
    config.write_text(
        CONFIG.format(
            key=KEY, limited=LIMITED_KEY, limits=LIMITS, host=LOOPBACK, port=sim.port
        )
    )
    args = ["--config", str(config)]
    shared = {"AZPROXY_REDIS_URL": f"redis://{LOOPBACK}:{redis.port}/0"}
    alone = start_azproxy(bench.services, sim.port, args, name="azproxy-alone")
    a = start_azproxy(bench.services, sim.port, args, name="fleet-a", env=shared)
    b = start_azproxy(bench.services, sim.port, args, name="fleet-b", env=shared)
    urls = {s.name: f"http://{LOOPBACK}:{s.port}{OPENAI_PATH}" for s in (alone, a, b)}
    rounds = 4 if bench.options.quick else 10
    requests = 1000
    section = f"fleet: {rounds} x {requests} small chats, c{CONCURRENCY}"
    progress(section)
    kinds = {"plain": HEADERS, "limited": LIMITED}
    # Per round, in µs per request: medians of rounds are reported (one
    # round disturbed by the other users of the machine moves them little).
    cpu: dict[tuple[str, str], list[float]] = {
        (s.name, kind): [] for s in (alone, a) for kind in kinds
    }
    floor = bench.target(FLOOR)
    floor_cpu: list[float] = []
    try:
        async with client_session() as session:
            for service in (alone, a):  # warm-up
                for headers in kinds.values():
                    await _load(session, urls[service.name], requests // 2, headers)
            for _ in range(rounds):
                for kind, headers in kinds.items():
                    for service in (alone, a):
                        before = cpu_seconds([service.popen.pid])
                        await _load(session, urls[service.name], requests, headers)
                        used = cpu_seconds([service.popen.pid]) - before
                        cpu[service.name, kind].append(used * 1e6 / requests)
                if floor is not None:
                    before = cpu_seconds(floor.pids())
                    await _load(session, floor.url, requests)
                    used = cpu_seconds(floor.pids()) - before
                    floor_cpu.append(used * 1e6 / requests)
            delays = await _propagation(
                session,
                f"http://{LOOPBACK}:{sim.port}",
                urls[a.name],
                urls[b.name],
                trials=3 if bench.options.quick else 10,
            )
    finally:
        for service in (b, a, alone, redis):
            bench.services.stop(service)
    per_request = {k: statistics.median(us) for k, us in cpu.items()}
    bench.raw["fleet"] = {
        "cpu_us_per_request": {f"{n}/{k}": us for (n, k), us in per_request.items()},
        "cpu_us_per_round": {f"{n}/{k}": us for (n, k), us in cpu.items()},
        "floor_us_per_round": floor_cpu,
        "delays_ms": delays,
    }
    rows = []
    if floor is not None:
        rows.append(
            Row(
                section,
                "bare aiohttp relay CPU per request (the floor), median of rounds",
                "us",
                {"azproxy": statistics.median(floor_cpu)},
                ratio=False,
            )
        )
    for kind, what in (("plain", "a key without limits"), ("limited", "a limited key")):
        without, with_ = per_request[alone.name, kind], per_request[a.name, kind]
        # Each round's difference, its two loads run one after the other.
        added = statistics.median(
            w - o for w, o in zip(cpu[a.name, kind], cpu[alone.name, kind], strict=True)
        )
        rows += [
            Row(
                section,
                f"azproxy CPU per request, {what}, no redis_url (median)",
                "us",
                {"azproxy": without},
                ratio=False,
            ),
            Row(
                section,
                f"azproxy CPU per request, {what}, redis_url (median)",
                "us",
                {"azproxy": with_},
                ratio=False,
            ),
            Row(
                section,
                f"added CPU per request with redis_url, {what}, median of rounds",
                "us",
                {"azproxy": added},
                ratio=False,
            ),
        ]
    if delays:
        rows += [
            Row(
                section,
                "cooldown reaches another process, median (bound)",
                "ms",
                {"azproxy": statistics.median(delays)},
                ratio=False,
            ),
            Row(
                section,
                "cooldown reaches another process, worst (bound)",
                "ms",
                {"azproxy": max(delays)},
                ratio=False,
            ),
        ]
    return rows


async def _propagation(
    session: aiohttp.ClientSession, sim: str, a: str, b: str, trials: int
) -> list[float]:
    """Milliseconds from the request to `a` that meets a 429 until `b`
    avoids dep-a."""
    delays: list[float] = []
    for _ in range(trials):
        body = {"deployment": "dep-a", "faults": [f"429:{COOLDOWN_MS}"]}
        async with session.post(f"{sim}/_sim/faults", json=body) as resp:
            resp.raise_for_status()
        asked = time.perf_counter()
        if await _served_by(session, a) != "dep-b":
            raise RuntimeError("the 429 did not move a's request to dep-b")
        deadline = asked + 5.0
        while time.perf_counter() < deadline:
            sent = time.perf_counter()
            if await _served_by(session, b) == "dep-b":
                delays.append((sent - asked) * 1e3)
                break
        # The cooldown ends, a probe through each process finds dep-a well.
        await asyncio.sleep(COOLDOWN_MS / 1e3 + 0.2)
        for url in (a, b):
            for _ in range(20):
                if await _served_by(session, url) == "dep-a":
                    break
                await asyncio.sleep(0.1)
    return delays

#!/usr/bin/env python3
"""CPU of a limited key's admission and settlement, in this process alone:
the in-process counters beside the shared ones on a loopback redis-server.

    python scripts/profile_admission.py [--requests N] [--rounds R]
        [--concurrency C] [--cprofile]

C tasks (50) admit and settle N requests of a key with every limit (none
reached), in alternating rounds against each store; the median CPU per
request of each, and the difference, in µs. No HTTP, no server: only what
the limits cost (limits/store.py, fleet/counters.py, fleet/coalesce.py and
redis-py). --cprofile prints where the shared rounds' time went.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import shutil
import socket
import statistics
import subprocess
import sys
import time

from azproxy.fleet.breaker import RedisBreaker
from azproxy.fleet.connection import Link
from azproxy.fleet.counters import SharedCounters
from azproxy.fleet.names import Names
from azproxy.limits.store import CounterStore, InProcessStore, Ticket
from azproxy.settings.redis_url import RedisURL
from azproxy.settings.server_side import Limits

LIMITS = Limits(
    "limited", rpm=10**8, tpm=10**9, max_concurrent=10**5, token_quota=10**12
)


async def _load(store: CounterStore, requests: int, concurrency: int) -> None:
    async def client() -> None:
        for _ in range(requests // concurrency):
            ticket = await store.admit(LIMITS, 20)
            assert isinstance(ticket, Ticket)
            await asyncio.sleep(0)  # the request, meanwhile
            ticket.settle(30)

    await asyncio.gather(*(client() for _ in range(concurrency)))


async def _rounds(port: int, options: argparse.Namespace) -> None:
    link = Link(RedisURL(f"redis://127.0.0.1:{port}/0"), timeout_s=1.0)
    breaker = RedisBreaker(timeout_s=1.0, where="loopback")
    shared = SharedCounters(
        link, breaker, Names("profile"), lease_s=30, closed=False, clock=time.time
    )
    batches = asyncio.get_running_loop().create_task(shared.batch.run())
    stores: dict[str, CounterStore] = {
        "local": InProcessStore(time.time),
        "shared": shared,
    }
    used: dict[str, list[float]] = {name: [] for name in stores}
    profile = cProfile.Profile() if options.cprofile else None
    for store in stores.values():  # warm-up
        await _load(store, options.requests, options.concurrency)
    for _ in range(options.rounds):
        for name, store in stores.items():
            if profile and name == "shared":
                profile.enable()
            before = time.process_time()
            await _load(store, options.requests, options.concurrency)
            await asyncio.sleep(0.06)  # the settlements' batch
            used[name].append((time.process_time() - before) * 1e6 / options.requests)
            if profile:
                profile.disable()
    batches.cancel()
    await link.aclose()
    assert breaker.up, "Redis did not answer in time: rerun on a quieter machine"
    for name, values in used.items():
        rounds = " ".join(f"{v:.0f}" for v in values)
        print(f"{name:7} {statistics.median(values):6.1f} us/request  ({rounds})")
    added = statistics.median(
        s - x for s, x in zip(used["shared"], used["local"], strict=True)
    )
    print(f"added   {added:6.1f} us/request, median of each round's difference")
    if profile:
        pstats.Stats(profile).sort_stats("tottime").print_stats(20)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000, metavar="N")
    parser.add_argument("--rounds", type=int, default=7, metavar="R")
    parser.add_argument("--concurrency", type=int, default=50, metavar="C")
    parser.add_argument("--cprofile", action="store_true")
    options = parser.parse_args()
    server = shutil.which("redis-server")
    if server is None:
        print("redis-server not found", file=sys.stderr)
        return 1
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    redis = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        asyncio.run(_rounds(port, options))
    finally:
        redis.terminate()
        redis.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())

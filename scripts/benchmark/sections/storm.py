"""A 429 storm on one of two deployments of a model (server-side failover)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from ..context import Bench, Skip, progress
from ..results import Row, minus, percentile
from ..services import LOOPBACK, start_azproxy
from ..stream_client import client_session
from ..targets import AZPROXY, DEPLOYMENT, DIRECT, OPENAI_PATH, SMALL_BODY

__all__ = ["storm_429"]

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

            await _storm_load(session, url, 0.5)  # warm-up
            progress(f"{section}: without the storm")
            calm = await _storm_load(session, url, seconds)
            before = await faults([f"429:{STORM_RETRY_AFTER_MS}*"])
            progress(f"{section}: with the storm")
            storm = await _storm_load(session, url, seconds)
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


async def _storm_load(
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

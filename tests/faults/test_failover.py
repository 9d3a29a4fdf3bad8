"""Failover between deployments, cooldowns, the circuit breaker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Callable

import aiohttp
import pytest

from azproxy.front.lifecycle import LIFECYCLE
from azproxy.simulator import apply_faults
from tests.clock import FakeClock
from tests.faults.conftest import AUTH, CHAT, STREAM, ProxyMaker, Sim


async def until(condition: Callable[[], bool]) -> None:
    """Wait for something the proxy does on its own (5 s at most)."""
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.01)


async def test_a_429_storm_on_one_deployment_is_served_by_the_other(
    sim: Sim, proxy_with: ProxyMaker
) -> None:
    proxy = await proxy_with()
    apply_faults(sim.state, "dep-a", ["429*"])
    headers = AUTH | {"x-sim-retry-after-ms": "60000"}
    served = []
    for _ in range(30):
        response = await proxy.post("/v1/chat/completions", data=CHAT, headers=headers)
        assert response.status == 200
        body = await response.json()
        assert body["choices"][0]["message"]["content"].startswith("Hello!")
        served.append(response.headers["x-azproxy-deployment"])
    assert set(served) == {"dep-b"}
    # dep-a answered 429 once, then cooled down for the 60 s it asked for:
    # it got no further traffic.
    assert sim.count("dep-a") == 1
    assert sim.count("dep-b") == 30


async def test_when_every_deployment_cools_down_the_client_gets_429_at_once(
    sim: Sim, proxy_with: ProxyMaker
) -> None:
    proxy = await proxy_with(rate_limit_cooldown_s=30)
    apply_faults(sim.state, "dep-a", ["429:5000*"])
    apply_faults(sim.state, "dep-b", ["429:2000*"])
    response = await proxy.post("/v1/chat/completions", data=CHAT, headers=AUTH)
    assert response.status == 429
    error = (await response.json())["error"]
    assert error["code"] == "rate_limit_exceeded"
    assert response.headers["Retry-After"] == "2"
    assert 1900 <= int(response.headers["retry-after-ms"]) <= 2000
    assert sim.count("dep-a") == sim.count("dep-b") == 1

    started = time.monotonic()
    again = await proxy.post("/v1/chat/completions", data=CHAT, headers=AUTH)
    assert again.status == 429
    assert time.monotonic() - started < 0.5  # answered at once, nobody slept
    assert int(again.headers["retry-after-ms"]) <= 2000
    assert sim.count("dep-a") == sim.count("dep-b") == 1  # Azure left alone


async def test_connection_refused_fails_over(sim: Sim, proxy_with: ProxyMaker) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    endpoints = {
        "dead": {"url": f"http://127.0.0.1:{dead_port}", "api_key": "k"},
        "sim": {"url": sim.url, "api_key": "k"},
    }
    routes = [
        {"endpoint": "dead", "deployment": "dep-a", "priority": 1},
        {"endpoint": "sim", "deployment": "dep-b", "priority": 2},
    ]
    proxy = await proxy_with(routes, endpoints, error_cooldown_s=30)
    for _ in range(3):
        response = await proxy.post("/v1/chat/completions", data=CHAT, headers=AUTH)
        assert response.status == 200
        assert response.headers["x-azproxy-deployment"] == "dep-b"
    assert sim.count("dep-b") == 3
    # The first request's move is counted as a failover, not as a retry.
    metrics = await (await proxy.get("/metrics")).text()
    assert 'azproxy_failovers_total{deployment="dep-b",model="gpt-4o"} 1.0' in metrics
    assert "azproxy_retries_total{" not in metrics


async def test_an_upstream_hanging_before_headers_fails_over(
    sim: Sim, proxy_with: ProxyMaker
) -> None:
    routes = [
        {"endpoint": "sim", "deployment": "dep-a", "priority": 1},
        {"endpoint": "sim", "deployment": "dep-b", "priority": 2},
    ]
    proxy = await proxy_with(routes, header_timeout_s=0.3, error_cooldown_s=30)
    apply_faults(sim.state, "dep-a", ["hang-headers*"])
    started = time.monotonic()
    response = await proxy.post("/v1/chat/completions", data=CHAT, headers=AUTH)
    assert response.status == 200
    assert response.headers["x-azproxy-deployment"] == "dep-b"
    assert 0.3 <= time.monotonic() - started < 2
    # While dep-a cools down, requests go straight to dep-b.
    started = time.monotonic()
    response = await proxy.post("/v1/chat/completions", data=CHAT, headers=AUTH)
    assert response.headers["x-azproxy-deployment"] == "dep-b"
    assert time.monotonic() - started < 0.3
    assert sim.count("dep-a") == 1


async def test_5xx_bursts_trip_the_breaker_then_a_single_probe_closes_it(
    sim: Sim, proxy_with: ProxyMaker, clock: FakeClock
) -> None:
    routes = [
        {"endpoint": "sim", "deployment": "dep-a", "priority": 1},
        {"endpoint": "sim", "deployment": "dep-b", "priority": 2},
    ]
    # A long error cooldown that a 5xx must not start: dep-a stays in use
    # until its breaker opens.
    proxy = await proxy_with(
        routes, breaker_failures=3, error_cooldown_s=30, breaker_open_s=0.3
    )
    apply_faults(sim.state, "dep-a", ["500*"])

    async def served_by() -> str:
        response = await proxy.post("/v1/chat/completions", data=CHAT, headers=AUTH)
        assert response.status == 200
        return str(response.headers["x-azproxy-deployment"])

    assert [await served_by() for _ in range(3)] == ["dep-b"] * 3
    assert sim.count("dep-a") == 3  # three failures in a row: the breaker opens
    assert [await served_by() for _ in range(5)] == ["dep-b"] * 5
    assert sim.count("dep-a") == 3  # skipped while open
    clock.advance(0.29)
    assert await served_by() == "dep-b"
    assert sim.count("dep-a") == 3  # still open until breaker_open_s is over

    clock.advance(0.06)  # breaker_open_s (0.3 s) is over
    assert await served_by() == "dep-b"  # the half-open probe failed...
    assert sim.count("dep-a") == 4
    assert await served_by() == "dep-b"  # ...so it is open again
    assert sim.count("dep-a") == 4

    apply_faults(sim.state, "dep-a", [])  # dep-a recovers
    clock.advance(0.35)
    assert await served_by() == "dep-a"  # the probe succeeds: closed
    assert [await served_by() for _ in range(3)] == ["dep-a"] * 3


async def test_overloaded_first_event_fails_over(
    sim: Sim, proxy_with: ProxyMaker
) -> None:
    routes = [
        {"endpoint": "sim", "deployment": "dep-a", "priority": 1},
        {"endpoint": "sim", "deployment": "dep-b", "priority": 2},
    ]
    proxy = await proxy_with(routes)
    apply_faults(sim.state, "dep-a", ["overloaded"])
    response = await proxy.post("/v1/chat/completions", data=STREAM, headers=AUTH)
    body = await response.read()
    assert response.headers["x-azproxy-deployment"] == "dep-b"
    assert body.endswith(b"data: [DONE]\n\n")
    assert b"overloaded" not in body


async def test_client_errors_are_not_failed_over(
    sim: Sim, proxy_with: ProxyMaker
) -> None:
    routes = [
        {"endpoint": "sim", "deployment": "dep-a", "priority": 1},
        {"endpoint": "sim", "deployment": "dep-b", "priority": 2},
    ]
    proxy = await proxy_with(routes)
    apply_faults(sim.state, "dep-a", ["400*"])
    response = await proxy.post("/v1/chat/completions", data=CHAT, headers=AUTH)
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "BadRequest"
    assert sim.count("dep-b") == 0


async def test_mid_stream_abort_ends_with_an_error_event_and_no_retry(
    sim: Sim, proxy_with: ProxyMaker
) -> None:
    proxy = await proxy_with(["sim/dep-a", "sim/dep-b"])
    apply_faults(sim.state, "dep-a", ["abort*"])
    apply_faults(sim.state, "dep-b", ["abort*"])
    response = await proxy.post("/v1/chat/completions", data=STREAM, headers=AUTH)
    assert response.status == 200
    received = b""
    with pytest.raises(aiohttp.ClientPayloadError):  # no [DONE]: a cut stream
        async for piece in response.content.iter_any():
            received += piece
    events = [e for e in received.split(b"\n\n") if e]
    # Azure sent two events before the cut: the prompt-filter one (dropped by
    # sse_compat=openai) and the role chunk. Then azproxy's error event.
    assert len(events) == 2
    assert b'"role":"assistant"' in events[0]
    assert json.loads(events[-1][6:])["error"]["code"] == "upstream_stream_error"
    assert sim.count("dep-a") + sim.count("dep-b") == 1


async def test_the_attempt_budget_bounds_failovers(
    sim: Sim, proxy_with: ProxyMaker
) -> None:
    routes = [f"sim/dep-{n}" for n in range(5)]
    proxy = await proxy_with(routes, max_attempts=2)
    for n in range(5):
        apply_faults(sim.state, f"dep-{n}", ["503*"])
    response = await proxy.post("/v1/chat/completions", data=CHAT, headers=AUTH)
    assert response.status == 503  # the last answer, relayed as Azure sent it
    assert sum(sim.count(f"dep-{n}") for n in range(5)) == 2


async def test_a_cancelled_half_open_probe_does_not_lock_the_deployment_out(
    sim: Sim, proxy_with: ProxyMaker, clock: FakeClock
) -> None:
    proxy = await proxy_with(["sim/dep-a"], breaker_failures=1, breaker_open_s=0.2)
    apply_faults(sim.state, "dep-a", ["500"])
    failed = await proxy.post("/v1/chat/completions", data=CHAT, headers=AUTH)
    assert failed.status == 500  # one failure: the breaker opens
    clock.advance(0.25)
    # The half-open probe hangs, and its client gives up.
    with_hang = AUTH | {"x-sim-fault": "hang-headers"}
    probe = asyncio.ensure_future(
        proxy.post("/v1/chat/completions", data=CHAT, headers=with_hang)
    )
    await until(lambda: sim.count("dep-a") == 2)  # the probe reached Azure
    probe.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await probe
    # azproxy has seen its client go and ended the probe's request.
    await until(lambda: proxy.server.app[LIFECYCLE].in_flight == 0)
    # The next request is the new probe, not a 429 for ever.
    response = await proxy.post("/v1/chat/completions", data=CHAT, headers=AUTH)
    assert response.status == 200
    assert response.headers["x-azproxy-deployment"] == "dep-a"


async def test_one_clients_bad_requests_do_not_fail_another_clients(
    sim: Sim, proxy_with: ProxyMaker
) -> None:
    # The 45-of-47 report, scaled down: a client whose requests Azure answers
    # with a 500 (a malformed body) used to cool every deployment of the
    # model for error_cooldown_s, and the healthy client beside it got 429s.
    proxy = await proxy_with(["sim/dep-a"], error_cooldown_s=30)
    bad = AUTH | {"x-sim-fault": "500"}
    for _ in range(8):
        refused = await proxy.post("/v1/chat/completions", data=CHAT, headers=bad)
        assert refused.status == 500  # Azure's answer, relayed
        assert (await refused.json())["error"]["code"] == "InternalServerError"
        healthy = await proxy.post("/v1/chat/completions", data=CHAT, headers=AUTH)
        assert healthy.status == 200
        body = await healthy.json()
        assert body["choices"][0]["message"]["content"].startswith("Hello!")
    assert sim.count("dep-a") == 16  # every request reached Azure, once


async def test_when_every_deployment_failed_the_least_recent_is_tried_anyway(
    sim: Sim, proxy_with: ProxyMaker
) -> None:
    routes = [
        {"endpoint": "sim", "deployment": "dep-a", "priority": 1},
        {"endpoint": "sim", "deployment": "dep-b", "priority": 2},
    ]
    proxy = await proxy_with(routes, error_cooldown_s=30)
    apply_faults(sim.state, "dep-a", ["close"])  # once each
    apply_faults(sim.state, "dep-b", ["close"])
    response = await proxy.post("/v1/chat/completions", data=CHAT, headers=AUTH)
    assert response.status == 502
    assert sim.count("dep-a") == sim.count("dep-b") == 1
    # Both cool for 30 s after a connection failure. Rather than refuse
    # everyone (Envoy's panic threshold), dep-a, which failed first, is tried.
    response = await proxy.post("/v1/chat/completions", data=CHAT, headers=AUTH)
    assert response.status == 200
    assert response.headers["x-azproxy-deployment"] == "dep-a"
    assert sim.count("dep-a") == 2
    # It answered well: in use again, no panic needed.
    response = await proxy.post("/v1/chat/completions", data=CHAT, headers=AUTH)
    assert response.headers["x-azproxy-deployment"] == "dep-a"
    assert sim.count("dep-b") == 1


async def test_a_refused_client_is_told_the_real_wait(
    sim: Sim, proxy_with: ProxyMaker, clock: FakeClock
) -> None:
    proxy = await proxy_with(["sim/dep-a"], error_cooldown_s=30)
    limited = AUTH | {"x-sim-fault": "429", "x-sim-retry-after-ms": "200"}
    response = await proxy.post("/v1/chat/completions", data=CHAT, headers=limited)
    assert response.status == 429
    # Azure asked for 200 ms; a client is told at least 1 s (Retry-After
    # counts whole seconds, and retry-after-ms agrees with it).
    assert response.headers["Retry-After"] == "1"
    assert response.headers["retry-after-ms"] == "1000"

    clock.advance(0.3)  # the cooldown is over: the next request probes
    hanging = AUTH | {"x-sim-fault": "hang-headers"}
    probe = asyncio.ensure_future(
        proxy.post("/v1/chat/completions", data=CHAT, headers=hanging)
    )
    try:
        await until(lambda: sim.count("dep-a") == 2)
        # While the probe is out, a client is told to come back in a second,
        # not in error_cooldown_s (30 s): nothing failed.
        response = await proxy.post("/v1/chat/completions", data=CHAT, headers=AUTH)
        assert response.status == 429
        assert response.headers["Retry-After"] == "1"
        assert response.headers["retry-after-ms"] == "1000"
        assert sim.count("dep-a") == 2
    finally:
        probe.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await probe

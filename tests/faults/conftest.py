"""The real azproxy app against simulator deployments that fail on purpose."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from pytest_aiohttp import AiohttpClient, AiohttpServer

from azproxy import Config, create_app
from azproxy.settings.server_side import (
    parse_access_keys,
    parse_endpoints,
    parse_model_map,
)
from azproxy.simulator import SIM_STATE, SimSettings, SimState, create_simulator
from tests.clock import FakeClock

ACCESS_KEY = "fault-suite-access-key-0123"
AUTH = {"Authorization": f"Bearer {ACCESS_KEY}"}
CHAT = b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}'
STREAM = b'{"model": "gpt-4o", "stream": true, "messages": []}'


class Sim:
    def __init__(self, server: TestServer) -> None:
        self.server = server
        self.url = str(server.make_url("")).rstrip("/")
        self.state: SimState = server.app[SIM_STATE]

    def count(self, deployment: str) -> int:
        return self.state.requests[deployment]


@pytest.fixture
async def sim(aiohttp_server: AiohttpServer) -> Sim:
    app = create_simulator(SimSettings(chunks=3, chunk_delay_ms=0))
    return Sim(await aiohttp_server(app))


ProxyMaker = Callable[..., Any]


@pytest.fixture
def clock() -> FakeClock:
    """The health board's clock: cooldowns and breaker windows end only when
    a test advances it."""
    return FakeClock()


@pytest.fixture
def proxy_with(aiohttp_client: AiohttpClient, sim: Sim, clock: FakeClock) -> ProxyMaker:
    """A proxy whose model gpt-4o maps to the given routes (default: dep-a and
    dep-b on the simulator, same priority), with millisecond cooldowns on the
    fake `clock`."""

    async def make(
        routes: Any = ("sim/dep-a", "sim/dep-b"),
        endpoints: dict[str, Any] | None = None,
        **overrides: Any,
    ) -> Any:
        values: dict[str, Any] = {
            "endpoints": parse_endpoints(
                endpoints or {"sim": {"url": sim.url, "api_key": "sim-key"}}, {}
            ),
            "model_map": parse_model_map({"gpt-4o": list(routes)}),
            "access_keys": parse_access_keys([ACCESS_KEY], {}),
            "rate_limit_cooldown_s": 0.05,
            "error_cooldown_s": 0.05,
            "breaker_open_s": 0.3,
        }
        config = Config(**(values | overrides))
        return await aiohttp_client(create_app(config, monotonic=clock))

    return make

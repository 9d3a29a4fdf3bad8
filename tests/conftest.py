from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import settings
from pytest_aiohttp import AiohttpClient, AiohttpServer

from azproxy import Config, create_app
from tests.fakes import FakeAzure

# netguard: every test reaches loopback only (see its docstring); pytester
# runs the guard's own test of itself in a child pytest.
pytest_plugins = ("pytester", "tests.netguard")

# Property tests (tests/*/test_properties_*.py): the same examples on every
# run (derandomize), no timing (deadline: the machines are noisy), no example
# database written, and a bound on examples that keeps them all a few seconds.
settings.register_profile(
    "azproxy", derandomize=True, deadline=None, max_examples=100, database=None
)
settings.load_profile("azproxy")

AZURE_KEY = "0123456789abcdef0123456789abcdef"  # the shape of a real Azure key
TOKEN = f"myresource:dep1:{AZURE_KEY}"
BEARER = {"Authorization": f"Bearer {TOKEN}"}

ProxyFactory = Callable[..., Any]


@pytest.fixture
async def fake_azure(aiohttp_server: AiohttpServer) -> FakeAzure:
    fake = FakeAzure()
    server: TestServer = await aiohttp_server(fake.app())
    fake.url = str(server.make_url("")).rstrip("/")
    return fake


@pytest.fixture
def make_config(fake_azure: FakeAzure) -> Callable[..., Config]:
    def make(**overrides: Any) -> Config:
        values: dict[str, Any] = {"upstream": fake_azure.url, "retry_delay_s": 0.01}
        return Config(**(values | overrides))

    return make


@pytest.fixture
def proxy_for(
    aiohttp_client: AiohttpClient, make_config: Callable[..., Config]
) -> ProxyFactory:
    """Start an azproxy app (with settings overrides) and return a client to it."""

    async def start(**overrides: Any) -> TestClient[Any, Any]:
        return await aiohttp_client(create_app(make_config(**overrides)))

    return start


@pytest.fixture
async def proxy(proxy_for: ProxyFactory) -> TestClient[Any, Any]:
    client: TestClient[Any, Any] = await proxy_for()
    return client

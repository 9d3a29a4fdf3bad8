"""Entra ID through azure-identity's real managed identity flow.

App Service and Container Apps give a process IDENTITY_ENDPOINT and
IDENTITY_HEADER; azure-identity's DefaultAzureCredential then asks that
endpoint for tokens. A fake token endpoint on loopback serves them here.

Nothing else in the credential chain may run: with no identity found, a
managed identity would ask the instance metadata service (169.254.169.254),
and the developer credentials would run `az`, `azd` or PowerShell, which reach
Entra ID on a developer's machine. AZURE_TOKEN_CREDENTIALS keeps the chain to
the managed identity alone, and tests/netguard.py fails any test that probes.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpClient, AiohttpServer

from azproxy import Config, create_app
from azproxy.auth.azure_auth import ENTRA_READY_WAIT_S
from azproxy.settings.server_side import (
    parse_access_keys,
    parse_endpoints,
    parse_model_map,
)
from tests.clock import FakeClock
from tests.fakes import FakeAzure

ACCESS_KEY = "entra-access-key-0123456789"
IDENTITY_HEADER = "identity-header-secret"


class TokenService:
    """Hands out token-1 (about to expire), then token-2, token-3...

    Their expiry is on `clock`, a day behind the real one: azure-identity
    judges its own token cache by the real clock, so every token looks
    expired to it, and each fetch azproxy makes reaches this service. When
    to fetch, and which token a request carries, are azproxy's decisions,
    made on the fake clock the test moves.
    """

    def __init__(self, first_lifetime_s: float, clock: FakeClock) -> None:
        self.first_lifetime_s = first_lifetime_s
        self.clock = clock
        self.calls: list[dict[str, str]] = []
        self.refused = 0

    async def token(self, request: web.Request) -> web.Response:
        if request.headers.get("X-IDENTITY-HEADER") != IDENTITY_HEADER:
            self.refused += 1
            return web.json_response({"error": "bad header"}, status=401)
        self.calls.append(dict(request.query))
        lifetime = self.first_lifetime_s if len(self.calls) == 1 else 3600
        return web.json_response(
            {
                "access_token": f"token-{len(self.calls)}",
                "expires_on": str(int(self.clock() + lifetime)),
                "resource": request.query.get("resource", ""),
                "token_type": "Bearer",
            }
        )


@pytest.fixture
def clock() -> FakeClock:
    """Whole seconds, as expires_on counts them, a day behind the real clock."""
    return FakeClock(float(int(time.time()) - 86400))


@pytest.fixture
async def token_service(
    aiohttp_server: AiohttpServer, monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> TokenService:
    """The token service, and the environment of an App Service managed
    identity that uses it, and nothing else."""
    service = TokenService(first_lifetime_s=2, clock=clock)
    app = web.Application()
    app.router.add_get("/msi/token", service.token)
    server = await aiohttp_server(app)
    for name in (
        "AZURE_CLIENT_ID",
        "AZURE_TENANT_ID",
        "AZURE_CLIENT_SECRET",
        "AZURE_FEDERATED_TOKEN_FILE",
        "IDENTITY_SERVER_THUMBPRINT",
        "IMDS_ENDPOINT",
        "MSI_ENDPOINT",
        "MSI_SECRET",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AZURE_TOKEN_CREDENTIALS", "ManagedIdentityCredential")
    monkeypatch.setenv("IDENTITY_ENDPOINT", str(server.make_url("/msi/token")))
    monkeypatch.setenv("IDENTITY_HEADER", IDENTITY_HEADER)
    return service


async def until_asleep(clock: FakeClock) -> None:
    while not clock.sleeping:
        await asyncio.sleep(0.01)


async def test_entra_tokens_are_sent_and_refreshed_before_expiry(
    aiohttp_client: AiohttpClient,
    fake_azure: FakeAzure,
    token_service: TokenService,
    clock: FakeClock,
) -> None:
    config = Config(
        endpoints=parse_endpoints({"east": {"url": fake_azure.url, "entra": True}}, {}),
        model_map=parse_model_map("gpt-4o=east/dep"),
        access_keys=parse_access_keys([ACCESS_KEY], {}),
    )
    app = create_app(config, wall_clock=clock, sleep=clock.sleep)
    proxy = await aiohttp_client(app)
    headers = {"Authorization": f"Bearer {ACCESS_KEY}"}
    body = json.dumps({"model": "gpt-4o", "messages": []}).encode()

    async def ask() -> Any:
        response = await proxy.post("/v1/chat/completions", data=body, headers=headers)
        assert response.status == 200
        return fake_azure.last.headers

    assert (await proxy.get("/readyz")).status == 200  # the token is at hand
    sent = await ask()
    assert sent["Authorization"] == "Bearer token-1"
    assert "api-key" not in sent
    assert ACCESS_KEY not in str(dict(sent))
    assert token_service.calls[0]["resource"] == "https://cognitiveservices.azure.com"

    # token-1 lives 2 s; the background refresh replaces it before it
    # expires, so no request ever waits for the token service.
    async with asyncio.timeout(5):
        await until_asleep(clock)  # the refresh waits for its time
    clock.advance(1.5)  # past half its life, the refresh is due
    async with asyncio.timeout(5):  # fetched, and asleep until the next one
        while len(token_service.calls) < 2:
            await asyncio.sleep(0.01)
        await until_asleep(clock)
    assert (await ask())["Authorization"] == "Bearer token-2"
    clock.advance(1.0)  # token-1 is now expired
    calls_before = len(token_service.calls)
    assert (await ask())["Authorization"] == "Bearer token-2"
    assert len(token_service.calls) == calls_before  # served from the cache


async def test_without_a_token_requests_get_a_clear_503(
    aiohttp_client: AiohttpClient,
    fake_azure: FakeAzure,
    token_service: TokenService,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The token endpoint refuses this identity (a 401, which azure-identity
    # does not retry): no token can be had.
    monkeypatch.setenv("IDENTITY_HEADER", "not-the-identity-header")
    config = Config(
        endpoints=parse_endpoints({"east": {"url": fake_azure.url, "entra": True}}, {}),
        model_map=parse_model_map("gpt-4o=east/dep"),
        access_keys=parse_access_keys([ACCESS_KEY], {}),
    )
    proxy = await aiohttp_client(create_app(config))
    response = await proxy.post(
        "/v1/chat/completions",
        data=b'{"model": "gpt-4o"}',
        headers={"Authorization": f"Bearer {ACCESS_KEY}"},
    )
    assert response.status == 503
    error = (await response.json())["error"]
    assert error["code"] == "entra_token_unavailable"
    assert fake_azure.requests == []
    assert token_service.refused >= 1 and token_service.calls == []


async def test_not_ready_without_a_token_for_a_while_then_ready_with_explanations(
    aiohttp_client: AiohttpClient,
    fake_azure: FakeAzure,
    token_service: TokenService,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("IDENTITY_HEADER", "not-the-identity-header")
    config = Config(
        endpoints=parse_endpoints({"east": {"url": fake_azure.url, "entra": True}}, {}),
        model_map=parse_model_map("gpt-4o=east/dep"),
        access_keys=parse_access_keys([ACCESS_KEY], {}),
    )
    proxy = await aiohttp_client(
        create_app(config, wall_clock=clock, sleep=clock.sleep)
    )
    # Every request would get 503 entra_token_unavailable: not ready yet.
    response = await proxy.get("/readyz")
    assert response.status == 503
    assert await response.json() == {"status": "starting"}
    clock.advance(ENTRA_READY_WAIT_S - 1)
    assert (await proxy.get("/readyz")).status == 503
    # Waited long enough: ready, and each request says what is wrong.
    clock.advance(1)
    assert (await proxy.get("/readyz")).status == 200
    response = await proxy.post(
        "/v1/chat/completions",
        data=b'{"model": "gpt-4o"}',
        headers={"Authorization": f"Bearer {ACCESS_KEY}"},
    )
    assert response.status == 503
    error = (await response.json())["error"]
    assert error["code"] == "entra_token_unavailable"
    assert "ClientAuthenticationError" in error["message"]
    (said,) = [r.message for r in caplog.records if "ready anyway" in r.message]
    assert said.startswith(f"no Entra ID token {ENTRA_READY_WAIT_S:g} s after start")
    assert (await proxy.get("/readyz")).status == 200  # and stays ready

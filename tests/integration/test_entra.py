"""Entra ID through azure-identity's real managed identity flow.

App Service and Container Apps give a process IDENTITY_ENDPOINT and
IDENTITY_HEADER; azure-identity's DefaultAzureCredential then asks that
endpoint for tokens. A fake token endpoint on loopback serves them here.
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
from azproxy.routes import parse_access_keys, parse_endpoints, parse_model_map
from tests.fakes import FakeAzure

ACCESS_KEY = "entra-access-key-0123456789"
IDENTITY_HEADER = "identity-header-secret"


class TokenService:
    """Hands out token-1 (about to expire), then token-2, token-3..."""

    def __init__(self, first_lifetime_s: float) -> None:
        self.first_lifetime_s = first_lifetime_s
        self.calls: list[dict[str, str]] = []

    async def token(self, request: web.Request) -> web.Response:
        if request.headers.get("X-IDENTITY-HEADER") != IDENTITY_HEADER:
            return web.json_response({"error": "bad header"}, status=401)
        self.calls.append(dict(request.query))
        lifetime = self.first_lifetime_s if len(self.calls) == 1 else 3600
        return web.json_response(
            {
                "access_token": f"token-{len(self.calls)}",
                "expires_on": str(int(time.time() + lifetime)),
                "resource": request.query.get("resource", ""),
                "token_type": "Bearer",
            }
        )


@pytest.fixture
async def token_service(
    aiohttp_server: AiohttpServer, monkeypatch: pytest.MonkeyPatch
) -> TokenService:
    service = TokenService(first_lifetime_s=2)
    app = web.Application()
    app.router.add_get("/msi/token", service.token)
    server = await aiohttp_server(app)
    for name in (
        "AZURE_CLIENT_ID",
        "AZURE_TENANT_ID",
        "AZURE_CLIENT_SECRET",
        "AZURE_FEDERATED_TOKEN_FILE",
        "MSI_ENDPOINT",
        "MSI_SECRET",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IDENTITY_ENDPOINT", str(server.make_url("/msi/token")))
    monkeypatch.setenv("IDENTITY_HEADER", IDENTITY_HEADER)
    return service


async def test_entra_tokens_are_sent_and_refreshed_before_expiry(
    aiohttp_client: AiohttpClient, fake_azure: FakeAzure, token_service: TokenService
) -> None:
    config = Config(
        endpoints=parse_endpoints({"east": {"url": fake_azure.url, "entra": True}}, {}),
        model_map=parse_model_map("gpt-4o=east/dep"),
        access_keys=parse_access_keys([ACCESS_KEY], {}),
    )
    proxy = await aiohttp_client(create_app(config))
    headers = {"Authorization": f"Bearer {ACCESS_KEY}"}
    body = json.dumps({"model": "gpt-4o", "messages": []}).encode()

    async def ask() -> Any:
        response = await proxy.post("/v1/chat/completions", data=body, headers=headers)
        assert response.status == 200
        return fake_azure.last.headers

    sent = await ask()
    assert sent["Authorization"] == "Bearer token-1"
    assert "api-key" not in sent
    assert ACCESS_KEY not in str(dict(sent))
    assert token_service.calls[0]["resource"] == "https://cognitiveservices.azure.com"

    # token-1 lives 2 s; the background refresh replaces it before it
    # expires, so no request ever waits for the token service.
    deadline = time.monotonic() + 5
    while len(token_service.calls) < 2:
        assert time.monotonic() < deadline, "the token was never refreshed"
        await asyncio.sleep(0.05)
    await asyncio.sleep(2.1)  # token-1 is now expired
    calls_before = len(token_service.calls)
    assert (await ask())["Authorization"] == "Bearer token-2"
    assert len(token_service.calls) == calls_before  # served from the cache


async def test_without_a_token_requests_get_a_clear_503(
    aiohttp_client: AiohttpClient,
    fake_azure: FakeAzure,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A token endpoint that refuses: no token can be had.
    for name in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER", "MSI_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IDENTITY_ENDPOINT", "http://127.0.0.1:9/none")
    monkeypatch.setenv("IDENTITY_HEADER", IDENTITY_HEADER)
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

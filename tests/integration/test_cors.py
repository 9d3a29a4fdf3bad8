"""CORS: preflight answered by azproxy, headers on every response, streams too."""

from __future__ import annotations

from typing import Any

from tests.conftest import BEARER, ProxyFactory
from tests.fakes import FakeAzure, sse_answer, sse_event

PREFLIGHT = {
    "Origin": "https://chat.example",
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os",
}


async def test_preflight_is_answered_without_credentials_or_upstream(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    response = await proxy.options("/v1/chat/completions", headers=PREFLIGHT)
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    assert response.headers["Access-Control-Allow-Headers"] == (
        "authorization, content-type, x-stainless-os"
    )
    assert int(response.headers["Access-Control-Max-Age"]) > 0
    assert fake_azure.requests == []


async def test_streamed_answers_carry_cors_headers(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    fake_azure.queue(sse_answer([sse_event({"n": 1}), sse_event("[DONE]")]))
    response = await proxy.post(
        "/v1/chat/completions",
        data=b'{"stream": true}',
        headers=BEARER | {"Origin": "https://chat.example"},
    )
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "x-request-id" in response.headers["Access-Control-Expose-Headers"]
    await response.read()


async def test_errors_carry_cors_headers(proxy: Any) -> None:
    response = await proxy.post(
        "/v1/chat/completions", headers={"Origin": "https://chat.example"}
    )
    assert response.status == 401
    assert response.headers["Access-Control-Allow-Origin"] == "*"


async def test_a_list_of_origins_echoes_allowed_ones_only(
    proxy_for: ProxyFactory,
) -> None:
    proxy = await proxy_for(cors_origins=("https://a.example", "https://b.example"))
    allowed = await proxy.options(
        "/v1/chat/completions", headers=PREFLIGHT | {"Origin": "https://b.example"}
    )
    assert allowed.status == 204
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://b.example"
    assert allowed.headers["Vary"] == "Origin"

    denied = await proxy.get("/healthz", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in denied.headers

    ok = await proxy.get("/healthz", headers={"Origin": "https://a.example"})
    assert ok.headers["Access-Control-Allow-Origin"] == "https://a.example"
    assert "Origin" in ok.headers.getall("Vary")


def cors_headers(response: Any) -> list[str]:
    return [h for h in response.headers if h.lower().startswith("access-control-")]


async def test_cors_can_be_disabled(
    proxy_for: ProxyFactory, fake_azure: FakeAzure
) -> None:
    proxy = await proxy_for(cors_origins=())
    response = await proxy.get("/healthz", headers={"Origin": "https://a.example"})
    assert response.status == 200
    assert cors_headers(response) == []
    # No preflight answer: the OPTIONS request is an ordinary /v1/ request,
    # which the gate refuses for want of credentials.
    preflight = await proxy.options("/v1/chat/completions", headers=PREFLIGHT)
    assert preflight.status == 401
    assert (await preflight.json())["error"]["code"] == "invalid_api_key"
    assert cors_headers(preflight) == []
    assert fake_azure.requests == []

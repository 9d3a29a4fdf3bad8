"""The hot path (a small JSON call with a pass-through token) does only the
work its answer needs: what is fixed per caller or per process is worked out
once, not on every request."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import aiohttp.client
import pytest

import azproxy.auth.callers
import azproxy.relay.request_body
import azproxy.relay.terminal
from azproxy.relay.jsonshape import JsonBounds
from tests.conftest import BEARER
from tests.fakes import CHAT_JSON, FakeAzure

CHAT = b'{"model": "gpt-4o", "messages": []}'


def counting(
    monkeypatch: pytest.MonkeyPatch, module: Any, name: str
) -> list[tuple[Any, ...]]:
    """Record each call of module.name (still calling it)."""
    calls: list[tuple[Any, ...]] = []
    original: Callable[..., Any] = getattr(module, name)

    def spy(*args: Any) -> Any:
        calls.append(args)
        return original(*args)

    monkeypatch.setattr(module, name, spy)
    return calls


async def chat_twice(proxy: Any, fake_azure: FakeAzure) -> None:
    for _ in range(2):
        response = await proxy.post("/v1/chat/completions", data=CHAT, headers=BEARER)
        assert response.status == 200
        assert await response.json() == CHAT_JSON
    assert [r.path for r in fake_azure.requests] == [
        "/openai/deployments/dep1/chat/completions"
    ] * 2
    assert [json.loads(r.body) for r in fake_azure.requests] == [json.loads(CHAT)] * 2


async def test_whether_a_token_needs_the_model_is_decided_once_per_token(
    proxy: Any, fake_azure: FakeAzure, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = counting(monkeypatch, azproxy.auth.callers, "sends_deployments_to_v1")
    await chat_twice(proxy, fake_azure)
    assert len(calls) == 1  # when the token is first seen; not twice a request


async def test_json_bounds_are_built_once_per_app(
    proxy: Any, fake_azure: FakeAzure, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = counting(monkeypatch, JsonBounds, "__init__")
    await chat_twice(proxy, fake_azure)
    assert calls == []  # built by create_app, never per answer


async def test_upstream_requests_go_without_a_client_middleware_layer(
    proxy: Any, fake_azure: FakeAzure, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Redirects are refused by send_once itself (tests/integration/
    # test_redirects.py); only ws_connect needs the session's middleware.
    calls = counting(monkeypatch, aiohttp.client, "build_client_middlewares")
    await chat_twice(proxy, fake_azure)
    assert calls == []


async def test_a_chat_that_does_not_stream_is_never_parsed_nor_searched_twice(
    proxy: Any, fake_azure: FakeAzure, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A token with one deployment: json_call looks for "stream" once (to ask
    # for a stream's usage); nothing parses the body, and the answer's check
    # for a stream does not search it again.
    parsed = counting(monkeypatch, azproxy.relay.request_body, "read_object")
    parsed += counting(monkeypatch, azproxy.relay.terminal, "read_object")
    searched: list[bytes] = []
    pattern = azproxy.relay.terminal.STREAM_TRUE

    class Spy:
        def search(self, body: bytes) -> Any:
            searched.append(body)
            return pattern.search(body)

    monkeypatch.setattr(azproxy.relay.terminal, "STREAM_TRUE", Spy())
    await chat_twice(proxy, fake_azure)
    assert parsed == [] and searched == []

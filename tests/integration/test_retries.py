"""The original proxy's retry rules, kept: only before the first byte."""

from __future__ import annotations

import itertools
import json
import logging
import socket
from typing import Any

import aiohttp
import pytest

from tests.conftest import BEARER, ProxyFactory
from tests.fakes import (
    CHAT_JSON,
    FakeAzure,
    close_answer,
    json_answer,
    sse_answer,
    sse_event,
)

BODY = b'{"model": "gpt-4o", "messages": []}'
SERVER_ERROR = {"error": {"code": "InternalServerError", "message": "oops"}}
OVERLOADED = {
    "error": {
        "message": "That model is currently overloaded with other requests.",
        "type": "server_error",
    }
}


async def test_5xx_is_retried_until_it_succeeds(
    proxy: Any, fake_azure: FakeAzure, caplog: pytest.LogCaptureFixture
) -> None:
    fake_azure.queue(
        json_answer(SERVER_ERROR, status=500), json_answer(SERVER_ERROR, status=503)
    )
    with caplog.at_level(logging.WARNING, logger="azproxy.relay"):
        response = await proxy.post("/v1/chat/completions", data=BODY, headers=BEARER)
    assert response.status == 200
    assert await response.json() == CHAT_JSON
    assert len(fake_azure.requests) == 3
    assert all(r.body == BODY for r in fake_azure.requests)
    # Each retry is logged, naming the upstream host and why.
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    host = fake_azure.url.split("//")[1].split(":")[0]
    assert retries == [
        f"upstream {host} failed (HTTP 500); retry 1/3 in 0.01 s",
        f"upstream {host} failed (HTTP 503); retry 2/3 in 0.01 s",
    ]


async def test_5xx_after_all_retries_is_relayed_as_azure_sent_it(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    fake_azure.queue(*(json_answer(SERVER_ERROR, status=500) for _ in range(4)))
    response = await proxy.post("/v1/chat/completions", data=BODY, headers=BEARER)
    assert response.status == 500
    assert await response.json() == SERVER_ERROR
    assert len(fake_azure.requests) == 4  # the first try and 3 retries


def gaps(fake_azure: FakeAzure) -> list[float]:
    """The time between one attempt's arrival at Azure and the next's."""
    times = [r.at for r in fake_azure.requests]
    return [later - earlier for earlier, later in itertools.pairwise(times)]


async def test_retry_count_and_delay_are_settings(
    proxy_for: ProxyFactory, fake_azure: FakeAzure
) -> None:
    proxy = await proxy_for(retries=1, retry_delay_s=0.3)
    fake_azure.queue(*(json_answer(SERVER_ERROR, status=502) for _ in range(3)))
    response = await proxy.post("/v1/chat/completions", data=BODY, headers=BEARER)
    assert response.status == 502
    assert len(fake_azure.requests) == 2
    assert all(gap >= 0.29 for gap in gaps(fake_azure))  # retry_delay_s apart


async def test_connection_errors_are_retried_retry_delay_s_apart(
    proxy_for: ProxyFactory, fake_azure: FakeAzure
) -> None:
    proxy = await proxy_for(retries=2, retry_delay_s=0.1)
    fake_azure.queue(*(close_answer() for _ in range(3)))
    response = await proxy.post("/v1/chat/completions", data=BODY, headers=BEARER)
    assert response.status == 502
    error = (await response.json())["error"]
    assert error["code"] == "upstream_unreachable"
    assert error["message"].endswith(", after 3 attempts.")
    assert [r.body for r in fake_azure.requests] == [BODY] * 3
    assert all(gap >= 0.09 for gap in gaps(fake_azure))  # retry_delay_s apart


async def test_4xx_is_never_retried(proxy: Any, fake_azure: FakeAzure) -> None:
    for status in (400, 401, 404, 429):
        fake_azure.requests.clear()
        fake_azure.queue(json_answer({"error": {"code": str(status)}}, status=status))
        response = await proxy.post("/v1/chat/completions", data=BODY, headers=BEARER)
        assert response.status == status
        assert len(fake_azure.requests) == 1


async def test_overloaded_first_event_is_retried(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    good = [sse_event({"choices": [{"delta": {"content": "ok"}}]}), sse_event("[DONE]")]
    fake_azure.queue(sse_answer([sse_event(OVERLOADED)]), sse_answer(good))
    response = await proxy.post("/v1/chat/completions", data=BODY, headers=BEARER)
    assert await response.read() == b"".join(good)
    assert len(fake_azure.requests) == 2


async def test_overloaded_on_every_try_is_relayed(
    proxy_for: ProxyFactory, fake_azure: FakeAzure
) -> None:
    proxy = await proxy_for(retries=1)
    fake_azure.queue(*(sse_answer([sse_event(OVERLOADED)]) for _ in range(2)))
    response = await proxy.post("/v1/chat/completions", data=BODY, headers=BEARER)
    received = b""
    with pytest.raises(aiohttp.ClientPayloadError):  # no [DONE]: a cut stream
        async for piece in response.content.iter_any():
            received += piece
    first, second, _ = received.split(b"\n\n")
    assert first + b"\n\n" == sse_event(OVERLOADED)
    assert b'"upstream_stream_error"' in second  # and azproxy says it is cut
    assert len(fake_azure.requests) == 2


async def test_connection_error_is_retried(proxy: Any, fake_azure: FakeAzure) -> None:
    fake_azure.queue(close_answer(), close_answer())
    response = await proxy.post("/v1/chat/completions", data=BODY, headers=BEARER)
    assert response.status == 200
    assert len(fake_azure.requests) == 3


async def test_unreachable_upstream_is_502_after_retries(
    proxy_for: ProxyFactory,
) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proxy = await proxy_for(upstream=f"http://127.0.0.1:{port}", retries=2)
    response = await proxy.post("/v1/chat/completions", data=BODY, headers=BEARER)
    assert response.status == 502
    error = (await response.json())["error"]
    assert error["code"] == "upstream_unreachable"
    # Refused connections leave no trace to count: the message counts them.
    # Their spacing: test_connection_errors_are_retried_retry_delay_s_apart.
    assert error["message"].endswith(", after 3 attempts.")


async def test_no_retry_once_a_byte_reached_the_client(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    first = sse_event({"choices": [{"delta": {"content": "a"}}]})
    fake_azure.queue(sse_answer([first], then="abort"), sse_answer([first]))
    response = await proxy.post("/v1/chat/completions", data=BODY, headers=BEARER)
    received = b""
    with pytest.raises(aiohttp.ClientPayloadError):  # no [DONE]: a cut stream
        async for piece in response.content.iter_any():
            received += piece
    assert received.startswith(first)
    assert b"upstream_stream_error" in received
    assert len(fake_azure.requests) == 1


async def test_overloaded_text_later_in_a_stream_is_just_content(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    events = [
        sse_event({"choices": [{"delta": {"content": "hi"}}]}),
        sse_event({"choices": [{"delta": {"content": json.dumps(OVERLOADED)}}]}),
        sse_event("[DONE]"),
    ]
    fake_azure.queue(sse_answer(events, delay_s=0.05))
    response = await proxy.post("/v1/chat/completions", data=BODY, headers=BEARER)
    assert await response.read() == b"".join(events)
    assert len(fake_azure.requests) == 1

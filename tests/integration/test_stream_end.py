"""Streams end explicitly in every case: a 2xx stream that stops before its
family's last event ends with an error event and a broken transfer, whether
Azure's body was chunked or ended by closing the connection."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest

from tests.conftest import BEARER, TOKEN, ProxyFactory
from tests.fakes import CloseDelimitedAzure, FakeAzure, sse_answer, sse_event

CHAT_BODY = b'{"model": "gpt-4o", "stream": true, "messages": []}'


def chat_chunk(text: str) -> bytes:
    return sse_event(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-4o",
            "choices": [{"index": 0, "delta": {"content": text}}],
        }
    )


def named(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def text_delta(text: str) -> bytes:
    return named(
        "response.output_text.delta",
        {"type": "response.output_text.delta", "item_id": "msg_1", "delta": text},
    )


# path, request body, the events before the last one, the last event
FAMILIES = {
    "chat": (
        "/v1/chat/completions",
        CHAT_BODY,
        [chat_chunk("Hel"), chat_chunk("lo")],
        sse_event("[DONE]"),
    ),
    "responses": (
        "/v1/responses",
        b'{"model": "dep1", "input": "hi", "stream": true}',
        [
            named("response.created", {"type": "response.created"}),
            text_delta("Hello"),
        ],
        named("response.completed", {"type": "response.completed"}),
    ),
    "run": (
        "/v1/threads/thread_1/runs",
        b'{"assistant_id": "asst_1", "stream": true}',
        [
            named("thread.run.created", {"id": "run_1", "object": "thread.run"}),
            named("thread.message.delta", {"id": "msg_1", "delta": {}}),
        ],
        b"event: done\ndata: [DONE]\n\n",
    ),
}


@pytest.fixture
async def close_delimited() -> AsyncIterator[CloseDelimitedAzure]:
    azure = CloseDelimitedAzure()
    await azure.start()
    yield azure
    await azure.close()


async def read_all(response: aiohttp.ClientResponse) -> tuple[bytes, bool]:
    """The body, and whether it ended cleanly (chunked terminator included)."""
    received = b""
    try:
        async for piece in response.content.iter_any():
            received += piece
    except aiohttp.ClientPayloadError:
        return received, False
    return received, True


def error_after(received: bytes, relayed: bytes) -> dict[str, Any]:
    """The error event that follows what was relayed, and nothing after it."""
    assert received.startswith(relayed)
    tail = received[len(relayed) :]
    assert tail.startswith(b"data: ") and tail.endswith(b"\n\n")
    error: dict[str, Any] = json.loads(tail[len(b"data: ") :])["error"]
    return error


@pytest.mark.parametrize("family", sorted(FAMILIES))
async def test_a_close_delimited_stream_cut_before_its_last_event_ends_in_error(
    proxy_for: ProxyFactory, close_delimited: CloseDelimitedAzure, family: str
) -> None:
    path, body, events, _ = FAMILIES[family]
    close_delimited.queue("text/event-stream", events)
    proxy = await proxy_for(upstream=close_delimited.url)
    response = await proxy.post(path, data=body, headers=BEARER)
    assert response.status == 200
    received, clean = await read_all(response)
    assert not clean  # and a broken transfer, for clients that skip the event
    error = error_after(received, b"".join(events))
    assert error["code"] == "upstream_stream_error"
    assert "before its last event" in error["message"]
    if family == "chat":  # azproxy asks for the usage the client did not
        body = b'{"stream_options":{"include_usage":true},' + body[1:]
    assert close_delimited.requests[0].endswith(b"\r\n\r\n" + body)


@pytest.mark.parametrize("family", sorted(FAMILIES))
async def test_a_whole_close_delimited_stream_ends_cleanly_and_unchanged(
    proxy_for: ProxyFactory, close_delimited: CloseDelimitedAzure, family: str
) -> None:
    path, body, events, last = FAMILIES[family]
    # The last event split over two writes: found across the seam too.
    close_delimited.queue("text/event-stream", [*events, last[:9], last[9:]])
    proxy = await proxy_for(upstream=close_delimited.url)
    response = await proxy.post(path, data=body, headers=BEARER)
    assert await read_all(response) == (b"".join(events) + last, True)


async def test_a_chunked_stream_ending_cleanly_without_done_ends_in_error(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    events = [chat_chunk("Hel"), chat_chunk("lo")]
    fake_azure.queue(sse_answer(events))  # a clean end, but no [DONE]
    response = await proxy.post("/v1/chat/completions", data=CHAT_BODY, headers=BEARER)
    received, clean = await read_all(response)
    assert not clean
    assert error_after(received, b"".join(events))["code"] == "upstream_stream_error"


async def test_done_inside_a_content_delta_does_not_end_the_stream(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    impostor = chat_chunk("\n\ndata: [DONE]\n\n")  # escaped in JSON: not a line
    fake_azure.queue(sse_answer([impostor]))
    response = await proxy.post("/v1/chat/completions", data=CHAT_BODY, headers=BEARER)
    received, clean = await read_all(response)
    assert not clean
    assert error_after(received, impostor)["code"] == "upstream_stream_error"


@pytest.mark.parametrize("family", ["chat", "responses"])
async def test_the_openai_sdk_raises_on_a_cut_close_delimited_stream(
    proxy_for: ProxyFactory, close_delimited: CloseDelimitedAzure, family: str
) -> None:
    _, _, events, _ = FAMILIES[family]
    close_delimited.queue("text/event-stream", events)
    proxy = await proxy_for(upstream=close_delimited.url)
    client = openai.AsyncOpenAI(
        base_url=str(proxy.make_url("/v1")), api_key=TOKEN, max_retries=0
    )
    async with client:
        received: list[Any] = []
        with pytest.raises(openai.APIError) as caught:
            if family == "chat":
                chat = await client.chat.completions.create(
                    model="gpt-4o", messages=[], stream=True
                )
                async for chunk in chat:
                    received.append(chunk.choices[0].delta.content)
            else:
                responses = await client.responses.create(
                    model="dep1", input="hi", stream=True
                )
                async for event in responses:
                    received.append(event.type)
    assert len(received) == len(events)  # everything Azure sent, then the error
    assert "before its last event" in caught.value.message


async def test_a_stream_labelled_json_is_relayed_as_a_stream(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    # A gateway relabels the stream: the request asked to stream, so it is one.
    gates = [asyncio.Event(), asyncio.Event()]
    events = [chat_chunk("one"), chat_chunk("two"), sse_event("[DONE]")]
    fake_azure.queue(sse_answer(events, gates=gates, content_type="application/json"))
    response = await proxy.post("/v1/chat/completions", data=CHAT_BODY, headers=BEARER)
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/json"  # as Azure said
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Accel-Buffering"] == "no"
    received = b""
    for index, gate in enumerate(gates):
        # Each event arrives before Azure sends the next one.
        while not received.endswith(events[index]):
            received += await asyncio.wait_for(response.content.readany(), 2)
        gate.set()
    assert await read_all(response) == (events[2], True)


async def test_a_stream_labelled_json_that_stops_short_ends_in_error(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    events = [chat_chunk("one")]
    fake_azure.queue(sse_answer(events, content_type="application/json"))
    response = await proxy.post("/v1/chat/completions", data=CHAT_BODY, headers=BEARER)
    received, clean = await read_all(response)
    assert not clean
    assert error_after(received, events[0])["code"] == "upstream_stream_error"


async def test_json_asked_without_stream_is_relayed_as_json(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    # "stream": true, but not at the top level: an ordinary answer.
    body = b'{"model": "gpt-4o", "metadata": {"stream": true}, "messages": []}'
    response = await proxy.post("/v1/chat/completions", data=body, headers=BEARER)
    assert response.status == 200
    assert "Cache-Control" not in response.headers
    assert (await response.json())["object"] == "chat.completion"
    assert fake_azure.last.body == body

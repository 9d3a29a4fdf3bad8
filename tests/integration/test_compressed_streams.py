"""A compressed stream (the client's Accept-Encoding goes to Azure, and the
OpenAI SDKs send gzip) is relayed untouched: azproxy cannot read its events,
so it neither looks for the last one nor adds one. A broken connection still
ends it without the chunked terminator. (These clients ask for the usage
themselves: a stream whose usage azproxy asks for is asked uncompressed,
test_stream_usage.py.)"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Sequence
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web

from tests.conftest import BEARER, TOKEN
from tests.fakes import AZURE_HEADERS, Answer, FakeAzure, sse_event

CHAT_BODY = (
    b'{"model": "gpt-4o", "stream": true, "messages": [], '
    b'"stream_options": {"include_usage": true}}'
)
GZIP = BEARER | {"Accept-Encoding": "gzip"}


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


EVENTS = [chat_chunk("Hel"), chat_chunk("lo"), sse_event("[DONE]")]


def gzipped(events: Sequence[bytes]) -> list[bytes]:
    """The stream as a gateway compresses it: flushed after every event."""
    packer = zlib.compressobj(wbits=31)  # gzip framing
    pieces = [packer.compress(e) + packer.flush(zlib.Z_SYNC_FLUSH) for e in events]
    pieces.append(packer.flush())
    assert gzip.decompress(b"".join(pieces)) == b"".join(events)
    return pieces


def compressed_stream(pieces: Sequence[bytes], *, cut: bool = False) -> Answer:
    async def answer(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers=AZURE_HEADERS | {"Content-Encoding": "gzip"}
        )
        response.content_type = "text/event-stream"
        await response.prepare(request)
        for piece in pieces:
            await response.write(piece)
        if cut:
            assert request.transport is not None
            request.transport.abort()
        return response

    return answer


async def read_raw(proxy: Any) -> tuple[aiohttp.ClientResponse, bytes, bool]:
    """The answer's bytes as sent (not decompressed), and whether it ended
    cleanly (chunked terminator included)."""
    response = await proxy.post(
        "/v1/chat/completions", data=CHAT_BODY, headers=GZIP, auto_decompress=False
    )
    received = b""
    try:
        async for piece in response.content.iter_any():
            received += piece
    except aiohttp.ClientPayloadError:
        return response, received, False
    return response, received, True


async def test_a_compressed_stream_is_relayed_untouched(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    pieces = gzipped(EVENTS)
    fake_azure.queue(compressed_stream(pieces))
    response, received, clean = await read_raw(proxy)
    assert response.status == 200
    assert response.headers["Content-Encoding"] == "gzip"
    assert received == b"".join(pieces)
    assert clean
    assert fake_azure.last.headers["Accept-Encoding"] == "gzip"


@pytest.mark.parametrize("missing", [1, 2], ids=["trailer", "done-and-trailer"])
async def test_a_cut_compressed_stream_is_a_broken_transfer_with_nothing_added(
    proxy: Any, fake_azure: FakeAzure, missing: int
) -> None:
    pieces = gzipped(EVENTS)
    sent = pieces[:-missing]
    fake_azure.queue(compressed_stream(sent, cut=True))
    response, received, clean = await read_raw(proxy)
    assert response.status == 200
    assert received == b"".join(sent)  # no error event inside the gzip body
    assert not clean


async def test_the_openai_sdk_reads_a_compressed_stream(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    fake_azure.queue(compressed_stream(gzipped(EVENTS)))
    client = openai.AsyncOpenAI(
        base_url=str(proxy.make_url("/v1")), api_key=TOKEN, max_retries=0
    )
    async with client:
        stream = await client.chat.completions.create(
            model="gpt-4o",
            messages=[],
            stream=True,
            stream_options={"include_usage": True},
        )
        texts = [chunk.choices[0].delta.content async for chunk in stream]
    assert texts == ["Hel", "lo"]
    assert "gzip" in fake_azure.last.headers["Accept-Encoding"]

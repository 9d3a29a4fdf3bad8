"""A client that stops reading pins little: azproxy holds at most the client
transport's high-water mark plus one slice, and about two slices of Azure's
answer, whatever Azure has on offer."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from aiohttp import web
from pytest_aiohttp import AiohttpServer

from azproxy import Config, create_app
from azproxy.front.lifecycle import LIFECYCLE
from azproxy.keys import EXCHANGE
from azproxy.relay.bodies import READ_BYTES
from tests.conftest import TOKEN
from tests.fakes import FakeAzure, sse_answer, sse_event

BODY = b'{"model": "gpt-4o", "stream": true, "messages": []}'
REQUEST = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
    + f"Authorization: Bearer {TOKEN}\r\nContent-Length: {len(BODY)}\r\n\r\n".encode()
    + BODY
)
# Chunked framing around one slice: its size in hex and two CRLFs.
FRAMING = 16


async def test_a_client_that_reads_nothing_pins_a_bounded_amount(
    aiohttp_server: AiohttpServer,
    make_config: Callable[..., Config],
    fake_azure: FakeAzure,
) -> None:
    event = sse_event({"pad": "x" * 4000})
    fake_azure.queue(sse_answer([event] * 4000, then="hang"))  # 16 MB on offer
    app = create_app(make_config(sse_compat="raw", client_write_timeout_s=30))
    requests: list[web.Request] = []

    async def keep(request: web.Request, response: web.StreamResponse) -> None:
        requests.append(request)

    app.on_response_prepare.append(keep)
    server = await aiohttp_server(app)
    loop = asyncio.get_running_loop()
    with socket.socket() as client:
        # A small receive window: the kernel holds little of the answer.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.setblocking(False)
        await loop.sock_connect(client, ("127.0.0.1", server.port))
        await loop.sock_sendall(client, REQUEST)  # ...and never reads

        worst_buffer = worst_unsent = pulled = 0
        steady = 0
        for _ in range(250):  # until azproxy stops pulling from Azure, < 5 s
            await asyncio.sleep(0.02)
            streams = app[LIFECYCLE].streams
            if not requests or not streams:
                continue
            request, upstream = requests[0], next(iter(streams))
            transport = request.transport
            assert transport is not None
            high = transport.get_write_buffer_limits()[1]
            worst_buffer = max(worst_buffer, transport.get_write_buffer_size())
            # Read from Azure but not yet handed to the client's transport.
            unsent = upstream.content.total_bytes - request[EXCHANGE].bytes_out
            worst_unsent = max(worst_unsent, unsent)
            steady = steady + 1 if upstream.content.total_bytes == pulled else 0
            pulled = upstream.content.total_bytes
            if steady == 10:
                break
        assert steady == 10, "azproxy kept reading from Azure"
    assert pulled < 4000 * len(event) // 2  # backpressure reached Azure
    assert worst_buffer <= high + READ_BYTES + FRAMING
    # The reader's high-water mark (two slices) plus what the parse that
    # crossed it added (one of Azure's 4 KB chunks), and the slice in hand.
    assert worst_unsent <= 3 * READ_BYTES + len(event) + FRAMING

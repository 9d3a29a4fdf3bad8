"""How a connection ends after its last response, on every path that ends
one: a 503 past max_connections and a 408 for slow headers (written raw by
server/guard.py, which has no request to answer), and a 408 for a body
the client stopped sending (ClosingResponse, which the error middleware
sends for an error that closes_connection).

One rule for all (RFC 9112 §9.6): close the write side at once, so the
client sees the response end; close the connection once the client closes
its side, or LINGER_S later; until then read and drop what arrives.
Closing with unread input sends a reset, which can destroy the response
before the client has read it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

__all__ = ["LINGER_S", "ClosingResponse", "close_lingering", "send_and_close"]

# How long a connection closed after a last response still reads (and
# drops) what the client sends.
LINGER_S = 1.0


def close_lingering(transport: asyncio.Transport) -> asyncio.TimerHandle:
    """Close a connection whose last response was written: the write side
    at once, the connection when the client closes its side (the protocol's
    eof_received returns None, so asyncio closes it then) or LINGER_S later,
    the timer returned. The protocol must drop what arrives meanwhile."""
    if transport.can_write_eof():  # TLS cannot half-close: it just lingers
        transport.write_eof()  # after what is buffered has been sent
    # Reading may have been paused while a body waited to be read; what
    # arrives must be read to be dropped, or it stays unread until the close.
    transport.resume_reading()
    return asyncio.get_running_loop().call_later(LINGER_S, transport.close)


def send_and_close(
    transport: asyncio.Transport, response: bytes
) -> asyncio.TimerHandle:
    """Send a last response (a whole raw HTTP message) and close lingering."""
    transport.write(response)
    return close_lingering(transport)


class ClosingResponse(web.Response):
    """A response after which the connection closes (Connection: close),
    lingering as above, without first reading, for aiohttp's own lingering
    time of 10 s, the rest of a request body the client stopped sending.

    aiohttp's protocol is told it is closing (its _force_close, as
    force_close() sets it): it then drops what arrives and leaves the
    transport alone, which close_lingering() closes. The linger timer is not
    cancelled when the client closes first: closing a closed transport does
    nothing, and it holds the transport for LINGER_S at most.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.force_close()
        self._closing: web.BaseRequest | None = None

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        self._closing = request
        return await super().prepare(request)

    async def write_eof(self, data: bytes = b"") -> None:
        await super().write_eof(data)
        if self._closing is None:
            return
        protocol = self._closing.protocol
        transport = protocol.transport
        if transport is not None and not protocol._force_close:
            protocol._force_close = True
            close_lingering(transport)

"""Admission of client connections: the count behind max_connections, and
the last responses a connection gets with no request to answer (a 503 past
max_connections, a 408 when headers come too slowly), sent and closed as
closing.py closes every connection that ends with a response.

One ConnectionGuard per process (per runner): each --workers worker counts
its own connections. connections.py is where aiohttp meets it.
"""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from typing import TYPE_CHECKING

from azproxy.errors import ProxyError, RequestTimeout, ServiceUnavailable
from azproxy.server.closing import send_and_close
from azproxy.server.fdlimit import max_connections

if TYPE_CHECKING:
    from azproxy.settings.config import Config

__all__ = [
    "MAX_LINGERING",
    "REPORT_EVERY_S",
    "TOO_MANY_CONNECTIONS",
    "ConnectionGuard",
    "RefusedConnection",
    "raw_response",
]

log = logging.getLogger("azproxy")

REPORT_EVERY_S = 10.0
# Refused connections lingering at once; past this they are closed at once.
# They hold descriptors out of fdlimit.RESERVE_FDS.
MAX_LINGERING = 32


def raw_response(error: ProxyError) -> bytes:
    """A whole HTTP/1.1 response, for a connection about to be closed that
    has no request object to answer (nothing, or half a request, arrived)."""
    body = error.body()
    lines = [
        f"HTTP/1.1 {error.status} {HTTPStatus(error.status).phrase}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in error.headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


TOO_MANY_CONNECTIONS = raw_response(
    ServiceUnavailable(
        "This azproxy process has max_connections client connections open; "
        "retry in a moment.",
        code="too_many_connections",
        headers={"Retry-After": "1"},
    )
)


class RefusedConnection(asyncio.Protocol):
    """A connection past max_connections, from its 503 to its close."""

    def __init__(self, transport: asyncio.Transport, guard: ConnectionGuard) -> None:
        self.transport = transport
        self.guard = guard
        self.linger: asyncio.TimerHandle | None = None
        transport.set_protocol(self)
        if len(guard.refused) >= MAX_LINGERING:
            # Lingering holds a descriptor from the small reserve: in a flood
            # the rest are closed at once (their 503 may then be lost).
            transport.write(TOO_MANY_CONNECTIONS)
            transport.close()
            return
        guard.refused.add(self)
        self.linger = send_and_close(transport, TOO_MANY_CONNECTIONS)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.linger is not None:
            self.linger.cancel()
        self.guard.refused.discard(self)


class ConnectionGuard:
    """The client connections of one process (one guard per runner): the
    count behind max_connections, the header timeout, the refusal reports."""

    def __init__(self, header_timeout_s: float, limit: int | None) -> None:
        self.header_timeout_s = header_timeout_s
        self.limit = limit
        self.open = 0
        self.refused: set[RefusedConnection] = set()  # still getting their 503
        self.header_timeout_response = raw_response(
            RequestTimeout(
                "The request's headers did not arrive within "
                f"client_header_timeout_s ({header_timeout_s:g} s)."
            )
        )
        self._unreported = 0
        self._report: asyncio.TimerHandle | None = None

    @classmethod
    def for_config(cls, config: Config) -> ConnectionGuard:
        return cls(
            config.client_header_timeout_s, max_connections(config.max_connections)
        )

    def admit(self) -> bool:
        if self.limit is not None and self.open >= self.limit:
            self._unreported += 1
            if self._report is None:
                self._report_refusals()
            return False
        self.open += 1
        return True

    def release(self) -> None:
        self.open -= 1

    def _report_refusals(self) -> None:
        """Log the refusals since the last line, then stay quiet for
        REPORT_EVERY_S: a flood of refusals costs one line per interval."""
        if not self._unreported:
            self._report = None
            return
        log.warning(
            "refused %d connection(s) with 503: this process has "
            "max_connections (%d) client connections open "
            "(at most one such line per %g s)",
            self._unreported,
            self.limit,
            REPORT_EVERY_S,
        )
        self._unreported = 0
        loop = asyncio.get_running_loop()
        self._report = loop.call_later(REPORT_EVERY_S, self._report_refusals)

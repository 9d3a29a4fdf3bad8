"""Closing each exchange: its request id, the metrics, the access-log line.

Every response carries an x-request-id (Azure's, else its apim-request-id,
else a new one), the same id the access log names. Observer.done sets it on
every answer not sent yet (it runs before aiohttp sends the answer); what
sends its answer itself (a stream, a WebSocket) calls ensure_request_id
first. Not an on_response_prepare hook: a signal and a coroutine on every
response cost about 7,000 instructions a request. Probes and scrapes
(QUIET_PATHS) are neither counted nor logged.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Protocol

from aiohttp import web
from multidict import CIMultiDict

from azproxy.keys import CONFIG
from azproxy.observe.access_log import AccessLog
from azproxy.observe.logging import chosen_format
from azproxy.observe.metrics import METRICS

if TYPE_CHECKING:
    from azproxy.observe.exchange import Exchange
    from azproxy.settings.config import Config

__all__ = [
    "OBSERVER",
    "QUIET_PATHS",
    "Observer",
    "Recorder",
    "ensure_request_id",
    "setup",
]

# Probes and scrapes: counted by nobody, logged by nobody.
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class Recorder(Protocol):
    def record(self, exchange: Exchange, status: int, end: float) -> None: ...


class Observer:
    """Closes each exchange: the access-log line and the metrics."""

    def __init__(self, access_log: AccessLog | None, metrics: Recorder) -> None:
        self.access_log = access_log
        self.metrics = metrics

    def done(self, exchange: Exchange, response: web.StreamResponse | None) -> None:
        if exchange.path in QUIET_PATHS:
            if response is not None and not response.prepared:
                ensure_request_id(response.headers)
            return
        end = time.perf_counter()
        if response is None:
            status, request_id = 499, ""  # the client left before an answer
        elif response.prepared:  # streamed: its bytes are counted as sent
            status = 499 if exchange.client_left else response.status
            request_id = response.headers.get("x-request-id", "")
        else:
            status = response.status
            request_id = ensure_request_id(response.headers)
            if not exchange.bytes_out:  # an answer azproxy wrote itself
                exchange.bytes_out = response.content_length or 0
        self.metrics.record(exchange, status, end)
        if self.access_log is not None:
            self.access_log.write(exchange, status, request_id, end)


def ensure_request_id(headers: CIMultiDict[str]) -> str:
    """x-request-id: Azure's, else its apim-request-id, else a new one."""
    found = headers.get("x-request-id")
    if found is None:
        found = headers.get("apim-request-id") or uuid.uuid4().hex
        headers["x-request-id"] = found
    return found


OBSERVER = web.AppKey("azproxy.observer", Observer)


def setup(app: web.Application, config: Config) -> None:
    """app[OBSERVER] over app[METRICS], with the access log while the app
    runs (access_log on)."""
    app[OBSERVER] = Observer(None, app[METRICS])
    if config.access_log:
        app.cleanup_ctx.append(_access_log)


async def _access_log(app: web.Application) -> AsyncIterator[None]:
    """One line per request on stdout (log_format json, text or auto), written in
    batches on the running loop; whatever is pending is written at the end."""
    observer = app[OBSERVER]
    fmt = chosen_format(app[CONFIG].log_format, sys.stdout)
    access_log = AccessLog(asyncio.get_running_loop(), fmt)
    observer.access_log = access_log
    yield
    access_log.flush()

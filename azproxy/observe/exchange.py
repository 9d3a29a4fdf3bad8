"""What each request did, for the access log and the metrics.

The outermost middleware opens an Exchange for every request; the relay fills
in what it learns (model, deployment, endpoint, Azure's status, attempts, the
first byte, bytes sent, token usage) and the middleware closes it: one
access-log line and the metrics, at the cost of a few attribute writes.

Never logged: a credential, a prompt, a completion. Token usage is read from
the end of an answer (where Azure puts `usage`) without parsing the whole body.
A client's model name is logged cut to MAX_SHOWN_CHARS (64) characters, and text
lines escape control characters, so no input makes a line huge or forges one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
import uuid
from asyncio import AbstractEventLoop, TimerHandle
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp.web import StreamResponse
from multidict import CIMultiDict

from azproxy.observe.logging import escape_controls
from azproxy.settings.patterns import MAX_SHOWN_CHARS

__all__ = [
    "QUIET_PATHS",
    "AccessLog",
    "Exchange",
    "Observer",
    "Recorder",
    "UsageTail",
    "ensure_request_id",
    "usage_of",
]

# Probes and scrapes: counted by nobody, logged by nobody.
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

# A `usage` object: {"prompt_tokens": .., ...}, possibly with one level of
# nested details.
_USAGE = re.compile(rb'"usage"\s*:\s*(\{[^{}]*(?:\{[^{}]*\}[^{}]*)*\})')
_USAGE_WINDOW = 4096
# Its top-level counts (details such as cached_tokens are nested deeper).
_COUNT = re.compile(rb'"(prompt|completion|total|input|output)_tokens"\s*:\s*(\d+)')
_NESTED = re.compile(rb"\{[^{}]*\}")


@dataclass(slots=True)
class Exchange:
    method: str
    path: str
    started: float  # time.perf_counter()
    caller: str | None = None
    model: str | None = None
    deployment: str | None = None
    endpoint: str | None = None
    upstream_status: int | None = None
    attempts: int = 0
    failover: bool = False
    stream: bool = False
    first_byte: float | None = None  # perf_counter when the client got a byte
    bytes_out: int = 0
    usage: tuple[int, int, int] | None = None  # prompt, completion, total tokens

    def sent(self, size: int) -> None:
        if self.first_byte is None:
            self.first_byte = time.perf_counter()
        self.bytes_out += size


def usage_of(tail: bytes) -> tuple[int, int, int] | None:
    """Token usage from the end of an answer (JSON or the last SSE events)."""
    # Only the last occurrence is parsed: no scan of the whole answer.
    start = tail.rfind(b'"usage"', max(len(tail) - _USAGE_WINDOW, 0))
    if start < 0:
        return None
    found = _USAGE.match(tail, start)
    if found is None:
        return None
    # Nested objects hold no top-level counts, so drop them before scanning.
    usage = found.group(1)
    flat = _NESTED.sub(b"", usage[1:-1]) if b"{" in usage[1:] else usage
    counts = {name: int(value) for name, value in _COUNT.findall(flat)}
    # Chat/completions name them prompt/completion; Responses input/output.
    prompt = counts.get(b"prompt", counts.get(b"input", 0))
    completion = counts.get(b"completion", counts.get(b"output", 0))
    total = counts.get(b"total", prompt + completion)
    return prompt, completion, total


class UsageTail:
    """The last _USAGE_WINDOW bytes of an answer relayed piece by piece, SSE
    or not: where its usage is. It keeps the last pieces themselves (no copy
    per piece; they are dropped once the later ones cover the window), so a
    usage that arrived in the last piece, or split over several, is found."""

    __slots__ = ("_pieces", "_size")

    def __init__(self) -> None:
        self._pieces: list[bytes] = []
        self._size = 0

    def add(self, piece: bytes) -> None:
        self._pieces.append(piece)
        self._size += len(piece)
        if self._size > 2 * _USAGE_WINDOW:
            self._trim()

    def _trim(self) -> None:
        """Keep only the last pieces that cover the window."""
        pieces = self._pieces
        if len(pieces[-1]) >= _USAGE_WINDOW:  # a large slice: the common case
            self._pieces, self._size = [pieces[-1]], len(pieces[-1])
            return
        size = 0
        for index in range(len(pieces) - 1, -1, -1):
            size += len(pieces[index])
            if size >= _USAGE_WINDOW:
                del pieces[:index]
                break
        self._size = size

    def usage(self) -> tuple[int, int, int] | None:
        return usage_of(b"".join(self._pieces))


def ensure_request_id(headers: CIMultiDict[str]) -> str:
    """x-request-id: Azure's, else its apim-request-id, else a new one."""
    found = headers.get("x-request-id")
    if found is None:
        found = headers.get("apim-request-id") or uuid.uuid4().hex
        headers["x-request-id"] = found
    return found


class AccessLog:
    """One line per request, JSON or text, written in batches to stdout.

    Lines are gathered and written together at most `flush_s` later (or when
    many are pending), so a busy proxy does not pay a write call per request.
    """

    def __init__(
        self, loop: AbstractEventLoop, fmt: str, *, flush_s: float = 0.05
    ) -> None:
        self._loop = loop
        self._json = fmt == "json"
        self._flush_s = flush_s
        self._lines: list[str] = []
        self._timer: TimerHandle | None = None
        self._second = 0
        self._second_text = ""

    def write(
        self, exchange: Exchange, status: int, request_id: str, end: float
    ) -> None:
        model = exchange.model
        if model is not None and len(model) > MAX_SHOWN_CHARS:
            model = model[:MAX_SHOWN_CHARS]
        fields: dict[str, Any] = {
            "time": self._timestamp(),
            "request_id": request_id,
            "method": exchange.method,
            "path": exchange.path,
            "status": status,
            "model": model,
            "deployment": exchange.deployment,
            "endpoint": exchange.endpoint,
            "caller": exchange.caller,
            "upstream_status": exchange.upstream_status,
            "attempts": exchange.attempts,
            "stream": exchange.stream,
            "ttfb_ms": _ms(exchange.first_byte, exchange.started),
            "duration_ms": _ms(end, exchange.started),
            "bytes": exchange.bytes_out,
        }
        if exchange.usage is not None:
            fields["prompt_tokens"], fields["completion_tokens"] = exchange.usage[:2]
            fields["total_tokens"] = exchange.usage[2]
        self._lines.append(_as_json(fields) if self._json else _as_text(fields))
        if len(self._lines) >= 256:
            self.flush()
        elif self._timer is None:
            self._timer = self._loop.call_later(self._flush_s, self.flush)

    def _timestamp(self) -> str:
        """UTC time with milliseconds; the part up to the second is cached."""
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
        return f"{self._second_text}.{int((now - second) * 1000):03d}Z"

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._lines:
            data = "".join(self._lines).encode()
            self._lines.clear()
            # No stdout (closed or detached): nothing to log to.
            with contextlib.suppress(OSError, ValueError):
                os.write(sys.stdout.fileno(), data)


class Recorder(Protocol):
    def record(self, exchange: Exchange, status: int, end: float) -> None: ...


class Observer:
    """Closes each exchange: the access-log line and the metrics."""

    def __init__(self, access_log: AccessLog | None, metrics: Recorder) -> None:
        self.access_log = access_log
        self.metrics = metrics

    def done(self, exchange: Exchange, response: StreamResponse | None) -> None:
        if exchange.path in QUIET_PATHS:
            return
        end = time.perf_counter()
        if response is None:
            status, request_id = 499, ""  # the client left before an answer
        else:
            status = response.status
            request_id = (
                response.headers.get("x-request-id", "")
                if response.prepared
                else ensure_request_id(response.headers)
            )
        self.metrics.record(exchange, status, end)
        if self.access_log is not None:
            self.access_log.write(exchange, status, request_id, end)


def _ms(at: float | None, started: float) -> float | None:
    # Tenths of a millisecond; int() is cheaper than round() on this path.
    return None if at is None else int((at - started) * 10000) / 10


_ENCODER = json.JSONEncoder(separators=(",", ":"), check_circular=False)


def _as_json(fields: dict[str, Any]) -> str:
    return _ENCODER.encode(fields) + "\n"


def _as_text(fields: dict[str, Any]) -> str:
    head = f"{fields['time']} {fields['status']} {fields['method']} {fields['path']}"
    rest = " ".join(
        f"{k}={v}"
        for k, v in fields.items()
        if k not in ("time", "status", "method", "path") and v is not None
    )
    # The path is percent-decoded (%0A is a newline) and the model is the
    # client's: escaped, neither can end the line early.
    return f"{escape_controls(f'{head} {rest}')}\n"

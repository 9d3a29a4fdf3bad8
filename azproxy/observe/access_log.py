"""The access log: one line per request, JSON or text, on stdout.

Never logged: a credential, a prompt, a completion. A client's model name is
logged cut to MAX_SHOWN_CHARS (64) characters, and text lines escape control
characters, so no input makes a line huge or forges one.

`key` is who is counted (an access key's configured name, `passthrough` or
`anonymous`); `caller` says more (`passthrough:RESOURCE`). Tokens come with
`usage_estimated`: true when Azure did not report them (observe/usage.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from asyncio import AbstractEventLoop, TimerHandle
from typing import TYPE_CHECKING, Any

from azproxy.observe.logging import escape_controls
from azproxy.settings.patterns import MAX_SHOWN_CHARS

if TYPE_CHECKING:
    from azproxy.observe.exchange import Exchange

__all__ = ["AccessLog"]


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
            "key": exchange.key,
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
            fields["usage_estimated"] = exchange.usage_estimated
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

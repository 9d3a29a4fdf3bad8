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
import os
import sys
import time
from asyncio import AbstractEventLoop, TimerHandle
from collections.abc import Callable
from json.encoder import encode_basestring_ascii
from typing import TYPE_CHECKING, Any

from azproxy.observe.logging import escape_controls
from azproxy.remembered import Remembered
from azproxy.settings.patterns import MAX_SHOWN_CHARS

if TYPE_CHECKING:
    from azproxy.observe.exchange import Exchange

__all__ = ["AccessLog", "fields", "json_line"]


# A timestamp's end, by its milliseconds: ".000Z" to ".999Z".
_MILLIS = tuple(f".{milli:03d}Z" for milli in range(1000))


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
        self._second = -1
        self._second_text = ""

    def write(
        self, exchange: Exchange, status: int, request_id: str, end: float
    ) -> None:
        time_text = self._timestamp()
        if self._json:
            line = json_line(exchange, status, request_id, end, time_text)
        else:
            line = _as_text(fields(exchange, status, request_id, end, time_text))
        self._lines.append(line)
        if len(self._lines) >= 256:
            self.flush()
        elif self._timer is None:
            self._timer = self._loop.call_later(self._flush_s, self.flush)

    def _timestamp(self) -> str:
        """UTC time with milliseconds; the part up to the second is cached,
        and the milliseconds are one of _MILLIS (no formatting per line)."""
        second, milli = divmod(int(time.time() * 1000), 1000)
        if second != self._second:
            self._second = second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return self._second_text + _MILLIS[milli]

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
    """Milliseconds, to the tenth (json_line writes them with "%.1f")."""
    return None if at is None else round((at - started) * 1000, 1)


def fields(
    exchange: Exchange, status: int, request_id: str, end: float, time_text: str
) -> dict[str, Any]:
    """One line's fields, in their order: what a text line shows, and what
    a JSON line encodes (json_line, which builds the same text faster)."""
    found: dict[str, Any] = {
        "time": time_text,
        "request_id": request_id,
        "method": exchange.method,
        "path": exchange.path,
        "status": status,
        "model": _shown(exchange.model),
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
        found["prompt_tokens"], found["completion_tokens"] = exchange.usage[:2]
        found["total_tokens"] = exchange.usage[2]
        found["usage_estimated"] = exchange.usage_estimated
    return found


def _shown(model: str | None) -> str | None:
    """A client's model name as logged: at most MAX_SHOWN_CHARS long."""
    if model is not None and len(model) > MAX_SHOWN_CHARS:
        return model[:MAX_SHOWN_CHARS]
    return model


# A JSON string, escaped as json.dumps escapes it (ASCII only), in C.
_quoted: Callable[[str], str] = encode_basestring_ascii
# How many middles _MIDDLES keeps, and how long each value in one may be.
_MIDDLES_KEPT = 512
_MIDDLE_CHARS = 64

# What a line says from "method" to "stream", by those values.
_Middle = tuple[
    str, str, int, str | None, str | None, str | None, str | None, str | None,
    int | None, int, bool,
]  # fmt: skip


def _middle_text(middle: _Middle) -> str:
    method, path, status, model, deployment, endpoint, key, caller = middle[:8]
    upstream, attempts, stream = middle[8:]
    return (
        f'"method":{_json(method)},"path":{_json(path)},"status":{status},'
        f'"model":{_json(model)},"deployment":{_json(deployment)},'
        f'"endpoint":{_json(endpoint)},"key":{_json(key)},'
        f'"caller":{_json(caller)},'
        f'"upstream_status":{"null" if upstream is None else upstream},'
        f'"attempts":{attempts},"stream":{"true" if stream else "false"}'
    )


def _json(value: str | None) -> str:
    return "null" if value is None else _quoted(value)


def _short(middle: _Middle) -> bool:
    return all(
        len(value) <= _MIDDLE_CHARS for value in middle if isinstance(value, str)
    )


# A line's middle, from "method" to "stream", made once per set of values: a
# line's method, path, status, model, deployment, endpoint, key, caller,
# Azure's status, attempts and stream are the same few sets again and again,
# and one lookup costs a fraction of escaping and joining eleven values.
# Short values only, at most _MIDDLES_KEPT, then it starts over: a client
# varying its path or model churns it, nothing more.
_MIDDLES: Remembered[_Middle, str] = Remembered(_middle_text, _MIDDLES_KEPT, _short)


def json_line(
    exchange: Exchange, status: int, request_id: str, end: float, time_text: str
) -> str:
    """json.dumps(fields(...), separators=(",", ":")) plus a newline, the
    same text built directly: a dict and the json module cost about three
    times as much, on every request. Strings go through json's own escaping
    (_quoted; the middle's once per set of values, _MIDDLES); times are
    written as "%.1f", which is what repr() gives fields()' rounded floats."""
    started, model, first_byte = exchange.started, exchange.model, exchange.first_byte
    if model is not None and len(model) > MAX_SHOWN_CHARS:
        model = model[:MAX_SHOWN_CHARS]  # as _shown
    middle = _MIDDLES[
        exchange.method,
        exchange.path,
        status,
        model,
        exchange.deployment,
        exchange.endpoint,
        exchange.key,
        exchange.caller,
        exchange.upstream_status,
        exchange.attempts,
        exchange.stream,
    ]
    ttfb = "null" if first_byte is None else "%.1f" % ((first_byte - started) * 1000)
    line = (
        # The time is digits and "-:.TZ": nothing to escape.
        f'{{"time":"{time_text}","request_id":{_quoted(request_id)},{middle},'
        f'"ttfb_ms":{ttfb},"duration_ms":{"%.1f" % ((end - started) * 1000)},'
        f'"bytes":{exchange.bytes_out}'
    )
    usage = exchange.usage
    if usage is None:
        return line + "}\n"
    return (
        f'{line},"prompt_tokens":{usage[0]},"completion_tokens":{usage[1]},'
        f'"total_tokens":{usage[2]},'
        f'"usage_estimated":{"true" if exchange.usage_estimated else "false"}}}\n'
    )


def _as_text(shown: dict[str, Any]) -> str:
    head = f"{shown['time']} {shown['status']} {shown['method']} {shown['path']}"
    rest = " ".join(
        f"{k}={v}"
        for k, v in shown.items()
        if k not in ("time", "status", "method", "path") and v is not None
    )
    # The path is percent-decoded (%0A is a newline) and the model is the
    # client's: escaped, neither can end the line early.
    return f"{escape_controls(f'{head} {rest}')}\n"

"""Logging setup, with every line redacted before it is written.

azproxy never logs a credential on purpose; redaction is the second line of
defence for what a library or an exception message might carry.

Text lines also escape control characters: a client's input (a path, which
aiohttp percent-decodes, or a model name) could otherwise end a line and
forge one of its own. JSON lines are escaped by JSON itself.

Every line, text or JSON, application or access log, carries its time in one
format: UTC ISO 8601 with milliseconds and Z (utc_timestamp).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterable
from typing import TextIO

from aiohttp.http_exceptions import HttpProcessingError

__all__ = [
    "AZURE_HTTP_LOGGER",
    "JsonFormatter",
    "RedactingFormatter",
    "chosen_format",
    "configure_logging",
    "escape_controls",
    "quiet_protocol_errors",
    "redact",
    "utc_timestamp",
]

# azure-core logs each HTTP request and response of azure-identity (every
# Entra ID token fetch), headers included, at info level.
AZURE_HTTP_LOGGER = "azure.core.pipeline.policies.http_logging_policy"

REDACTED = "[redacted]"
_PATTERNS = (
    # A pass-through token RESOURCE:DEPLOYMENT:KEY[...]; the key part is long.
    re.compile(r"\b[A-Za-z0-9-]{1,64}:[^\s:'\"]+:[^\s:'\",]{8,}(?::[^\s:'\",]+)?"),
    # Values of credential-bearing fields, in header dumps, reprs or JSON.
    re.compile(
        r"(?i)((?:api-key|api_key|authorization|access[-_]key|x-api-key)"
        r"['\"]?\s*[:=]\s*['\"]?(?:bearer\s+)?)[^\s'\",}]+"
    ),
    re.compile(r"(?i)(bearer\s+)[^\s'\",}]+"),
    # The WebSocket subprotocol browsers carry their key in (aiohttp logs
    # offered subprotocols when none is accepted).
    re.compile(r"(openai-insecure-api-key\.)[^\s'\",]+"),
    # Azure OpenAI keys: 32 hex digits (classic) or 84 characters (current).
    re.compile(r"\b[0-9a-fA-F]{32}\b"),
    re.compile(r"\b[A-Za-z0-9]{84}\b"),
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    for pattern in _PATTERNS:
        text = pattern.sub(
            lambda m: (m.group(1) if m.re.groups else "") + REDACTED, text
        )
    return text


# C0 and C1 controls (CR and LF among them), DEL, the Unicode line and
# paragraph separators, and the backslash, so that an escaped "\n" cannot be
# mistaken for one the input spelled out.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\\\u2028\u2029]")
_NAMED = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(found: re.Match[str]) -> str:
    char = found.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """`text` with control characters and backslashes escaped (\\n, \\x1b, \\\\)."""
    # Almost every line has nothing to escape: two C-speed scans decide that.
    if text.isprintable() and "\\" not in text:
        return text
    return _CONTROL.sub(_escaped, text)


def utc_timestamp(when: float) -> str:
    """`when` (seconds since the epoch) as 2026-11-25T18:34:59.269Z: the
    access log's format, and so every log line's."""
    second = int(when)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    return f"{text}.{int((when - second) * 1000):03d}Z"


def chosen_format(fmt: str, stream: TextIO) -> str:
    """The log_format for lines written to `stream`: `auto` is text on a
    terminal, where a person reads them, and JSON otherwise."""
    if fmt != "auto":
        return fmt
    try:
        terminal = stream.isatty()
    except (AttributeError, ValueError):  # replaced, or closed
        terminal = False
    return "text" if terminal else "json"


class RedactingFormatter(logging.Formatter):
    """Text lines, redacted (message, arguments and traceback) and escaped.

    The message's control characters are escaped, so one record starts one
    line; a traceback keeps its lines, each indented, so none of them can
    pass for a record either.
    """

    def __init__(self, fmt: str, secrets: Iterable[str] = ()) -> None:
        super().__init__(fmt)
        self.secrets = tuple(s for s in secrets if s)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return utc_timestamp(record.created)

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        # Redact before escaping: escaping could split a known secret.
        text = escape_controls(redact(self.formatMessage(record), self.secrets))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        for extra in (record.exc_text, record.stack_info):
            if extra:
                text += "\n" + self._indented(redact(extra, self.secrets))
        return text

    @staticmethod
    def _indented(text: str) -> str:
        return "\n".join("    " + escape_controls(line) for line in text.split("\n"))


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors; redacted like text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__("%(message)s")
        self.secrets = tuple(s for s in secrets if s)

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "time": utc_timestamp(record.created),
                "level": record.levelname.lower(),
                "logger": record.name,
                "message": redact(super().format(record), self.secrets),
            },
            separators=(",", ":"),
        )


def quiet_protocol_errors(record: logging.LogRecord) -> bool:
    """aiohttp logs a traceback when it rejects a malformed request (a header
    too long, a bad request line); that is the client's mistake, worth one line.
    The line names the error's kind only: its message quotes the request line
    or header, a token with it, in shapes no redaction pattern can foresee."""
    exc = record.exc_info[1] if record.exc_info else None
    if record.name == "aiohttp.server" and isinstance(exc, HttpProcessingError):
        record.msg = "rejected a malformed request: %s %s"
        record.args = (exc.code, type(exc).__name__)
        record.exc_info = None
        record.exc_text = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
    return True


def configure_logging(
    level: str, secrets: Iterable[str] = (), fmt: str = "text"
) -> None:
    """Application logs on stderr, at `level`, as `fmt` (json, text or auto)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(quiet_protocol_errors)
    handler.setFormatter(
        JsonFormatter(secrets)
        if chosen_format(fmt, sys.stderr) == "json"
        else RedactingFormatter(
            "%(asctime)s %(levelname)s %(name)s: %(message)s", secrets
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Its lines are for debugging azure-identity: shown at debug level only.
    azure_http = logging.getLogger(AZURE_HTTP_LOGGER)
    azure_http.setLevel(logging.NOTSET if level == "debug" else logging.WARNING)

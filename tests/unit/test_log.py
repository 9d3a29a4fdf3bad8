from __future__ import annotations

import logging
import sys

import pytest

from azproxy.observe.logging import RedactingFormatter, redact

KEY = "0123456789abcdef0123456789abcdef"
LONG_KEY = "A1b2" * 21


@pytest.mark.parametrize(
    "text",
    [
        f"token res:dep:{KEY}:2024-10-21 rejected",
        f"Authorization: Bearer res:dep:{KEY}",
        f"{{'api-key': '{KEY}'}}",
        f"api_key={LONG_KEY}",
        f"key {KEY} leaked",
        f"key {LONG_KEY} leaked",
        f"headers={{'Authorization': 'some-opaque-token-{KEY}'}}",
        f"bearer eyJhbGciOi.{KEY}.sig",
        f"protocols ['realtime', 'openai-insecure-api-key.res%3Adep%3A{KEY}']",
        f"protocols ['openai-insecure-api-key.{LONG_KEY}x']",
    ],
)
def test_secrets_are_redacted(text: str) -> None:
    out = redact(text)
    assert KEY not in out
    assert LONG_KEY not in out
    assert "[redacted]" in out


def test_known_secrets_are_redacted_whatever_their_shape() -> None:
    assert redact("access key is s3cr3t!", ["s3cr3t!"]) == "access key is [redacted]"


def test_plain_text_is_kept() -> None:
    text = "upstream 127.0.0.1:9000 failed (HTTP 503); retry 1/3 in 1 s"
    assert redact(text) == text


def test_formatter_redacts_tracebacks() -> None:
    formatter = RedactingFormatter("%(message)s")
    try:
        raise ValueError(f"bad token res:dep:{KEY}")
    except ValueError:
        record = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "failed %s", (KEY,), sys.exc_info()
        )
    line = formatter.format(record)
    assert KEY not in line
    assert "ValueError" in line


def test_malformed_request_tracebacks_become_one_line() -> None:
    from aiohttp.http_exceptions import LineTooLong

    from azproxy.observe.logging import quiet_protocol_errors

    try:
        raise LineTooLong(b"Bearer " + KEY.encode(), "16384")
    except LineTooLong:
        record = logging.LogRecord(
            "aiohttp.server", logging.ERROR, __file__, 1, "Error", (), sys.exc_info()
        )
    assert quiet_protocol_errors(record)
    line = RedactingFormatter("%(levelname)s %(message)s").format(record)
    assert line.startswith("WARNING rejected a malformed request: 400")
    assert "Traceback" not in line
    assert KEY not in line


def test_text_lines_escape_control_characters() -> None:
    record = logging.LogRecord(
        "azproxy",
        logging.ERROR,
        __file__,
        1,
        "internal error on %s %s",
        ("POST", "/v1/chat\r\nWARNING forged: line \\ \x1b[2J \u2028 \x85 é"),
        None,
    )
    line = RedactingFormatter("%(levelname)s %(message)s").format(record)
    assert line == (
        "ERROR internal error on POST /v1/chat\\r\\nWARNING forged: line "
        "\\\\ \\x1b[2J \\u2028 \\x85 é"
    )


def test_tracebacks_keep_their_lines_indented_and_escaped() -> None:
    secret = "s3cr3t\\with\nodd-characters"
    try:
        raise ValueError(f"bad input\nERROR forged record\x1b[2J {secret}")
    except ValueError:
        record = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "failed: %s", (secret,), sys.exc_info()
        )
    text = RedactingFormatter("%(levelname)s %(message)s", [secret]).format(record)
    head, *rest = text.split("\n")
    assert head == "ERROR failed: [redacted]"
    assert rest[0] == "    Traceback (most recent call last):"
    assert all(line.startswith("    ") for line in rest)
    assert rest[-2:] == [
        "    ValueError: bad input",
        "    ERROR forged record\\x1b[2J [redacted]",
    ]
    assert "s3cr3t" not in text


def test_a_malformed_request_is_logged_without_its_text() -> None:
    """A token in a shape no redaction pattern knows must not be logged
    either: the line names the error, never the request line it quotes."""
    from aiohttp.http_exceptions import BadStatusLine

    from azproxy.observe.logging import quiet_protocol_errors

    token = "opaque-token-in-no-known-shape"
    try:
        raise BadStatusLine(f"GET /v1/models?key={token} HTTP/1.1 x")
    except BadStatusLine:
        record = logging.LogRecord(
            "aiohttp.server", logging.ERROR, __file__, 1, "Error", (), sys.exc_info()
        )
    quiet_protocol_errors(record)
    assert record.getMessage() == "rejected a malformed request: 400 BadStatusLine"
    assert token not in RedactingFormatter("%(message)s").format(record)

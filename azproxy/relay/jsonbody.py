"""Read what azproxy needs from a JSON request body, and edit it in place.

`read_object` checks the body's shape (jsonshape), then walks only the top
level of the object: json's own C scanner reads each member's value, and a
regular expression skips runs of plain members (a short key azproxy does not
read, then a short string, number or literal value) without building them,
in C. Every other member costs one turn of a Python loop (about 1.5 µs), so
their number is bounded (MAX_READ_MEMBERS; an OpenAI request has a few
dozen). It records where the `model` value lies, so that replacing it
(Azure's v1 API and the resource calls take the deployment name there) is a
byte splice: every other byte reaches Azure as the client sent it.

Two top-level `model` members, however spelled (`"mod\\u0065l"`, and in any
letter case: a parser that matches names case-insensitively would read
`"Model"` too), are refused (400 ambiguous_model): parsers differ on which
one wins, and Azure must not read a model other than the one azproxy
checked. It also notes the top-level `stream` and `stream_options` (with
where its value lies, so that asking Azure for a stream's usage is a splice
too: stream_usage.py).

`glance_model` reads the `model` of a body that is not parsed, for the log
only. Pure: no I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass

from azproxy.errors import BadRequest, InvalidJson
from azproxy.relay.jsonshape import JsonBounds, check_shape
from azproxy.relay.splice import Splice

__all__ = [
    "GLANCED_BYTES",
    "MAX_READ_MEMBERS",
    "JsonObject",
    "glance_model",
    "read_object",
]

_WS = re.compile(r"[ \t\n\r]*")  # JSON's whitespace, not \s (RFC 8259 §2)
_WHITESPACE = " \t\n\r"
_W = r"[ \t\n\r]*+"
# A key without escapes, and the colon after it.
_PLAIN_KEY = re.compile(rf'"([^"\\\x00-\x1f]*+)"{_W}:{_W}')
# A run of members that cannot matter: a key azproxy does not read, then a
# short string, a number or a literal. Possessive throughout (nothing
# to backtrack into), and exactly JSON's grammar for these tokens: what it
# skips, json would have accepted. Longer strings are left to json's own
# scanner, which is faster on them.
_STRING = r'"(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4}){0,256}+"'
_PLAIN = r'"[^"\\\x00-\x1f]{0,256}+"'  # a short string without escapes
_NUMBER = r"-?+(?:0|[1-9][0-9]*+)(?:\.[0-9]++)?+(?:[eE][-+]?+[0-9]++)?+"
_SCALAR = f"(?:{_STRING}|{_NUMBER}|true|false|null)"
# Keys azproxy reads are never skipped; nor is any key with an escape, which
# could spell one of them (`"mod\\u0065l"`): those take the slow way below.
_NOTED = ("model", "stream", "stream_options")
_SKIPPED_KEY = rf'(?!"(?i:{"|".join(_NOTED)})"){_PLAIN}'
_PLAIN_MEMBERS = re.compile(f"(?:{_SKIPPED_KEY}{_W}:{_W}{_SCALAR}{_W},{_W})*+")
# json's C scanner, public in its module but absent from the type stubs:
# a string from just after its opening quote, and any value at an offset.
_scan_string: Callable[[str, int], tuple[str, int]]
_scan_string = json.decoder.scanstring  # type: ignore[attr-defined]
_scan_value: Callable[[str, int], tuple[object, int]]
_scan_value = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
# A `model` member with a string value, for glance_model: the value's start,
# up to an escape or a quote, within a bound.
_GLANCED_MODEL = re.compile(
    rb'"model"[ \t\n\r]*+:[ \t\n\r]*+"([^"\\\x00-\x1f\x7f]{1,256})'
)
GLANCED_BYTES = 64 * 1024  # where glance_model looks, at each end of a body
# Members the walk reads one by one (not skipped in C): a bound on the time a
# body can take, far above the few dozen members of any OpenAI request.
MAX_READ_MEMBERS = 10_000


@dataclass(frozen=True, slots=True)
class JsonObject:
    """A JSON object body: its top-level `model`, and where to edit it."""

    model: object  # the value of the top-level `model`, None when absent
    model_at: tuple[int, int] | None  # its value's byte offsets
    opening: int  # the byte offset just after `{`, where a member can go
    empty: bool  # no members at all
    stream: object = None  # the value of the top-level `stream`, if any
    stream_options: object = None  # the value of `stream_options`, if any
    # Its value's byte offsets; None when absent. Spelled in any letter case.
    stream_options_at: tuple[int, int] | None = None
    # Two `stream_options` members: which one Azure reads is unknown, so
    # azproxy leaves them alone.
    stream_options_twice: bool = False

    def set_model(self, value: str) -> Splice:
        """The splice that makes the top-level `model` equal to `value`."""
        encoded = json.dumps(value).encode()
        if self.model_at is None:
            return self.insert_member("model", encoded)
        start, end = self.model_at
        return Splice(start, end, encoded)

    def insert_member(self, name: str, value: bytes) -> Splice:
        """A splice that adds the member `name` (value: JSON text) first."""
        member = json.dumps(name).encode() + b":" + value
        return Splice.insert(self.opening, member if self.empty else member + b",")


def read_object(body: bytes, bounds: JsonBounds) -> JsonObject:
    """The body as a JSON object; BadRequest when it is too complex, not a
    JSON object, or names two models."""
    try:
        check_shape(body, bounds)
        text = body.decode()  # strict UTF-8 (RFC 8259 §8.1)
        return _walk(text, ascii_only=len(text) == len(body))
    except (ValueError, StopIteration, IndexError, RecursionError):
        # ValueError covers InvalidJson, json's errors and UnicodeDecodeError;
        # StopIteration and IndexError are how the scanner says "no value here".
        raise BadRequest(
            "The request body must be a JSON object with a 'model' field; "
            "azproxy picks the Azure deployment from it.",
            param="model",
        ) from None


def glance_model(body: bytes, limit: int) -> str | None:
    """The `model` a body names, for the log, without parsing it: the first
    `"model"` key with a string value in the body's first GLANCED_BYTES, else
    in its last (clients write `model` after `messages`, which can be large),
    cut to `limit` characters. Never huge, never a control character, and a
    glance: a nested `model` may be the one seen. Costs one C search of at
    most 2 x GLANCED_BYTES."""
    found = _GLANCED_MODEL.search(body, 0, GLANCED_BYTES)
    if found is None and len(body) > GLANCED_BYTES:
        found = _GLANCED_MODEL.search(body, len(body) - GLANCED_BYTES)
    if found is None:
        return None
    value = found[1]
    try:
        return value.decode()[:limit]
    except UnicodeDecodeError:  # cut inside a character, or not UTF-8
        return value.decode(errors="ignore")[:limit] or None


def _walk(text: str, *, ascii_only: bool) -> JsonObject:
    at = _skip_ws(text, 0)
    if text[at] != "{":
        raise InvalidJson("not an object")
    opening = at + 1  # only ASCII before it: a byte offset too
    position = _skip_ws(text, opening)
    empty = text[position] == "}"
    if empty:
        members = _Members()
    else:
        members = _members(text, position)
        position = members.end
    if _skip_ws(text, position + 1) != len(text):
        raise InvalidJson("text after the object")
    model_at, options_at = members.model_at, members.stream_options_at
    if not ascii_only:
        if model_at is not None:
            model_at = _byte_span(text, *model_at)
        if options_at is not None:
            options_at = _byte_span(text, *options_at)
    return JsonObject(
        members.model,
        model_at,
        opening,
        empty,
        members.stream,
        members.stream_options,
        options_at,
        members.stream_options_twice,
    )


@dataclass(slots=True)
class _Members:
    """What the walk of the top-level members noted."""

    model: object = None
    model_at: tuple[int, int] | None = None  # in the text, not yet in bytes
    stream: object = None
    stream_options: object = None
    stream_options_at: tuple[int, int] | None = None  # in the text
    stream_options_twice: bool = False
    end: int = 0  # the position of the closing `}`


def _members(text: str, position: int) -> _Members:
    """Walk the top-level members from the first key."""
    noted = _Members()
    for _ in range(MAX_READ_MEMBERS):
        position = _skip(_PLAIN_MEMBERS, text, position)
        found = _PLAIN_KEY.match(text, position)
        if found is not None:
            key, start = found[1], found.end()
        else:  # a key with escapes
            if text[position] != '"':
                raise InvalidJson("a member must start with a key")
            key, position = _scan_string(text, position + 1)
            position = _skip_ws(text, position)
            if text[position] != ":":
                raise InvalidJson("a key must be followed by ':'")
            start = _skip_ws(text, position + 1)
        value, end = _scan_value(text, start)
        if key == "model" or (len(key) == 5 and key.lower() == "model"):
            if noted.model_at is not None:
                raise _ambiguous()
            noted.model, noted.model_at = value, (start, end)
        elif key == "stream":
            noted.stream = value
        elif len(key) == 14 and key.lower() == "stream_options":
            noted.stream_options_twice = noted.stream_options_at is not None
            noted.stream_options, noted.stream_options_at = value, (start, end)
        if text[end] in _WHITESPACE:
            end = _skip_ws(text, end)
        if text[end] == "}":
            noted.end = end
            return noted
        if text[end] != ",":
            raise InvalidJson("members must be separated by ','")
        position = _skip_ws(text, end + 1)
    raise BadRequest(
        f"The JSON body has more than {MAX_READ_MEMBERS} top-level members "
        "(an OpenAI request has a few dozen).",
        code="body_too_complex",
    )


def _skip(pattern: re.Pattern[str], text: str, position: int) -> int:
    """Where a pattern that can match nothing ends, matched at `position`."""
    return pattern.match(text, position).end()  # type: ignore[union-attr]


def _skip_ws(text: str, position: int) -> int:
    return _skip(_WS, text, position)


def _byte_span(text: str, start: int, end: int) -> tuple[int, int]:
    """Offsets in the UTF-8 body of text[start:end]."""
    byte_start = len(text[:start].encode())
    return byte_start, byte_start + len(text[start:end].encode())


def _ambiguous() -> BadRequest:
    return BadRequest(
        "The JSON body has more than one top-level 'model' member; send one.",
        param="model",
        code="ambiguous_model",
    )

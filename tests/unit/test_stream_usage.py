"""Asking Azure for a stream's usage: which api-versions take
`stream_options`, and the splice that asks, byte for byte."""

from __future__ import annotations

import json

import pytest

from azproxy.relay.families import Route
from azproxy.relay.jsonbody import read_object
from azproxy.relay.splice import spliced
from azproxy.relay.stream_usage import accepts_stream_options, usage_splice
from tests.unit.test_jsonbody import BOUNDS

ASKED = b'"stream_options":{"include_usage":true}'


@pytest.mark.parametrize(
    ("route", "accepts"),
    [
        (Route(True, None), True),  # the v1 API
        (Route(True, "preview"), True),  # v1's preview families (completions)
        (Route(False, "2024-10-21"), True),
        (Route(False, "2025-01-01"), True),  # a later GA
        (Route(False, "2024-06-01"), False),
        (Route(False, "2024-02-01"), False),  # what seed tokens often carry
        (Route(False, "2023-05-15"), False),
        (Route(False, "2024-09-01-preview"), True),
        (Route(False, "2025-04-01-preview"), True),
        (Route(False, "2024-08-01-preview"), False),
        (Route(False, "2024-02-15-preview"), False),
        (Route(False, None), False),
    ],
)
def test_the_api_versions_that_take_stream_options(route: Route, accepts: bool) -> None:
    assert accepts_stream_options(route) is accepts


@pytest.mark.parametrize(
    ("body", "sent"),
    [
        # No stream_options: inserted first.
        (
            b'{"model": "m", "stream": true}',
            b"{" + ASKED + b',"model": "m", "stream": true}',
        ),
        # null: replaced. An object without include_usage: the member goes
        # in after its "{", every byte of the client's kept. With it false or
        # null: the object rewritten, the client's other options kept.
        (
            b'{"stream": true, "stream_options": null}',
            b'{"stream": true, "stream_options": {"include_usage":true}}',
        ),
        (
            b'{"stream": true, "stream_options": { }, "n": 1}',
            b'{"stream": true, "stream_options": {"include_usage":true }, "n": 1}',
        ),
        (
            b'{"stream":true,"stream_options":{"include_usage":false}}',
            b'{"stream":true,"stream_options":{"include_usage":true}}',
        ),
        (
            b'{"stream":true,"stream_options":{"include_obfuscation":false}}',
            b'{"stream":true,"stream_options":'
            b'{"include_usage":true,"include_obfuscation":false}}',
        ),
        # Numbers json.dumps would rewrite stay as the client wrote them.
        (
            b'{"stream":true,"stream_options":'
            b'{"x": 1e400, "y": 0.1000000000000000001}}',
            b'{"stream":true,"stream_options":'
            b'{"include_usage":true,"x": 1e400, "y": 0.1000000000000000001}}',
        ),
        # A key repeated inside it is written once.
        (
            b'{"stream":true,"stream_options":'
            b'{"include_usage":false,"include_usage":null}}',
            b'{"stream":true,"stream_options":{"include_usage":true}}',
        ),
        # Non-ASCII before it: the offsets are bytes.
        (
            '{"messages": "h\u00e9llo \U0001f600", "stream": true, '
            '"stream_options": {}}'.encode(),
            '{"messages": "h\u00e9llo \U0001f600", "stream": true, '
            '"stream_options": {"include_usage":true}}'.encode(),
        ),
        # Spelled in another letter case: that member, never a second one.
        (
            b'{"stream": true, "Stream_Options": {}}',
            b'{"stream": true, "Stream_Options": {"include_usage":true}}',
        ),
    ],
)
def test_the_splice_that_asks_for_usage(body: bytes, sent: bytes) -> None:
    fields = read_object(body, BOUNDS)
    splice = usage_splice(fields)
    assert splice is not None
    assert spliced(body, [splice]) == sent
    document = json.loads(sent)
    options = {k.lower(): v for k, v in document.items()}["stream_options"]
    assert options["include_usage"] is True


@pytest.mark.parametrize(
    "body",
    [
        b'{"model": "m"}',  # not a stream
        b'{"stream": false}',
        b'{"stream": "true"}',
        b'{"stream": true, "stream_options": {"include_usage": true}}',  # asked
        b'{"stream": true, "stream_options": {"include_usage": 1}}',  # Azure judges
        b'{"stream": true, "stream_options": "usage"}',
        b'{"stream": true, "stream_options": [true]}',
        # include_usage false beside a number json.dumps would rewrite.
        b'{"stream": true, "stream_options": {"include_usage": false, "x": 1e400}}',
        # Two of them: which one Azure reads is not known.
        b'{"stream": true, "stream_options": {}, "stream_options": null}',
        b'{"stream": true, "stream_options": {}, "STREAM_OPTIONS": {}}',
    ],
)
def test_bodies_left_alone(body: bytes) -> None:
    assert usage_splice(read_object(body, BOUNDS)) is None


def test_stream_options_is_noted_with_its_span() -> None:
    body = b'{"stream_options": null, "model": "m"}'
    fields = read_object(body, BOUNDS)
    assert fields.stream_options is None and fields.stream_options_at is not None
    start, end = fields.stream_options_at
    assert body[start:end] == b"null"
    assert read_object(b'{"model": "m"}', BOUNDS).stream_options_at is None

"""Reading a JSON object body's top level: the model and its byte offsets,
one model only, json's own verdict on what is JSON, and splices that leave
every other byte as the client sent it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from azproxy.errors import BadRequest
from azproxy.relay.jsonbody import (
    MAX_READ_MEMBERS,
    JsonObject,
    glance_model,
    read_object,
)
from azproxy.relay.jsonshape import JsonBounds
from azproxy.relay.splice import spliced

BOUNDS = JsonBounds(depth=64, containers=100_000, values=1_000_000)
PROPERTY = settings(max_examples=150, deadline=None, derandomize=True, database=None)


def model_bytes(body: bytes, found: JsonObject) -> bytes:
    assert found.model_at is not None
    start, end = found.model_at
    return body[start:end]


@pytest.mark.parametrize(
    ("body", "model", "token"),
    [
        (b'{"model":"gpt-4o","messages":[]}', "gpt-4o", b'"gpt-4o"'),
        (b'{"messages": [], "n": 1, "model" : "m" }', "m", b'"m"'),
        # Non-ASCII before the model: offsets are bytes, not characters.
        (
            '{"x": "h\u00e9llo \U0001f600", "model": "m\u00e9"}'.encode(),
            "m\u00e9",
            None,
        ),
        (b'{"x": "\\u00e9\\"", "model": "m"}', "m", b'"m"'),
        (b'{"mod\\u0065l": "escaped key"}', "escaped key", b'"escaped key"'),
        (b'{"model": null}', None, b"null"),
        (b'{"model": {"nested": true}}', {"nested": True}, b'{"nested": true}'),
        # A nested `model` is just data.
        (b'{"metadata": {"model": "x"}, "model": "y"}', "y", b'"y"'),
        (
            b'{"a": 1, "b": "s", "c": true, "d": null, "e": -1.5e3, "model": "m"}',
            "m",
            None,
        ),
    ],
)
def test_the_top_level_model_and_where_it_is(
    body: bytes, model: object, token: bytes | None
) -> None:
    found = read_object(body, BOUNDS)
    assert found.model == model
    raw = model_bytes(body, found)
    assert json.loads(raw) == model
    if token is not None:
        assert raw == token


@pytest.mark.parametrize(
    "body",
    [
        b'{"model": "a", "model": "b"}',
        b'{"model": "a", "mod\\u0065l": "b"}',
        b'{"\\u006dodel": "a", "messages": [], "model": "a"}',
        b'{"a": 1, "b": 2, "model": "x", "c": 3, "d": 4, "model": "x"}',
    ],
)
def test_two_top_level_models_are_ambiguous(body: bytes) -> None:
    with pytest.raises(BadRequest) as raised:
        read_object(body, BOUNDS)
    assert raised.value.code == "ambiguous_model"
    assert raised.value.status == 400


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b'"model"',
        b'{"model": "a",}',
        b'{"model": "a"} {}',
        b'{"model" "a"}',
        b'{"a": 01, "model": "x"}',
        b'{"a": "\x01", "model": "x"}',  # a control character in a string
        b'{"a": "\\x", "model": "x"}',  # an escape JSON does not have
        b'\xef\xbb\xbf{"model": "x"}',  # a byte order mark (RFC 8259 8.1)
        b'{"model": "\xff"}',  # not UTF-8
        b'{"a": [' + b"1," * 10 + b"1]]",
    ],
)
def test_what_is_not_a_json_object_is_400(body: bytes) -> None:
    with pytest.raises(BadRequest) as raised:
        read_object(body, BOUNDS)
    assert raised.value.code == "invalid_request"
    assert raised.value.param == "model"


def test_too_complex_before_anything_is_parsed() -> None:
    body = b'{"model": "m", "x": [' + b"[]," * 200 + b"[]]}"
    with pytest.raises(BadRequest) as raised:
        read_object(body, JsonBounds(64, 100, 1000))
    assert raised.value.code == "body_too_complex"
    assert "max_json_containers" in raised.value.message


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            b'{ "messages" : [],\n  "model" :  "gpt-4o" , "t":0.5 }',
            b'{ "messages" : [],\n  "model" :  "dep-1" , "t":0.5 }',
        ),
        (
            '{"x": "\u00e9\\u00e9", "model": "gpt-4o", "y": 1}'.encode(),
            '{"x": "\u00e9\\u00e9", "model": "dep-1", "y": 1}'.encode(),
        ),
        (b'{"model": 7}', b'{"model": "dep-1"}'),
        # No model at all: added as the first member.
        (b'{"messages": []}', b'{"model":"dep-1","messages": []}'),
        (b" { } ", b' {"model":"dep-1" } '),
    ],
)
def test_set_model_changes_only_the_model(body: bytes, expected: bytes) -> None:
    edited = spliced(body, [read_object(body, BOUNDS).set_model("dep-1")])
    assert edited == expected


def test_insert_member_adds_a_member_first() -> None:
    body = b'{"model": "m"}'
    splice = read_object(body, BOUNDS).insert_member(
        "stream_options", b'{"include_usage":true}'
    )
    edited = spliced(body, [splice])
    assert edited == b'{"stream_options":{"include_usage":true},"model": "m"}'


TEXT = st.text(
    st.characters(codec="utf-8") | st.sampled_from(list('"\\[]{},:')), max_size=10
) | st.just("model")
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4)
    ),
    max_leaves=20,
)
OBJECTS = st.dictionaries(
    st.sampled_from(["model", "models", "mode", "a", "input", "\u00e9"]) | TEXT,
    VALUES,
    max_size=8,
)
ENCODINGS = st.sampled_from(
    [
        {"ensure_ascii": True},
        {"ensure_ascii": False},
        {"indent": 2},
        {"separators": (",", ":")},
    ]
)


@PROPERTY
@given(OBJECTS, ENCODINGS)
def test_read_object_agrees_with_json_and_splices_exactly(
    document: dict[str, Any], encoding: dict[str, Any]
) -> None:
    body = json.dumps(document, **encoding).encode()
    found = read_object(body, BOUNDS)
    if "model" in document:
        assert found.model == document["model"]
        assert json.loads(model_bytes(body, found)) == document["model"]
    else:
        assert found.model is None and found.model_at is None
    edited = spliced(body, [found.set_model("dep")])
    assert json.loads(edited) == document | {"model": "dep"}


def top_level_models(body: bytes) -> int:
    pairs = json.loads(body, object_pairs_hook=list)
    assert isinstance(pairs, list)
    return sum(1 for key, _ in pairs if key == "model")


@PROPERTY
@given(OBJECTS, st.data())
def test_a_damaged_body_is_refused_exactly_when_json_refuses_it(
    document: dict[str, Any], data: st.DataObject
) -> None:
    body = json.dumps(document, ensure_ascii=False).encode()
    at = data.draw(st.integers(0, max(0, len(body) - 1)))
    cut = data.draw(st.integers(0, 3))
    extra = data.draw(st.sampled_from([b"", b",", b'"', b"}", b"]", b"\\", b"1"]))
    damaged = body[:at] + extra + body[at + cut :]
    try:
        parsed = json.loads(damaged)
        expected = "ok" if isinstance(parsed, dict) else "invalid_request"
        if expected == "ok" and top_level_models(damaged) > 1:
            expected = "ambiguous_model"
    except ValueError:
        expected = "invalid_request"
    try:
        read_object(damaged, BOUNDS)
        outcome = "ok"
    except BadRequest as exc:
        outcome = exc.code
    assert outcome == expected


@pytest.mark.parametrize(
    ("body", "stream"),
    [
        (b'{"model":"m","stream":true}', True),
        (b'{"stream":false,"model":"m"}', False),
        (b'{"model":"m"}', None),
        # An escaped spelling is the same key (the fast skip must not hide it).
        (b'{"model":"m","str\\u0065am":true}', True),
        (b'{"model":"m","x":{"stream":true}}', None),  # not the top level
    ],
)
def test_the_top_level_stream_is_noted(body: bytes, stream: object) -> None:
    assert read_object(body, BOUNDS).stream == stream


@pytest.mark.parametrize(
    "body",
    [
        b'{"model": "a", "Model": "b"}',
        b'{"MODEL": "a", "messages": [], "model": "b"}',
        b'{"model": "a", "M\\u006fdel": "b"}',
    ],
)
def test_a_model_in_another_letter_case_is_a_second_model(body: bytes) -> None:
    # A parser that matches names case-insensitively would read either one.
    with pytest.raises(BadRequest) as raised:
        read_object(body, BOUNDS)
    assert raised.value.code == "ambiguous_model"


def test_members_read_one_by_one_are_bounded() -> None:
    # Escaped keys cannot be skipped in C: each costs a turn of the walk.
    # 11 MB of them took ~2 s of the event loop before the bound.
    members = b'"\\u0061":0,' * (MAX_READ_MEMBERS + 1)
    body = b'{"model":"x",' + members + b'"z":0}'
    with pytest.raises(BadRequest) as raised:
        read_object(body, BOUNDS)
    assert raised.value.code == "body_too_complex"
    assert str(MAX_READ_MEMBERS) in raised.value.message
    # Just under the bound, the same body is read.
    fine = b'{"model":"x",' + b'"\\u0061":0,' * (MAX_READ_MEMBERS - 2) + b'"z":0}'
    assert read_object(fine, BOUNDS).model == "x"


@pytest.mark.parametrize(
    ("body", "model"),
    [
        (b'{"messages": [], "model": "gpt-4o"}', "gpt-4o"),
        (b'{"model" :\n "gpt-4o", "stream": true}', "gpt-4o"),
        # A `model` whose value is not a string is not the one.
        (b'{"tools": [{"model": {"type": "string"}}], "model": "m"}', "m"),
        (b'{"messages": []}', None),
        (b'{"model": null}', None),
        (b'{"model": ""}', None),
        (b"not json at all", None),
        # Cut to the limit, at an escape, at a control character: never a
        # huge value, never one that could forge a log line.
        (b'{"model": "' + b"m" * 100_000 + b'"}', "m" * 64),
        (b'{"model": "gpt\\n4o"}', "gpt"),
        (b'{"model": "gpt\x1b[2J"}', "gpt"),
        (b'{"model": "gpt\x7f"}', "gpt"),
        ('{"model": "m\u00e9"}'.encode(), "m\u00e9"),
        # Large messages first, as clients write them: found at the end.
        (b'{"messages": "' + b"x" * 1_000_000 + b'", "model": "gpt-4o"}', "gpt-4o"),
        # In neither end: not looked for (a glance costs a bounded search).
        (
            b'{"a": "'
            + b"x" * 100_000
            + b'", "model": "m", "b": "'
            + b"x" * 100_000
            + b'"}',
            None,
        ),
    ],
)
def test_a_glance_at_the_model_of_a_body_not_parsed(
    body: bytes, model: str | None
) -> None:
    assert glance_model(body, 64) == model

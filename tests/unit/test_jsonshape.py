"""The JSON structure check: bounds on depth, containers and values, checked
without parsing, and never counting less than json.loads would build."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from azproxy.errors import BadRequest, InvalidJson
from azproxy.relay.jsonshape import WINDOW, JsonBounds, Shape, check_shape, measure

WIDE = JsonBounds(depth=64, containers=100_000, values=1_000_000)
PROPERTY = settings(max_examples=150, deadline=None, derandomize=True, database=None)


def refused(body: bytes, bounds: JsonBounds) -> str | None:
    """The setting named when the body is refused, None when accepted."""
    try:
        check_shape(body, bounds)
    except BadRequest as exc:
        assert exc.code == "body_too_complex" and exc.status == 400
        return exc.message.split("raise ")[1].split(" ")[0]
    return None


@pytest.mark.parametrize(
    ("body", "shape"),
    [
        (b"{}", Shape(1, 1, 2)),
        (b'{"model": "gpt-4o"}', Shape(1, 1, 2)),
        (b'{"a": [1, 2, {"b": []}]}', Shape(4, 4, 7)),
        (b"[[[[]]]]", Shape(4, 4, 5)),
        (b'"just a string"', Shape(0, 0, 1)),
        # Brackets, braces, commas and quotes inside strings do not count.
        (b'{"a": "[[[{,,,", "b": "}]]"}', Shape(1, 1, 3)),
        (b'{"a": "say \\"[[\\"", "b": "\\\\"}', Shape(1, 1, 3)),
        (b'{"a": "\\\\\\"[", "b": ["\\\\", "x"]}', Shape(2, 2, 5)),
        (b'["", "", "[", ""]', Shape(1, 1, 5)),
        (b'{"\\u005b": "\\u005d"}', Shape(1, 1, 2)),
    ],
)
def test_measure(body: bytes, shape: Shape) -> None:
    assert measure(body) == shape
    json.loads(body)  # each one is JSON


def test_strings_spanning_the_split_window_are_stripped() -> None:
    # A string that opens in one window and closes in a later one.
    body = b'{"a": "' + b"[,{" * WINDOW + b'", "b": [' + b"[]," * 10 + b"[]]}"
    assert measure(body) == Shape(3, 13, 25)


@pytest.mark.parametrize(
    ("body", "bounds", "setting"),
    [
        (b"[[[[]]]]", JsonBounds(3, 100, 100), "max_json_depth"),
        (b"[[[]]]", JsonBounds(3, 100, 100), None),
        (b"[[],[],[],[]]", JsonBounds(64, 4, 100), "max_json_containers"),
        (b"[[],[],[]]", JsonBounds(64, 4, 100), None),
        (b"[1,2,3,4,5,6,7,8,9]", JsonBounds(64, 100, 9), "max_json_values"),
        (b"[1,2,3,4,5,6,7,8]", JsonBounds(64, 100, 9), None),
        # Within bounds once strings are left out: the slow path says yes.
        (b'["[[[[[", ",,,,,,,,,,,,", "{{{{"]', JsonBounds(2, 2, 5), None),
        # Many strings: refused before they are stripped.
        (b"[" + b'"a",' * 30 + b'"a"]', JsonBounds(64, 100, 10), "max_json_values"),
        # The shape of the bomb from issue 9, smaller.
        (
            b'{"model":"gpt-4o","x":[' + b"[]," * 2000 + b"[]]}",
            JsonBounds(64, 1000, 10**6),
            "max_json_containers",
        ),
        (b"[" * 100_000 + b"]" * 100_000, WIDE, "max_json_depth"),
    ],
)
def test_check_shape(body: bytes, bounds: JsonBounds, setting: str | None) -> None:
    assert refused(body, bounds) == setting


@pytest.mark.parametrize(
    ("body", "bounds"),
    [
        # Bounds that the structural characters alone exceed: the slow path.
        (b"[]][[][]", JsonBounds(3, 100, 100)),  # closes what is not open
        (b"[" * 14, JsonBounds(10, 100, 100)),  # nothing ever closes
        (b'{"a": "not closed, [[[', JsonBounds(64, 100, 1)),
    ],
)
def test_mismatched_brackets_or_quotes_are_invalid(
    body: bytes, bounds: JsonBounds
) -> None:
    with pytest.raises(InvalidJson):
        check_shape(body, bounds)


def truth(value: Any) -> Shape:
    """What json.loads built: depth, containers and values (elements and
    members, plus the value itself)."""
    if isinstance(value, dict):
        children = list(value.values())
    elif isinstance(value, list):
        children = value
    else:
        return Shape(0, 0, 1)
    shapes = [truth(child) for child in children]
    return Shape(
        1 + max((s.depth for s in shapes), default=0),
        1 + sum(s.containers for s in shapes),
        1 + sum(s.values for s in shapes),
    )


TRICKY = st.sampled_from([*'"\\[]{},:/ \n\t', "\u00e9", "\u2028", "\U0001f600"])
TEXT = st.text(st.characters(codec="utf-8") | TRICKY, max_size=12)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT
)
VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(TEXT, children, max_size=6)
    ),
    max_leaves=60,
)
ENCODINGS = st.sampled_from(
    [
        {"ensure_ascii": True},
        {"ensure_ascii": False},
        {"indent": 1},
        {"separators": (",", ":")},
    ]
)


@PROPERTY
@given(VALUES, ENCODINGS)
def test_measure_never_counts_less_than_json_builds(
    value: Any, encoding: dict[str, Any]
) -> None:
    body = json.dumps(value, **encoding).encode()
    built = truth(json.loads(body))
    shape = measure(body)
    assert shape.depth == built.depth
    assert shape.containers == built.containers
    assert shape.values >= built.values


@PROPERTY
@given(
    VALUES,
    st.integers(1, 8),
    st.integers(1, 30),
    st.integers(1, 80),
)
def test_check_shape_refuses_exactly_what_measure_exceeds(
    value: Any, depth: int, containers: int, values: int
) -> None:
    body = json.dumps(value).encode()
    shape = measure(body)
    bounds = JsonBounds(depth, containers, values)
    exceeds = (
        shape.depth > depth or shape.containers > containers or shape.values > values
    )
    assert (refused(body, bounds) is not None) == exceeds

"""Bound the structure of a JSON body before anything parses it.

json.loads builds every array, object and value of a body at once: a 30 MB
body of empty arrays costs about 780 MB and seconds of CPU, and a deep one
exhausts the recursion limit. `check_shape` measures depth, containers and
values with bytes methods that run at C speed, so that a body beyond the
bounds is refused (400 body_too_complex) without being parsed.

How, without a tokenizer in Python:
- fast path: count the structural characters anywhere, strings included.
  Those counts can only over-count, so a body within the bounds by them is
  within the bounds (most bodies: a base64 image has no brackets at all);
- otherwise, find the skeleton outside strings: remove escapes that could
  hide a quote (`\\\\`, then `\\"`), keep only `"[]{},`, drop `""` pairs
  (an empty string, or the gap between two strings: the outside is
  unchanged), then split on quotes, tracking parity across fixed windows;
- count containers and commas in the skeleton; the depth is how many
  rounds of deleting `[]` (objects written as arrays, commas gone) it takes
  to reach nothing. A round that deletes nothing means brackets that do not
  match: invalid JSON.

Values are counted as commas + containers + 1: every array element and
object member plus the top-level value, with each empty container counted
as one value too. It never counts fewer than the values json.loads builds.
Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from azproxy.errors import BadRequest, InvalidJson

__all__ = ["JsonBounds", "Shape", "check_shape", "measure"]

_ALL_BYTES = bytes(range(256))
# translate(None, these) keeps only the structural characters (and the
# backslash, whose presence decides whether escapes need removing).
_NOT_MARKS = _ALL_BYTES.translate(None, b'"[]{},\\')
_NOT_SKELETON = _ALL_BYTES.translate(None, b'"[]{},')
_OBJECTS_AS_ARRAYS = bytes.maketrans(b"{}", b"[]")
# Strings are stripped this many bytes at a time: each window's split()
# makes a list of pieces, which must stay small.
WINDOW = 64 * 1024
_UNBOUNDED = 1 << 62


@dataclass(frozen=True, slots=True)
class JsonBounds:
    depth: int
    containers: int
    values: int


@dataclass(frozen=True, slots=True)
class Shape:
    """What a JSON body would build: an upper bound for each count."""

    depth: int
    containers: int
    values: int


def check_shape(body: bytes, bounds: JsonBounds) -> None:
    """Raise BadRequest (body_too_complex) when the body would build more
    than `bounds` allows, InvalidJson when it cannot be JSON."""
    marks = body.translate(None, _NOT_MARKS)
    opens = marks.count(b"[") + marks.count(b"{")
    if (
        opens <= bounds.depth
        and opens <= bounds.containers
        and marks.count(b",") + opens < bounds.values
    ):
        return
    skeleton = _skeleton(body, marks, max_strings=2 * bounds.values)
    if skeleton is None:
        # More strings than twice the values bound: in JSON each string is a
        # value or a key, and there are no more keys than values.
        raise _too_complex(f"more than {bounds.values} values", "max_json_values")
    containers = skeleton.count(b"[") + skeleton.count(b"{")
    if containers > bounds.containers:
        raise _too_complex(
            f"more than {bounds.containers} arrays and objects",
            "max_json_containers",
        )
    if skeleton.count(b",") + containers + 1 > bounds.values:
        raise _too_complex(f"more than {bounds.values} values", "max_json_values")
    if _depth(skeleton, bounds.depth) is None:
        raise _too_complex(
            f"arrays and objects nested more than {bounds.depth} deep",
            "max_json_depth",
        )


def measure(body: bytes) -> Shape:
    """The counts check_shape compares with the bounds (for tests and tools)."""
    skeleton = _skeleton(body, body.translate(None, _NOT_MARKS), max_strings=_UNBOUNDED)
    assert skeleton is not None
    containers = skeleton.count(b"[") + skeleton.count(b"{")
    depth = _depth(skeleton, _UNBOUNDED)
    assert depth is not None
    return Shape(depth, containers, skeleton.count(b",") + containers + 1)


def _too_complex(what: str, setting: str) -> BadRequest:
    return BadRequest(
        f"The JSON body has {what}, more than azproxy accepts "
        f"(raise {setting} to accept it).",
        code="body_too_complex",
    )


def _skeleton(body: bytes, marks: bytes, *, max_strings: int) -> bytes | None:
    """`[]{},` outside strings, in order; None past max_strings strings."""
    # find(), not `in`: see send.py's Reply.
    if marks.find(b"\\") >= 0 and body.find(b'\\"') >= 0:
        # Some quote may be escaped. Escapes occur only inside strings, and
        # deleting `\\` pairs first leaves exactly the backslashes that
        # escape the next character.
        marks = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    marks = marks.translate(None, _NOT_SKELETON).replace(b'""', b"")
    quotes = marks.count(b'"')
    if quotes % 2:
        raise InvalidJson("a string is not closed")
    if quotes // 2 > max_strings:
        return None
    if not quotes:
        return marks
    outside: list[bytes] = []
    inside = False
    for start in range(0, len(marks), WINDOW):
        parts = marks[start : start + WINDOW].split(b'"')
        outside.append(b"".join(parts[1::2] if inside else parts[0::2]))
        if len(parts) % 2 == 0:  # an odd number of quotes in this window
            inside = not inside
    return b"".join(outside)


def _depth(skeleton: bytes, limit: int) -> int | None:
    """How deep the brackets nest; None when deeper than `limit`. Each round
    costs one pass over what is left, and there are at most `limit` rounds."""
    brackets = skeleton.translate(_OBJECTS_AS_ARRAYS, b",")
    depth = 0
    while brackets:
        shorter = brackets.replace(b"[]", b"")
        if len(shorter) == len(brackets):
            raise InvalidJson("brackets do not match")
        depth += 1
        if shorter and depth == limit:
            return None
        brackets = shorter
    return depth

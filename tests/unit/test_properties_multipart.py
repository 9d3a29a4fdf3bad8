"""Properties of the multipart `model` finder, for any body in any pieces.

Well-formed bodies (RFC 2046 §5.1.1, RFC 7578) are generated part by part,
so the model field and its offsets are known; arbitrary bytes stand for a
hostile client. Fed in any pieces, the scanner ends as it does fed whole,
and the only error it raises is BadRequest (a 400).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from azproxy.errors import BadRequest
from azproxy.relay.multipart import MultipartScanner

# RFC 2046 bchars: a boundary is 1-70 of these, not ending in a space.
BCHARS = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'()+_,-./:=? "
boundaries = (
    st.text(BCHARS, min_size=1, max_size=70)
    .map(str.encode)
    .filter(lambda b: not b.endswith(b" "))
)
DISPOSITION = ["Content-Disposition", "content-disposition", "CONTENT-DISPOSITION"]
PADDING = [b"", b" ", b"\t", b" \t  "]  # transport padding after a delimiter


@dataclass(frozen=True)
class Outcome:
    """How a scan ended: refused, or what it found."""

    refused: bool
    model: str | None = None
    model_at: tuple[int, int] | None = None
    first_part_at: int | None = None


def scan(boundary: bytes, pieces: list[bytes]) -> tuple[Outcome, bool]:
    """Feed the pieces in turn: the outcome, and whether the closing
    delimiter was seen."""
    scanner = MultipartScanner(boundary)
    # No warning may escape either (the test run makes warnings errors):
    # aiohttp's warnings about a Content-Disposition are the scanner's to act on.
    try:
        for piece in pieces:
            scanner.feed(piece)
    except BadRequest:
        return Outcome(refused=True), False
    found = Outcome(False, scanner.model, scanner.model_at, scanner.first_part_at)
    return found, scanner.finished


def splits(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


NAMES = ["note", "file", "model"]
# Model names, and values that look like the syntax around them.
model_values = st.text(max_size=40) | st.text(' \t\r\n-"=;:Bbé0', max_size=12)


@st.composite
def part(draw: st.DrawFn, kind: str) -> tuple[bytes, bytes]:
    """(headers, content) of a `model` field, another field or a file."""
    name = {"model": "model", "field": draw(st.sampled_from(["language", "n"]))}.get(
        kind,
        draw(st.sampled_from(["file", "model"])),  # a file named model too
    )
    disposition = f'form-data; name="{name}"'
    if kind == "file":
        disposition += '; filename="a.wav"'
    lines = [f"{draw(st.sampled_from(DISPOSITION))}: {disposition}"]
    if draw(st.booleans()):
        lines.insert(draw(st.integers(0, 1)), "Content-Type: text/plain")
    headers = "\r\n".join(lines).encode() + b"\r\n\r\n"
    if kind == "model":
        content = draw(model_values).encode()
    else:
        content = draw(st.binary(max_size=60) | st.just(b"\r\n--"))
    return headers, content


@st.composite
def ambiguous_headers(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """(headers, content) of a part that azproxy and another parser may read
    differently: one of them sees a `model` field in it."""
    disposition = draw(st.sampled_from(DISPOSITION))
    other = f'{disposition}: form-data; name="{draw(st.sampled_from(NAMES))}"'
    model = f'{disposition}: form-data; name="model"'
    fold, bare = draw(st.sampled_from(" \t")), draw(st.sampled_from("\n\r"))
    name_star = draw(st.sampled_from(["bogus''%6dodel", "utf-8''%ff", "model"]))
    lines = draw(
        st.sampled_from(
            [
                # Two Content-Disposition lines, in either order.
                [other, model],
                [model, other],
                # A folded line (obs-fold) that unfolds into a second name.
                [other, f'{fold}; name="model"'],
                # A bare LF or CR, which ends a line for a lenient parser.
                [f"Content-Type: text/plain{bare}{model}"],
                # A name* aiohttp skips (unknown charset, bad escape, not
                # RFC 5987): a parser that decodes it may read `model`.
                [f"{other}; name*={name_star}"],
            ]
        )
    )
    if draw(st.booleans()):
        lines.insert(draw(st.integers(0, len(lines))), "X-Extra: 1")
    return "\r\n".join(lines).encode() + b"\r\n\r\n", b"gpt-4o"


@st.composite
def bodies(
    draw: st.DrawFn, ambiguous: bool = False
) -> tuple[bytes, bytes, bytes | None, int]:
    """(boundary, body, the model value or None, first delimiter's offset);
    with `ambiguous`, one part has headers that parsers read differently."""
    boundary = draw(boundaries)
    kinds = draw(st.lists(st.sampled_from(["field", "file"]), max_size=4))
    if draw(st.booleans()):
        kinds.insert(draw(st.integers(0, len(kinds))), "model")
    if ambiguous:
        kinds.insert(draw(st.integers(0, len(kinds))), "ambiguous")
    preamble = draw(st.binary(max_size=20))
    body = preamble + b"\r\n" if preamble else b""
    first_part_at = len(body)
    model = None
    for kind in kinds:
        headers, content = draw(
            ambiguous_headers() if kind == "ambiguous" else part(kind)
        )
        body += b"--" + boundary + draw(st.sampled_from(PADDING)) + b"\r\n" + headers
        if kind == "model":
            model = content
        body += content + b"\r\n"
    body += b"--" + boundary + b"--" + draw(st.binary(max_size=20))
    # Content may not hold the delimiter by chance: a client picks a boundary
    # that its content does not contain.
    assume((b"\r\n" + body).count(b"\r\n--" + boundary) == len(kinds) + 1)
    return boundary, body, model, first_part_at


@settings(max_examples=200)
@given(form=bodies(), cuts=st.lists(st.integers(min_value=0), max_size=10))
def test_the_model_field_is_found_at_its_offsets_in_any_pieces(
    form: tuple[bytes, bytes, bytes | None, int], cuts: list[int]
) -> None:
    boundary, body, model, first_part_at = form
    outcome, finished = scan(boundary, splits(body, cuts))
    assert not outcome.refused
    assert outcome.first_part_at == first_part_at  # where a model field can go
    if model is None:
        assert (outcome.model, outcome.model_at, finished) == (None, None, True)
        return
    assert outcome.model == model.decode()
    assert outcome.model_at is not None
    start, end = outcome.model_at
    assert body[start:end] == model  # a splice there replaces exactly the value


@settings(max_examples=200)
@given(
    form=bodies(ambiguous=True), cuts=st.lists(st.integers(min_value=0), max_size=10)
)
def test_a_part_parsers_may_read_differently_is_refused_in_any_pieces(
    form: tuple[bytes, bytes, bytes | None, int], cuts: list[int]
) -> None:
    boundary, body, _, _ = form
    assert scan(boundary, splits(body, cuts)) == (Outcome(refused=True), False)


# Arbitrary bodies: the syntax's own pieces, mixed with random bytes.
FRAGMENTS = [
    b"--",
    b"\r\n",
    b"\r\n\r\n",
    b"--B\r\n",
    b"\r\n--B\r\n",
    b"\r\n--B",
    b"\r\n--B--",
    b" ",
    b'Content-Disposition: form-data; name="model"\r\n\r\n',
    b'Content-Disposition: form-data; name="model"',
    b"Content-Disposition: form-data; name=model; filename=x\r\n\r\n",
    b"Content-Disposition: ;;=;\"'\r\n\r\n",
    b"content-disposition: form-data; name*=bogus''%ff\r\n\r\n",
    b'\r\nContent-Disposition: form-data; name="model"',
    b'\r\n ; name="model"',
    b"\n",
    b"\r",
    b"gpt-4o",
    b"\xff\xfe\x80",
]
garbage = st.lists(
    st.sampled_from(FRAGMENTS) | st.sampled_from(FRAGMENTS) | st.binary(max_size=8),
    max_size=40,
).map(b"".join)


@settings(max_examples=300)
@given(data=garbage, cuts=st.lists(st.integers(min_value=0), max_size=10))
def test_any_bytes_are_refused_with_a_400_or_scanned_alike_in_any_pieces(
    data: bytes, cuts: list[int]
) -> None:
    boundary = b"B"
    whole = scan(boundary, [data])
    assert scan(boundary, splits(data, cuts)) == whole
    assert scan(boundary, [data[i : i + 1] for i in range(len(data))]) == whole


@settings(max_examples=100)
@given(
    form=bodies(),
    at=st.integers(min_value=0),
    junk=st.binary(min_size=1, max_size=8) | st.sampled_from(FRAGMENTS),
    cuts=st.lists(st.integers(min_value=0), max_size=10),
)
def test_a_damaged_body_is_refused_with_a_400_or_scanned_alike_in_any_pieces(
    form: tuple[bytes, bytes, bytes | None, int],
    at: int,
    junk: bytes,
    cuts: list[int],
) -> None:
    boundary, body, _, _ = form
    at %= len(body) + 1
    data = body[:at] + junk.replace(b"B", boundary) + body[at:]
    assert scan(boundary, splits(data, cuts)) == scan(boundary, [data])

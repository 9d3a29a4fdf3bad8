"""The multipart scanner finds the model field in any part order and at any
split of the body, keeping the offsets exact for a splice."""

from __future__ import annotations

import pytest

from azproxy.errors import BadRequest
from azproxy.relay.multipart import (
    MAX_HEADER_BYTES,
    MAX_PADDING_BYTES,
    MultipartScanner,
    boundary_of,
    model_part,
)
from azproxy.relay.splice import Splice

BOUNDARY = b"b0undary-XyZ"
AUDIO = bytes(range(256)) * 40 + b"\r\n--b0undar" + b"\r\n-" + b"end"


def field(name: str, value: bytes) -> bytes:
    return (
        b"--" + BOUNDARY + b"\r\n"
        b'Content-Disposition: form-data; name="'
        + name.encode()
        + b'"\r\n\r\n'
        + value
        + b"\r\n"
    )


def file_part(name: str = "file", data: bytes = AUDIO) -> bytes:
    return (
        b"--" + BOUNDARY + b"\r\n"
        b'Content-Disposition: form-data; name="' + name.encode() + b'"; '
        b'filename="model.wav"\r\nContent-Type: audio/wav\r\n\r\n' + data + b"\r\n"
    )


def body(*parts: bytes, preamble: bytes = b"") -> bytes:
    return preamble + b"".join(parts) + b"--" + BOUNDARY + b"--\r\n"


FIELDS_FIRST = body(field("model", b"whisper-1"), field("language", b"en"), file_part())
FILE_FIRST = body(file_part(), field("language", b"en"), field("model", b"whisper-1"))
WITH_PREAMBLE = body(
    file_part(), field("model", b"whisper-1"), preamble=b"ignored preamble\r\n"
)


def scan(data: bytes, *pieces: int) -> MultipartScanner:
    scanner = MultipartScanner(BOUNDARY)
    start = 0
    for end in [*pieces, len(data)]:
        scanner.feed(data[start:end])
        start = end
    return scanner


@pytest.mark.parametrize("data", [FIELDS_FIRST, FILE_FIRST, WITH_PREAMBLE])
def test_model_found_at_every_split_point(data: bytes) -> None:
    for split in range(len(data) + 1):
        scanner = scan(data, split)
        assert scanner.model == "whisper-1", split
        assert scanner.model_at is not None
        start, end = scanner.model_at
        assert data[start:end] == b"whisper-1"
        assert data[scanner.first_part_at or 0 :].startswith(b"--" + BOUNDARY)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 1000])
def test_model_found_when_fed_in_small_pieces(size: int) -> None:
    for data in (FIELDS_FIRST, FILE_FIRST, WITH_PREAMBLE):
        scanner = scan(data, *range(size, len(data), size))
        assert scanner.model == "whisper-1"


def test_the_scan_goes_on_after_the_model_keeping_little() -> None:
    scanner = MultipartScanner(BOUNDARY)
    head = FIELDS_FIRST.index(b"whisper-1") + len(b"whisper-1\r\n--") + len(BOUNDARY)
    scanner.feed(FIELDS_FIRST[:head])
    assert scanner.model == "whisper-1" and not scanner.finished
    scanner.feed(FIELDS_FIRST[head:-30])
    assert len(scanner._buf) < 100
    scanner.feed(FIELDS_FIRST[-30:])
    assert scanner.model == "whisper-1" and scanner.finished


def test_file_bytes_are_not_kept_while_scanning() -> None:
    scanner = MultipartScanner(BOUNDARY)
    scanner.feed(file_part(data=b"x" * 1_000_000)[:-2])
    assert len(scanner._buf) < 100
    assert scanner.model is None and not scanner.finished


def test_a_file_named_model_is_not_the_model_field() -> None:
    data = body(file_part(name="model"), field("prompt", b"p"))
    scanner = scan(data)
    assert scanner.model is None
    assert scanner.finished


def test_no_model_field_reports_where_to_add_one() -> None:
    data = body(file_part(), preamble=b"pre\r\n")
    scanner = scan(data)
    assert scanner.model is None and scanner.finished
    at = scanner.first_part_at
    assert at == len(b"pre\r\n")
    splice = Splice(at, at, model_part(BOUNDARY, "dep"))
    spliced = data[:at] + splice.data + data[at:]
    assert spliced == body(field("model", b"dep"), file_part(), preamble=b"pre\r\n")
    assert len(spliced) == len(data) + splice.growth


def test_splicing_a_new_model_value_gives_a_valid_body() -> None:
    scanner = scan(FILE_FIRST)
    assert scanner.model_at is not None
    start, end = scanner.model_at
    splice = Splice(start, end, b"my-whisper")
    spliced = FILE_FIRST[:start] + splice.data + FILE_FIRST[end:]
    assert spliced == body(
        file_part(), field("language", b"en"), field("model", b"my-whisper")
    )
    assert len(spliced) == len(FILE_FIRST) + splice.growth


def test_empty_model_value() -> None:
    scanner = scan(body(field("model", b""), file_part()))
    assert scanner.model == ""


@pytest.mark.parametrize(
    "data",
    [
        body(field("model", b"m" * 2000)),
        body(field("model", b"\xff\xfe")),
        b"--" + BOUNDARY + b"garbage\r\n",
        b"--" + BOUNDARY + b"\r\n" + b"X-Header: y" * 2000,
    ],
)
def test_malformed_bodies_are_400(data: bytes) -> None:
    with pytest.raises(BadRequest):
        scan(data)


@pytest.mark.parametrize(
    ("content_type", "boundary"),
    [
        ("multipart/form-data; boundary=abc", b"abc"),
        ('multipart/form-data; boundary="a b:c"', b"a b:c"),
        ("Multipart/Form-Data;charset=utf-8; BOUNDARY=x-1", b"x-1"),
        ("multipart/form-data", None),
        ("multipart/form-data; boundary=", None),
        ("multipart/mixed; boundary=abc", None),
        ("application/json", None),
        ("multipart/form-data; boundary=" + "a" * 71, None),
    ],
)
def test_boundary_of(content_type: str, boundary: bytes | None) -> None:
    assert boundary_of(content_type) == boundary


def _verdict(body: bytes, cuts: tuple[int, ...]) -> str:
    scanner = MultipartScanner(b"xyz")
    pieces = [body[a:b] for a, b in zip((0, *cuts), (*cuts, len(body)), strict=True)]
    try:
        for piece in pieces:
            scanner.feed(piece)
    except BadRequest as exc:
        return exc.message
    return f"model={scanner.model}"


@pytest.mark.parametrize(
    ("head", "limit"),
    [
        # Header block exactly at the bound, then one byte over it.
        (b'Content-Disposition: form-data; name="model"\r\nX-Pad: ', MAX_HEADER_BYTES),
        # Transport padding after the delimiter, at the bound and over it.
        (None, MAX_PADDING_BYTES),
    ],
)
@pytest.mark.parametrize("over", [0, 1])
def test_size_bounds_do_not_depend_on_where_the_body_is_split(
    head: bytes | None, limit: int, over: int
) -> None:
    if head is None:
        body = (
            b"--xyz" + b" " * (limit + over) + b"\r\nContent-Disposition: form-data; "
            b'name="model"\r\n\r\ngpt-4o\r\n--xyz--\r\n'
        )
    else:
        pad = limit + over - len(head)
        body = b"--xyz\r\n" + head + b"a" * pad + b"\r\n\r\ngpt-4o\r\n--xyz--\r\n"
    whole = _verdict(body, ())
    assert whole == ("model=gpt-4o" if not over else whole)
    assert (whole == "model=gpt-4o") == (not over)
    # Every cut near the start and around where the bound is crossed, and a
    # sample of the rest (every cut of a 16 KiB header block takes seconds).
    end = len(b"--xyz\r\n") + limit + over
    cuts = {*range(1, 48), *range(end - 48, end + 48), *range(1, len(body), 101)}
    for cut in sorted(c for c in cuts if 0 < c < len(body)):
        assert _verdict(body, (cut,)) == whole, cut


def test_name_star_is_read_as_the_model_field() -> None:
    scanner = MultipartScanner(b"xyz")
    scanner.feed(
        b"--xyz\r\nContent-Disposition: form-data; name*=utf-8''model\r\n\r\n"
        b"gpt-4o\r\n--xyz--\r\n"
    )
    assert scanner.model == "gpt-4o"


def test_an_unreadable_content_disposition_is_refused_not_guessed() -> None:
    # Another parser might take the first name and see a model here.
    scanner = MultipartScanner(b"xyz")
    with pytest.raises(BadRequest, match="malformed Content-Disposition"):
        scanner.feed(
            b'--xyz\r\nContent-Disposition: form-data; name="model"; name="x"'
            b"\r\n\r\ngpt-4o\r\n--xyz--\r\n"
        )


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        # The second Content-Disposition names the model: some parsers take
        # the last one.
        (
            b'Content-Disposition: form-data; name="note"\r\n'
            b'Content-Disposition: form-data; name="model"',
            "two Content-Disposition headers",
        ),
        # obs-fold: a parser that unfolds it reads a second name parameter.
        (
            b'Content-Disposition: form-data; name="note"\r\n ; name="model"',
            "folded or broken header line",
        ),
        (
            b'Content-Disposition: form-data; name="note"\r\n\t; name="model"',
            "folded or broken header line",
        ),
        # A bare LF ends a header line for lenient parsers.
        (
            b'Content-Type: text/plain\nContent-Disposition: form-data; name="model"',
            "folded or broken header line",
        ),
        (
            b'Content-Type: text/plain\rContent-Disposition: form-data; name="model"',
            "folded or broken header line",
        ),
        # aiohttp skips a name* it cannot decode and warns: the other name
        # would then win here, where another parser may read name* instead.
        (
            b"Content-Disposition: form-data; name=\"note\"; name*=bogus''%6dodel",
            "malformed Content-Disposition",
        ),
        (
            b"Content-Disposition: form-data; name=\"note\"; name*=utf-8''%ff",
            "malformed Content-Disposition",
        ),
    ],
)
def test_headers_other_parsers_may_read_as_a_model_field_are_refused(
    headers: bytes, message: str
) -> None:
    data = b"--xyz\r\n" + headers + b"\r\n\r\ngpt-4o\r\n--xyz--\r\n"
    for cut in range(len(data) + 1):
        scanner = MultipartScanner(b"xyz")
        with pytest.raises(BadRequest, match=message):
            scanner.feed(data[:cut])
            scanner.feed(data[cut:])


def test_other_header_lines_beside_the_disposition_are_read_alike() -> None:
    data = (
        b"--xyz\r\nContent-Type: text/plain\r\nX-Extra: a b\r\n"
        b'content-disposition: form-data; name="model"\r\n\r\ngpt-4o\r\n--xyz--\r\n'
    )
    scanner = MultipartScanner(b"xyz")
    scanner.feed(data)
    assert scanner.model == "gpt-4o" and scanner.finished


def test_an_empty_parameter_is_read_as_before() -> None:
    # aiohttp warns about `;;` and a trailing `;`, but no parser reads a name
    # in them: refusing them would only fail clients that send them.
    scanner = MultipartScanner(b"xyz")
    scanner.feed(
        b'--xyz\r\nContent-Disposition: form-data;; name="model";\r\n\r\n'
        b"gpt-4o\r\n--xyz--\r\n"
    )
    assert scanner.model == "gpt-4o" and scanner.finished

"""Find the `model` field of a multipart/form-data body as it streams past.

Pure and incremental: `MultipartScanner.feed()` takes the body in whatever
pieces the network delivers and keeps only a small window of it (the last
few bytes, where a delimiter may be split, plus the current part's headers
or the model's value). The body itself is never changed or re-encoded: the
relay forwards the client's bytes, and at most splices a new model value in
at the offsets the scanner reports (RFC 7578, RFC 2046 §5.1.1 for the syntax).

The scan goes on after the model field, to the end of the body: a second
`model` field is refused (400 ambiguous_model) rather than leaving Azure to
pick one that azproxy did not check.
"""

from __future__ import annotations

import warnings

from aiohttp.multipart import BadContentDispositionParam, parse_content_disposition

from azproxy.errors import BadRequest

__all__ = ["MultipartScanner", "boundary_of", "model_part"]

MAX_HEADER_BYTES = 16 * 1024
MAX_MODEL_BYTES = 1024
MAX_PADDING_BYTES = 256  # transport padding after a delimiter (RFC 2046)

_PREAMBLE, _AFTER_DELIMITER, _HEADERS, _BODY, _DONE = range(5)


def boundary_of(content_type: str) -> bytes | None:
    """The boundary of a multipart/form-data Content-Type, or None."""
    kind, _, params = content_type.partition(";")
    if kind.strip().lower() != "multipart/form-data":
        return None
    for param in params.split(";"):
        name, _, value = param.strip().partition("=")
        if name.strip().lower() == "boundary":
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            # RFC 2046: 1-70 characters, no control characters.
            if 0 < len(value) <= 70 and value.isprintable():
                return value.encode("latin-1", "replace")
    return None


def model_part(boundary: bytes, value: str) -> bytes:
    """A whole `model` form field, for a body that has none."""
    return (
        b"--" + boundary + b'\r\nContent-Disposition: form-data; name="model"'
        b"\r\n\r\n" + value.encode() + b"\r\n"
    )


class MultipartScanner:
    """Reads a multipart body in pieces, finding its `model` field.

    After each feed(), `model` is the field's value once its part has ended,
    `model_at` its (start, end) offsets in the body, and `finished` says
    the closing delimiter went past. `first_part_at` is where the first
    part's delimiter starts, where a missing field can be added. A second
    `model` field raises BadRequest (ambiguous_model) as soon as its part's
    headers have arrived.
    """

    def __init__(self, boundary: bytes) -> None:
        self.delimiter = b"\r\n--" + boundary
        # A virtual CRLF lets the first delimiter, at the very start of the
        # body, match like every other one.
        self._buf = bytearray(b"\r\n")
        self._base = -2  # the body offset of _buf[0]
        self._state = _PREAMBLE
        self._in_model = False
        self.model: str | None = None
        self.model_at: tuple[int, int] | None = None
        self.first_part_at: int | None = None
        self.finished = False

    def feed(self, data: bytes) -> None:
        if self.finished:
            return
        self._buf += data
        while self._step():
            pass

    def _drop(self, count: int) -> None:
        del self._buf[:count]
        self._base += count

    def _step(self) -> bool:
        """Advance by one syntactic element; False when more bytes are needed."""
        buf = self._buf
        if self._state in (_PREAMBLE, _BODY):
            found = buf.find(self.delimiter)
            if found < 0:
                if self._in_model:
                    if len(buf) > MAX_MODEL_BYTES + len(self.delimiter):
                        raise BadRequest(
                            "The 'model' form field is too long.", param="model"
                        )
                else:  # keep only what could be the start of a split delimiter
                    self._drop(max(0, len(buf) - len(self.delimiter) + 1))
                return False
            if self._in_model:
                self._found_model(bytes(buf[:found]))
                self._drop(found)
                return True
            if self._state == _PREAMBLE:
                self.first_part_at = self._base + found + 2  # after the CRLF
            self._drop(found + len(self.delimiter))
            self._state = _AFTER_DELIMITER
            return True
        if self._state == _AFTER_DELIMITER:
            if len(buf) < 2:
                return False
            if buf.startswith(b"--"):
                self.finished = True
                self._state = _DONE
                return False
            end = buf.find(b"\r\n")
            # The same bound whether the CRLF is here yet or not, so the
            # verdict does not depend on how the body was split.
            if end < 0 and len(buf) < MAX_PADDING_BYTES + 2:
                return False
            if end < 0 or end > MAX_PADDING_BYTES or buf[:end].strip(b" \t"):
                raise BadRequest("The multipart body is malformed.")
            self._drop(end + 2)
            self._state = _HEADERS
            return True
        if self._state == _HEADERS:
            if buf.startswith(b"\r\n"):
                headers, size = b"", 2
            else:
                end = buf.find(b"\r\n\r\n")
                # As for padding: one bound, however the body was split.
                if end > MAX_HEADER_BYTES or (
                    end < 0 and len(buf) >= MAX_HEADER_BYTES + 4
                ):
                    raise BadRequest("A multipart part has too large headers.")
                if end < 0:
                    return False
                headers, size = bytes(buf[:end]), end + 4
            self._in_model = _is_model_field(headers)
            if self._in_model and self.model_at is not None:
                raise BadRequest(
                    "The form has more than one 'model' field; send one.",
                    param="model",
                    code="ambiguous_model",
                )
            self._drop(size)
            self._state = _BODY
            return True
        return False

    def _found_model(self, value: bytes) -> None:
        if len(value) > MAX_MODEL_BYTES:
            raise BadRequest("The 'model' form field is too long.", param="model")
        try:
            self.model = value.decode()
        except UnicodeDecodeError:
            raise BadRequest(
                "The 'model' form field is not UTF-8 text.", param="model"
            ) from None
        self.model_at = (self._base, self._base + len(value))
        self._in_model = False


def _is_model_field(headers: bytes) -> bool:
    """Whether a part's headers say it is the plain `model` field (no file).

    Every header line is read, and anything that parsers read differently is
    refused rather than guessed at, since another parser might see `model`
    where azproxy does not: two Content-Disposition lines, a folded line
    (obs-fold, RFC 9112 §5.2), a CR or LF outside a CRLF, or a
    Content-Disposition aiohttp cannot read whole (a parameter given twice,
    a `name*` it cannot decode). `name*` (RFC 2231) is read like `name` for
    the same reason.
    """
    disposition: bytes | None = None
    for line in headers.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") or b"\r" in line or b"\n" in line:
            raise BadRequest("A multipart part has a folded or broken header line.")
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-disposition":
            if disposition is not None:
                raise BadRequest(
                    "A multipart part has two Content-Disposition headers."
                )
            disposition = value
    if disposition is None:
        return False
    kind, params = _content_disposition(disposition)
    return (
        kind == "form-data"
        and "model" in (params.get("name"), params.get("name*"))
        and "filename" not in params
        and "filename*" not in params
    )


def _content_disposition(value: bytes) -> tuple[str, dict[str, str]]:
    """aiohttp's reading of a Content-Disposition value; BadRequest if it
    could not read it or had to skip a parameter (it warns, and goes on)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kind, params = parse_content_disposition(value.decode("latin-1").strip())
    # aiohttp gives up on a header it cannot read (kind None), and skips a
    # parameter it cannot decode (a warning); it also warns about an empty
    # parameter (`;;`, a trailing `;`), which no parser reads as a name.
    skipped = any(issubclass(w.category, BadContentDispositionParam) for w in caught)
    if kind is None or skipped:
        raise BadRequest("A multipart part has a malformed Content-Disposition.")
    return kind, params

"""Multipart/form-data bodies built by hand, so tests control part order and
bytes exactly (an SDK decides both for itself)."""

from __future__ import annotations

BOUNDARY = "azproxy-test-boundary-7d3f"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
# Audio-like bytes that include CRLFs and a near-miss of the delimiter.
AUDIO = bytes(range(256)) * 64 + b"\r\n--azproxy-test-bound" + b"\r\n" * 3


def field(name: str, value: str) -> bytes:
    return (
        f"--{BOUNDARY}\r\n"
        f'Content-Disposition: form-data; name="{name}"\r\n\r\n'
        f"{value}\r\n"
    ).encode()


def file_part(
    data: bytes = AUDIO,
    *,
    name: str = "file",
    filename: str = "speech.wav",
    content_type: str = "audio/wav",
) -> bytes:
    head = (
        f"--{BOUNDARY}\r\n"
        f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n"
    ).encode()
    return head + data + b"\r\n"


def form(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def closing() -> bytes:
    return f"--{BOUNDARY}--\r\n".encode()


def parse_form(content_type: str, body: bytes) -> list[tuple[str, str | None, bytes]]:
    """The parts of a multipart/form-data body: (name, filename, bytes), in order."""
    from email.parser import BytesParser
    from email.policy import HTTP

    message = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    parts = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        filename = part.get_filename()
        payload = part.get_payload(decode=True)
        assert isinstance(name, str) and isinstance(payload, bytes)
        parts.append((name, filename, payload))
    return parts

"""Token usage, read from the end of an answer (where Azure puts `usage`)
without parsing the whole body; estimated for a stream that ended without it.

The estimate (APIM's habit: about 4 bytes of English text per token): the
prompt, the request body's bytes / 4; the completion, the bytes of text the
stream relayed / 4. The text is the string values of `content`, `text`,
`refusal` and `arguments` (tool calls) members. Counting them as each chunk
passes would cost every stream a regular expression per chunk, so they are
counted once, at the end, in the last bytes kept (UsageTail's window): the
share of text there, times all the bytes Azure sent. A stream's chunks are
alike, so the share holds; a stream shorter than the window is counted
whole. (When the client leaves, the relay stops reading: Azure's bytes are
what the client got, plus at most the slice in flight.)
"""

from __future__ import annotations

import re

__all__ = ["UsageTail", "estimate_tokens", "usage_of"]

# A `usage` object: {"prompt_tokens": .., ...}, possibly with one level of
# nested details.
_USAGE = re.compile(rb'"usage"\s*:\s*(\{[^{}]*(?:\{[^{}]*\}[^{}]*)*\})')
_USAGE_WINDOW = 4096
# Its top-level counts (details such as cached_tokens are nested deeper).
# At most 18 digits: int() of thousands would raise (a hostile upstream).
_COUNT = re.compile(
    rb'"(prompt|completion|total|input|output)_tokens"\s*:\s*(\d{1,18})\b'
)
_NESTED = re.compile(rb"\{[^{}]*\}")
# Streamed text: a delta's content, refusal or tool-call arguments (chat), a
# choice's text (completions); the string's bytes as sent, escapes included.
_TEXT = re.compile(
    rb'"(?:content|text|refusal|arguments)":[ ]?"([^"\\]*+(?:\\.[^"\\]*+)*+)"'
)
# About 4 bytes of English text or JSON per token (OpenAI's rule of thumb):
# the one estimate azproxy makes, for limits, the health board and usage.
BYTES_PER_TOKEN = 4


def estimate_tokens(size: int) -> int:
    """Tokens in `size` bytes of text, at BYTES_PER_TOKEN bytes each."""
    return -(-size // BYTES_PER_TOKEN)


def usage_of(tail: bytes) -> tuple[int, int, int] | None:
    """Token usage from the end of an answer (JSON or the last SSE events)."""
    # Only the last occurrence is parsed: no scan of the whole answer.
    start = tail.rfind(b'"usage"', max(len(tail) - _USAGE_WINDOW, 0))
    if start < 0:
        return None
    found = _USAGE.match(tail, start)
    if found is None:
        return None
    # Nested objects hold no top-level counts, so drop them before scanning.
    usage = found.group(1)
    flat = _NESTED.sub(b"", usage[1:-1]) if usage.find(b"{", 1) > 0 else usage
    # A name given twice counts its last value, as a JSON parser would.
    counts = dict(_COUNT.findall(flat))
    # Chat/completions name them prompt/completion; Responses input/output.
    # (A count is digits: b"0" is true, so `or` only skips a missing name.)
    prompt = int(counts.get(b"prompt") or counts.get(b"input") or 0)
    completion = int(counts.get(b"completion") or counts.get(b"output") or 0)
    total = counts.get(b"total")
    return prompt, completion, prompt + completion if total is None else int(total)


class UsageTail:
    """The last _USAGE_WINDOW bytes of an answer relayed piece by piece, SSE
    or not: where its usage is. It keeps the last pieces themselves (no copy
    per piece; they are dropped once the later ones cover the window), so a
    usage that arrived in the last piece, or split over several, is found."""

    __slots__ = ("_pieces", "_size", "_total")

    def __init__(self) -> None:
        self._pieces: list[bytes] = []
        self._size = 0
        self._total = 0  # every byte added, for estimate()

    def add(self, piece: bytes) -> None:
        self._pieces.append(piece)
        self._size += len(piece)
        self._total += len(piece)
        if self._size > 2 * _USAGE_WINDOW:
            self._trim()

    def _trim(self) -> None:
        """Keep only the last pieces that cover the window."""
        pieces = self._pieces
        if len(pieces[-1]) >= _USAGE_WINDOW:  # a large slice: the common case
            self._pieces, self._size = [pieces[-1]], len(pieces[-1])
            return
        size = 0
        for index in range(len(pieces) - 1, -1, -1):
            size += len(pieces[index])
            if size >= _USAGE_WINDOW:
                del pieces[:index]
                break
        self._size = size

    def usage(self) -> tuple[int, int, int] | None:
        return usage_of(b"".join(self._pieces))

    def estimate(self, prompt_bytes: int) -> tuple[int, int, int]:
        """Usage estimated for a prompt of `prompt_bytes` and the stream
        added so far: its text's share of the window, times every byte."""
        window = b"".join(self._pieces)
        text = sum(map(len, _TEXT.findall(window)))
        if text:  # the window is not empty
            text = text * self._total // len(window)
        prompt = estimate_tokens(prompt_bytes)
        completion = estimate_tokens(text)
        return prompt, completion, prompt + completion

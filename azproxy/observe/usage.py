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

# Where the usage is looked for: an answer's (or a stream's) last bytes.
_USAGE_WINDOW = 4096
# A `usage` object, {"prompt_tokens": .., ...} with at most one level of
# nested details, read in one match (a third of the cost of finding it, then
# its counts): each top-level count lands in its group, which holds the last
# value given, as a JSON parser keeps the last of a name given twice. Nested
# objects (cached_tokens, ...) are skipped whole; a quote that starts no
# count is passed alone, so a count is found wherever it starts. Atomic: a
# usage that never ends cannot backtrack (not `*+`, which raises SystemError
# with groups inside on Python 3.11: cpython#101955). At most 18 digits:
# int() of thousands would be slow (a hostile upstream), so a longer count
# is not read. Groups: chat/completions' prompt, completion, total; the
# Responses API's input, output.
_COUNT = rb'_tokens"\s*:\s*(\d{1,18})\b'
_USAGE = re.compile(
    rb'"usage"\s*:\s*\{(?>(?:[^{}"]++|"(?:'
    + rb"|".join(
        name + _COUNT
        for name in (b"prompt", b"completion", b"total", b"input", b"output")
    )
    + rb')|\{[^{}]*+\}|")*)\}'
)
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
    size = len(tail)  # (a conditional costs less than max())
    start = tail.rfind(b'"usage"', size - _USAGE_WINDOW if size > _USAGE_WINDOW else 0)
    if start < 0:
        return None
    found = _USAGE.match(tail, start)
    if found is None:
        return None
    prompt, completion, total, given_input, given_output = found.groups()
    # Chat/completions name them prompt/completion; Responses input/output.
    # (A count is digits: b"0" is true, so `or` only skips a missing name.)
    prompt_tokens = int(prompt or given_input or 0)
    completion_tokens = int(completion or given_output or 0)
    total_tokens = prompt_tokens + completion_tokens if total is None else int(total)
    return prompt_tokens, completion_tokens, total_tokens


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

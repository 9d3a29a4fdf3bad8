"""Azure chat and completion streams, made to look like OpenAI's (sse_compat).

Azure adds events OpenAI never sends, and strict OpenAI clients trip on them:
- a first event with `"choices": []` and `prompt_filter_results` (clients
  that read `choices[0]` fail on it);
- with the asynchronous content filter, annotation events whose choices have
  `content_filter_results`/`content_filter_offsets` but no `delta`, and whose
  `id` and `model` are empty.
In `openai` mode (the default) the normaliser drops exactly those events and
relays every other one byte for byte and in order: content, tool calls, the
finish event (a `finish_reason: "content_filter"` stop included), the usage
event a client asked for with `stream_options.include_usage` (`choices: []`
with `usage`, kept), and `[DONE]`. `raw` relays Azure's bytes untouched.

Cost: a chunk holding only whole events without either marker string is
passed on as it is, with no copy and no JSON parsing; only events that
contain a marker are parsed. A partial event is held until its blank line
arrives, never longer: a complete event is never delayed.
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from .keys import CONFIG

__all__ = ["NORMALISED_PATHS", "StreamNormaliser", "droppable", "normaliser_for"]

NORMALISED_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})
MARKERS = (b'"prompt_filter_results"', b'"content_filter_offsets"')
# The blank line ending an event, in each line-ending style SSE allows.
EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
EVENT_ENDINGS = (b"\n\n", b"\r\n\r\n", b"\r\r")


def normaliser_for(request: web.Request, sse: bool) -> StreamNormaliser | None:
    """A normaliser when this answer is a stream that sse_compat=openai tidies."""
    if (
        sse
        and request.path in NORMALISED_PATHS
        and request.app[CONFIG].sse_compat == "openai"
    ):
        return StreamNormaliser()
    return None


class StreamNormaliser:
    """Feed it the stream's chunks; it returns the bytes to relay now."""

    def __init__(self) -> None:
        self._held = b""  # the start of an event whose end has not arrived

    def feed(self, chunk: bytes) -> bytes:
        if (
            not self._held
            and chunk.endswith(EVENT_ENDINGS)
            and not any(marker in chunk for marker in MARKERS)
        ):
            return chunk  # whole events, nothing to drop: as they are
        data = self._held + chunk if self._held else chunk
        kept: list[bytes] = []
        start = 0
        dropped = False
        for end in EVENT_END.finditer(data):
            event = data[start : end.end()]
            if droppable(event):
                dropped = True
            else:
                kept.append(event)
            start = end.end()
        self._held = data[start:]
        if not dropped and not self._held:
            return data
        return b"".join(kept)

    def flush(self) -> bytes:
        """What is still held when the stream ends (an unterminated event)."""
        held, self._held = self._held, b""
        return held


def droppable(event: bytes) -> bool:
    """Whether one whole event is Azure-only: a prompt-filter-only or a
    delta-less annotation chunk. Parses JSON only when a marker is present."""
    if not any(marker in event for marker in MARKERS):
        return False
    document = _data(event)
    if not isinstance(document, dict):
        return False
    choices = document.get("choices")
    if not isinstance(choices, list):
        return False
    if not choices:
        return "prompt_filter_results" in document and not document.get("usage")
    return all(_annotation_only(choice) for choice in choices)


def _annotation_only(choice: Any) -> bool:
    return (
        isinstance(choice, dict)
        and "delta" not in choice
        and "text" not in choice  # a completions chunk carries text, not delta
        and choice.get("finish_reason") is None
        and ("content_filter_offsets" in choice or "content_filter_results" in choice)
    )


def _data(event: bytes) -> Any:
    """The event's `data` (its data lines joined), parsed as JSON, or None."""
    lines = []
    for line in event.splitlines():
        if line.startswith(b"data:"):
            value = line[5:]
            lines.append(value[1:] if value.startswith(b" ") else value)
    if not lines:
        return None
    try:
        return json.loads(b"\n".join(lines))
    except ValueError:
        return None

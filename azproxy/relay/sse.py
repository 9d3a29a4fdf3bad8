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
with `usage`, kept), and `[DONE]`. When azproxy asked for the usage itself
(stream_usage.py), that usage-only event is dropped too: the client gets the
stream it asked for, plus only the `"usage": null` Azure then adds to each
chunk. `raw` relays Azure's bytes untouched.

Cost: a chunk without either marker string (nor, when azproxy asked for
the usage, `"usage":{` or `"usage": {`) is passed on up to its
last event end in one piece (as it is, with no copy, when it ends there),
with no look at each event and no JSON parsing; only events that contain a
marker are parsed. A partial event is held until its blank line arrives, never
longer: a complete event is never delayed. An event larger than
MAX_HELD_BYTES is relayed raw (unfiltered) as it arrives, not held.
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from azproxy.keys import CONFIG

__all__ = [
    "EVENT_END",
    "EVENT_ENDINGS",
    "MAX_HELD_BYTES",
    "NORMALISED_PATHS",
    "StreamNormaliser",
    "droppable",
    "normaliser_for",
]

NORMALISED_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})
MARKERS = (b'"prompt_filter_results"', b'"content_filter_offsets"')
# A usage object, not the `"usage":null` of every other chunk, as JSON
# encoders write it: compact (Azure) or with Python's default separators
# (one search: about the cost of one `in`). A quote inside a JSON string is
# escaped, so only a key can match.
USAGE_OBJECT = re.compile(rb'"usage": ?\{')
_usage_in = USAGE_OBJECT.search  # bound once: it runs on every chunk
# The blank line ending an event, in each line-ending style SSE allows.
EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
EVENT_ENDINGS = (b"\n\n", b"\r\n\r\n", b"\r\r")
# Bytes before new data that may hold the start of a split event ending.
OVERLAP = 3
# The largest partial event held for filtering. Azure's extra events take a
# few KiB (more only for a completions call with hundreds of prompts); a
# larger event is passed on unfiltered rather than held. What a client that
# stops reading can pin here is about twice this.
MAX_HELD_BYTES = 256 * 1024


def normaliser_for(
    request: web.Request, sse: bool, *, drop_usage: bool = False
) -> StreamNormaliser | None:
    """A normaliser when this answer is a stream that sse_compat=openai tidies;
    `drop_usage` when azproxy asked for the usage event."""
    if (
        sse
        and request.path in NORMALISED_PATHS
        and request.app[CONFIG].sse_compat == "openai"
    ):
        return StreamNormaliser(drop_usage=drop_usage)
    return None


class StreamNormaliser:
    """Feed it the stream's chunks; it returns the bytes to relay now.

    A partial event is kept as the pieces it arrived in, and only new bytes
    (after the last OVERLAP held ones, for a split `\\r\\n\\r\\n`) are searched
    for its end: the cost is linear in the event's size. An event that grows
    past max_held bytes is passed on raw, unfiltered, as it arrives.
    """

    def __init__(
        self, max_held: int = MAX_HELD_BYTES, *, drop_usage: bool = False
    ) -> None:
        self._max_held = max_held
        self._drop_usage = drop_usage
        self._held: list[bytes] = []  # the start of an event still incomplete
        self._held_size = 0
        self._tail = b""  # the last bytes held or passed raw
        self._raw = False  # passing an oversized event through to its end

    def feed(self, chunk: bytes) -> bytes:
        if self._raw:
            return self._feed_raw(chunk)
        if not self._held:
            return self._events(chunk)
        cut = self._end_in(chunk)
        if cut is None:
            return self._hold(chunk)
        self._held.append(chunk[:cut])
        event = self.flush()
        rest = self._events(chunk[cut:]) if cut < len(chunk) else b""
        return rest if droppable(event, self._drop_usage) else event + rest

    @property
    def held_bytes(self) -> int:
        """Bytes held now, waiting for the end of their event."""
        return self._held_size

    def flush(self) -> bytes:
        """What is still held when the stream ends (an unterminated event)."""
        held = b"".join(self._held)
        self._held, self._held_size, self._tail = [], 0, b""
        return held

    def _end_in(self, chunk: bytes) -> int | None:
        """Where in `chunk` the current event ends (just after its blank line),
        searched where it is: an end that starts in the held tail (3 bytes)
        ends within 3 bytes of the chunk; any other one is in the chunk."""
        overlap = self._tail
        if overlap:
            end = EVENT_END.search(overlap + chunk[:OVERLAP])
            if end is not None and end.start() < len(overlap):
                return end.end() - len(overlap)
        end = EVENT_END.search(chunk)
        return None if end is None else end.end()

    def _events(self, data: bytes) -> bytes:
        """The whole events of `data` minus droppable ones; the rest is held."""
        # find(), not `in`: see send.py's Reply.
        if data.find(MARKERS[0]) < 0 and data.find(MARKERS[1]) < 0:
            if not self._drop_usage or _usage_in(data) is None:
                # Nothing to drop: the whole events go as they are, in one
                # piece, without looking at them one by one; a partial last
                # one is held.
                cut = _last_event_end(data)
                if cut == len(data):
                    return data
                if cut > 0:
                    return data[:cut] + self._hold(data[cut:])
            elif (split := self._around_usage(data)) is not None:
                return split
        kept: list[bytes] = []
        start = 0
        dropped = False
        for end in EVENT_END.finditer(data):
            event = data[start : end.end()]
            if droppable(event, self._drop_usage):
                dropped = True
            else:
                kept.append(event)
            start = end.end()
        if start == len(data):
            return b"".join(kept) if dropped else data
        whole = b"".join(kept) if dropped else data[:start]
        return whole + self._hold(data[start:])

    def _around_usage(self, data: bytes) -> bytes | None:
        """Data whose only marker is a usage object: the events before its
        event in one piece, that event judged alone, then the rest. None when
        where that event starts is not plain (the caller's slow way decides)."""
        usage = _usage_in(data)
        assert usage is not None  # the caller found it
        at = usage.start()
        start = _last_event_end(data, at)
        if start < 0:
            return None
        found = EVENT_END.search(data, at)
        if found is None:  # its event is not whole yet
            return data[:start] + self._hold(data[start:])
        end = found.end()
        if _usage_in(data, end) is not None:
            # More than one: the caller's single pass over every event
            # decides (going on from here would recurse once per usage
            # object, which a hostile upstream sends by the thousand).
            return None
        rest = self._events(data[end:]) if end < len(data) else b""
        if droppable(data[start:end], usage=True):
            return data[:start] + rest
        return data[:end] + rest

    def _hold(self, piece: bytes) -> bytes:
        """Hold a piece of an incomplete event; past the cap, let it all go raw."""
        self._held.append(piece)
        self._held_size += len(piece)
        self._tail = _last_bytes(self._tail, piece)
        if self._held_size <= self._max_held:
            return b""
        tail, held = self._tail, self.flush()
        self._raw, self._tail = True, tail
        return held

    def _feed_raw(self, chunk: bytes) -> bytes:
        """Relay an oversized event as it comes; after its end, normalise again."""
        cut = self._end_in(chunk)
        if cut is None:
            self._tail = _last_bytes(self._tail, chunk)
            return chunk
        self._raw, self._tail = False, b""
        return chunk if cut == len(chunk) else chunk[:cut] + self._events(chunk[cut:])


def _last_event_end(data: bytes, before: int | None = None) -> int:
    """Where the last whole event of `data` (of data[:before]) ends, just as
    EVENT_END.finditer would find it; -1 when no event ends in it, or when
    the last blank line follows another line end (then where it ends depends
    on the events before: let finditer decide)."""
    at, size = data.rfind(b"\n\n", 0, before), 2
    if data.find(b"\r") >= 0:  # find(), not `in`: see send.py's Reply
        for ending in (b"\r\n\r\n", b"\r\r"):
            found = data.rfind(ending, 0, before)
            if found >= 0 and found + len(ending) > at + size:
                at, size = found, len(ending)
    if at < 0 or (at and data[at - 1] in b"\r\n"):
        return -1
    return at + size


def _last_bytes(before: bytes, piece: bytes) -> bytes:
    """The last OVERLAP bytes of `before + piece`, without copying `piece`."""
    if len(piece) >= OVERLAP:
        return piece[-OVERLAP:]
    return (before + piece)[-OVERLAP:]


def droppable(event: bytes, usage: bool = False) -> bool:
    """Whether one whole event is Azure-only: a prompt-filter-only or a
    delta-less annotation chunk; with `usage` (azproxy asked for it), the
    usage-only chunk too. Parses JSON only when a marker is present."""
    marked = any(marker in event for marker in MARKERS)
    counted = usage and _usage_in(event) is not None
    if not marked and not counted:
        return False
    document = _data(event)
    if not isinstance(document, dict):
        return False
    choices = document.get("choices")
    if not isinstance(choices, list):
        return False
    if counted and not choices and isinstance(document.get("usage"), dict):
        return True
    if not marked:
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

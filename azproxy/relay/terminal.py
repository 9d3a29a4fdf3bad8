"""Whether a stream sent the event that ends it, so that a stream which stops
short ends with an explicit error rather than looking complete.

Each streaming family has its own last event:
- chat and completions: `data: [DONE]`;
- Responses: `response.completed`, `response.failed` or `response.incomplete`;
- Assistants runs (threads/runs, threads/{id}/runs and their
  submit_tool_outputs): `event: done`.

Cost per chunk: a search for a short literal in the chunk (plus a few bytes
carried from the previous one, for a marker split between chunks); no JSON
parsing. A marker counts only as a whole line: SSE lines end with CR or LF,
and inside a JSON string quotes and newlines are escaped, so text in a
content delta cannot pose as one. And it counts only once its event is
whole (the blank line after it has arrived).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from azproxy.errors import BadRequest
from azproxy.relay.jsonbody import read_object
from azproxy.relay.sse import EVENT_END

if TYPE_CHECKING:
    from azproxy.relay.jsonshape import JsonBounds
    from azproxy.relay.target import Outgoing

__all__ = ["StreamEnd", "Terminal", "asked_to_stream", "terminal_for"]


@dataclass(frozen=True, slots=True)
class Terminal:
    """How one family's last event looks."""

    name: str  # for messages: what was missing
    line: re.Pattern[bytes]  # the marker line, with the line ends around it
    probe: re.Pattern[bytes]  # what every marker contains: a cheap first look


DONE = Terminal(
    "data: [DONE]",
    re.compile(rb"[\r\n]data: ?\[DONE\][\r\n]"),
    re.compile(rb"\[DONE\]"),
)
RESPONSE_END = Terminal(
    "response.completed",
    re.compile(
        rb"[\r\n](?:event: ?response\.(?:completed|failed|incomplete)[\r\n]"
        rb'|data: ?\{"type": ?"response\.(?:completed|failed|incomplete)")'
    ),
    re.compile(rb"response\.(?:completed|failed|incomplete)"),
)
RUN_END = Terminal(
    "event: done", re.compile(rb"[\r\n]event: ?done[\r\n]"), re.compile(rb"done")
)
# More than the longest marker: a marker split between chunks is still found.
CARRY = 48
# From this size on, a chunk is searched where it is rather than copied after
# the carry: a copy costs about 25 ns per KiB, a second search about 300 ns.
IN_PLACE_FROM = 16 * 1024

BY_PATH = {"/v1/chat/completions": DONE, "/v1/completions": DONE}
# POST /v1/responses, and GET /v1/responses/{id}?stream=true (a resumed stream).
RESPONSES_PATH = re.compile(r"/v1/responses(?:/[^/]+)?")
RUNS_PATH = re.compile(
    r"/v1/threads/(?:runs|[^/]+/runs(?:/[^/]+/submit_tool_outputs)?)"
)
# Only a body naming "stream" with the value true is parsed to make sure.
STREAM_TRUE = re.compile(rb'"stream"\s*:\s*true')


def terminal_for(path: str) -> Terminal | None:
    """The last event of streams on this path, or None: not a known family."""
    found = BY_PATH.get(path)
    if found is not None:
        return found
    if RESPONSES_PATH.fullmatch(path):
        return RESPONSE_END
    if RUNS_PATH.fullmatch(path):
        return RUN_END
    return None


class StreamEnd:
    """Fed a stream's chunks in order; `complete` once its last event is whole."""

    __slots__ = ("_carry", "_in_last", "_terminal", "complete")

    def __init__(self, terminal: Terminal) -> None:
        self.complete = False
        self._terminal = terminal
        self._carry = b"\n"  # a stream starts at the start of a line
        self._in_last = False  # the marker is in; waiting for its blank line

    @property
    def missing(self) -> str:
        """The last event this stream has not sent (yet)."""
        return self._terminal.name

    def feed(self, chunk: bytes) -> None:
        if self.complete:
            return  # the stream is whole; nothing after it needs a look
        if (
            len(chunk) >= IN_PLACE_FROM
            and not self._in_last
            and not self._has_marker(chunk)
        ):
            self._carry = chunk[-CARRY:]
            return  # a large chunk without the marker is never copied
        # A large chunk with it (once per stream) is searched again below.
        window = self._carry + chunk
        if not self._in_last:
            terminal = self._terminal
            # The line pattern runs only where the cheap probe found something.
            found = terminal.probe.search(window) and terminal.line.search(window)
            if found is None:
                self._carry = window[-CARRY:]
                return
            self._in_last = True
            window = window[found.end() - 1 :]  # its line end may open the blank line
        if EVENT_END.search(window):
            self.complete = True
        else:
            self._carry = window[-3:]

    def _has_marker(self, chunk: bytes) -> bool:
        """Whether carry + chunk holds the marker, searched where it is: in
        the seam (any marker that starts in the carry), then in the chunk."""
        terminal = self._terminal
        probe, line = terminal.probe, terminal.line
        seam = self._carry + chunk[:CARRY]
        # The line pattern runs only where the cheap probe found something.
        if probe.search(seam) and line.search(seam):
            return True
        return bool(probe.search(chunk) and line.search(chunk))


def asked_to_stream(outgoing: Outgoing, bounds: JsonBounds) -> bool:
    """Whether the request said `"stream": true`. Parses the body only when
    it was not parsed already and names "stream" with the value true (a key
    of a nested object could), within the same bounds as every parse."""
    fields = outgoing.fields
    if fields is None:
        body = outgoing.body
        if (
            not outgoing.names_stream
            or not isinstance(body, bytes)
            or STREAM_TRUE.search(body) is None
        ):
            return False
        try:
            fields = read_object(body, bounds)
        except BadRequest:
            return False
    return fields.stream is True

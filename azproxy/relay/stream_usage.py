"""Asking Azure for the usage of a stream the client did not ask it for.

A chat or completions stream reports its tokens only when the request says
`"stream_options": {"include_usage": true}`: then Azure adds `"usage": null`
to every chunk and one last chunk, before `[DONE]`, with `"choices": []` and
the usage. When the client did not ask, azproxy asks for it with a byte
splice (every other byte reaches Azure as the client sent it), and the
normaliser (sse.py) takes that last chunk out of what the client receives.

- no `stream_options`: the member `"stream_options":{"include_usage":true}`
  is inserted first in the object;
- `stream_options` null, or an object whose `include_usage` is false, null
  or absent: its value is replaced by the same object with `include_usage`
  true (re-encoded: the object as json read it, so a key repeated inside it
  is written once; never a second `stream_options`);
- anything else (the client asked; a value Azure would refuse; two
  `stream_options` members) is left alone.

Only api-versions that accept `stream_options` get it (an older one answers
400 "Unknown parameter"): the v1 API; dated GA versions from 2024-10-21,
the first GA whose specification lists it (azure-rest-api-specs,
inference/stable/2024-10-21/inference.yaml); previews from
2024-09-01-preview (2024-08-01-preview declares the schema but no request
field takes it: azure-rest-api-specs issue #30810; Microsoft's answer on
Q&A 2007680 shows 2024-09-01-preview serving it). Pure: no I/O.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from azproxy.relay.splice import Splice

if TYPE_CHECKING:
    from azproxy.relay.families import Route
    from azproxy.relay.jsonbody import JsonObject

__all__ = [
    "FIRST_GA",
    "FIRST_PREVIEW",
    "USAGE_PATHS",
    "accepts_stream_options",
    "usage_splice",
]

# The OpenAI paths (after /v1/) whose streams report usage on request.
USAGE_PATHS = frozenset({"chat/completions", "completions"})
FIRST_GA = "2024-10-21"
FIRST_PREVIEW = "2024-09-01-preview"
_ASKED = b'{"include_usage":true}'


def accepts_stream_options(route: Route) -> bool:
    """Whether Azure accepts `stream_options` on this route."""
    if route.v1:
        return True
    version = route.version
    if version is None or len(version) < 10:
        return False
    # Dated versions compare as text: YYYY-MM-DD, then -preview or nothing.
    if version.endswith("-preview"):
        return version[:10] >= FIRST_PREVIEW[:10]
    return len(version) == 10 and version >= FIRST_GA


def usage_splice(fields: JsonObject) -> Splice | None:
    """The splice that asks for a stream's usage, or None: not a stream, the
    client asked already, or a `stream_options` azproxy leaves alone."""
    if fields.stream is not True or fields.stream_options_twice:
        return None
    where = fields.stream_options_at
    if where is None:
        return fields.insert_member("stream_options", _ASKED)
    options = fields.stream_options
    if options is None:
        return Splice(*where, _ASKED)
    if not isinstance(options, dict):
        return None
    if "include_usage" not in options:
        # Its own bytes stay as they are: the member goes in after its "{".
        start = where[0] + 1
        member = b'"include_usage":true' + (b"," if options else b"")
        return Splice(start, start, member)
    asked = options["include_usage"]
    if (asked is not False and asked is not None) or not _faithful(options):
        return None  # true, not a boolean, or values json.dumps would rewrite
    merged = options | {"include_usage": True}
    return Splice(*where, json.dumps(merged, separators=(",", ":")).encode())


def _faithful(value: object) -> bool:
    """Whether json.dumps writes `value` back as the client meant it: no
    floats, which it may round (12345678901234567890.5) or make invalid
    (1e400 is read as inf and written as Infinity)."""
    if isinstance(value, float):
        return False
    if isinstance(value, dict):
        return all(_faithful(v) for v in value.values())
    if isinstance(value, list):
        return all(_faithful(v) for v in value)
    return True

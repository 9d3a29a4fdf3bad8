"""A request body read whole: held within the process's budgets, given back
when the request ends, and parsed as JSON within the structure bounds when
the answer depends on it. (Bodies relayed as they arrive: uploads.py.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from azproxy.relay.bodies import (
    BodyBuffer,
    next_chunk,
    refuse_encoded,
    too_large,
)
from azproxy.relay.jsonbody import JsonObject, read_object
from azproxy.relay.jsonshape import JsonBounds
from azproxy.relay.uploads import StreamBody

if TYPE_CHECKING:
    from azproxy.relay.context import RelayContext
    from azproxy.settings.config import Config

__all__ = [
    "JSON_BOUNDS",
    "json_bounds",
    "parse_json",
    "read_body",
    "release_body",
    "setup",
]


async def read_body(
    context: RelayContext, request: web.Request, *, spill: bool
) -> bytes | StreamBody:
    """The whole request body, held within the process's budgets: bytes in
    memory, or, when the memory budget is spent and `spill` allows it (the
    body will not be parsed), a StreamBody spooled to disk. Give it back
    with release_body() once the request ends."""
    refuse_encoded(request)
    budgets, limit = context.budgets, context.max_body_bytes
    content = request.content
    if content.is_eof():
        # The whole body came with the headers, as most do: take it as it is.
        chunk = content.read_nowait()
        if len(chunk) <= limit and budgets.memory.take(len(chunk)):
            return chunk
    else:
        length = request.content_length
        if length is not None and length > limit:
            raise too_large("request body", limit, "max_body_mb")
        chunk = b""
    timeout_s = context.config.client_body_timeout_s
    buffer = BodyBuffer(budgets, spill=spill)
    try:
        while True:
            if buffer.size + len(chunk) > limit:
                raise too_large("request body", limit, "max_body_mb")
            buffer.write(chunk)
            chunk = await next_chunk(content, timeout_s)
            if not chunk:
                break
    except BaseException:
        buffer.close()
        raise
    if buffer.on_disk:
        return StreamBody.from_spool(buffer)
    return buffer.take_bytes()


def release_body(context: RelayContext, body: bytes | StreamBody) -> None:
    """Give back what read_body() held."""
    if isinstance(body, StreamBody):
        body.close()
    else:
        context.budgets.memory.give(len(body))


def parse_json(context: RelayContext, body: bytes | StreamBody) -> JsonObject:
    """The body as a JSON object, within the structure bounds (400 else)."""
    assert isinstance(body, bytes)  # read_body(spill=False) for bodies to parse
    return read_object(body, context.json_bounds)


def json_bounds(config: Config) -> JsonBounds:
    """The bounds every JSON body azproxy parses must keep (built once per
    app: app[JSON_BOUNDS])."""
    return JsonBounds(
        config.max_json_depth, config.max_json_containers, config.max_json_values
    )


# The config's max_json_* settings, built once: every parse is held to them.
JSON_BOUNDS = web.AppKey("azproxy.json_bounds", JsonBounds)


def setup(app: web.Application, config: Config) -> None:
    app[JSON_BOUNDS] = json_bounds(config)

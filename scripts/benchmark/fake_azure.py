"""A fake Azure for the hostile section: it answers at once and never parses
what it is sent, so what the section measures is azproxy alone.

    python scripts/benchmark/fake_azure.py PORT

- Any request: its body is read and thrown away, then a small chat
  completion is answered (the simulator would parse a JSON bomb too, and
  stall or grow itself).
- A request with `x-bench-event-bytes: N`: an SSE stream of chat completion
  chunks of N bytes each, written as fast as the reader takes them (aiohttp
  waits while its buffer is full, so this process stays small), until the
  reader goes away or STREAM_LIMIT_S has passed.

It is started as a script by path, so it imports nothing of the benchmark.
"""

from __future__ import annotations

import asyncio
import sys
import time

import uvloop
from aiohttp import web

__all__ = ["EVENT_HEADER", "chunk_event", "make_app"]

EVENT_HEADER = "x-bench-event-bytes"
# Several small events per write: the upstream should not be the bottleneck.
WRITE_BYTES = 64 * 1024
# A stream nobody stops ends anyway (the section holds streams a few seconds).
STREAM_LIMIT_S = 60.0
READ_BYTES = 64 * 1024

_EVENT_HEAD = (
    b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":0,'
    b'"model":"gpt-4o","choices":[{"index":0,"delta":{"content":"'
)
_EVENT_TAIL = b'"},"finish_reason":null}]}\n\n'
_ANSWER = (
    b'{"id":"chatcmpl-bench","object":"chat.completion","created":0,'
    b'"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant",'
    b'"content":"ok"},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}'
)


def chunk_event(size: int) -> bytes:
    """One SSE chat completion chunk of `size` bytes (or the smallest one,
    if `size` is below it), its content padded with "x"."""
    pad = max(0, size - len(_EVENT_HEAD) - len(_EVENT_TAIL))
    return _EVENT_HEAD + b"x" * pad + _EVENT_TAIL


async def _discard_body(request: web.Request) -> None:
    while await request.content.read(READ_BYTES):
        pass


async def _stream(request: web.Request, event_bytes: int) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    batch = chunk_event(event_bytes) * max(1, WRITE_BYTES // event_bytes)
    deadline = time.monotonic() + STREAM_LIMIT_S
    try:
        while time.monotonic() < deadline:
            await response.write(batch)  # waits while the reader lags
        await response.write(b"data: [DONE]\n\n")
    except ConnectionError:
        pass  # the reader went away: the normal end here
    return response


async def _handle(request: web.Request) -> web.StreamResponse:
    await _discard_body(request)
    event_bytes = request.headers.get(EVENT_HEADER)
    if event_bytes is not None:
        return await _stream(request, int(event_bytes))
    return web.Response(body=_ANSWER, content_type="application/json")


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/{path:.*}", _handle)
    return app


async def main(port: int) -> None:
    runner = web.AppRunner(make_app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1])))

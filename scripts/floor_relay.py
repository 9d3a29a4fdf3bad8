"""The leanest aiohttp relay: the floor azproxy's CPU per request is compared to.

bench.py runs it beside azproxy: same framework, same event loop (uvloop), the
same ClientSession options, the same collector settings (start-up frozen and
the young generation's threshold raised, as azproxy's server/runner.py does),
but nothing else: no credentials, no
mapping beyond one fixed URL, no header rules, no retries, no logs or metrics.

    python scripts/floor_relay.py PORT UPSTREAM_URL
"""

from __future__ import annotations

import asyncio
import gc
import sys

import aiohttp
import uvloop
from aiohttp import web


async def main(port: int, upstream: str) -> None:
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=600),
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=("Accept", "Accept-Encoding", "Content-Type", "User-Agent"),
    )

    async def relay(request: web.Request) -> web.Response:
        headers = request.headers.copy()
        for name in ("Host", "Authorization", "Content-Length"):
            headers.popall(name, None)
        headers["api-key"] = "bench"
        async with session.post(
            upstream, data=await request.read(), headers=headers
        ) as r:
            answer = r.headers.copy()
            for name in ("Content-Length", "Transfer-Encoding"):
                answer.popall(name, None)
            return web.Response(status=r.status, body=await r.read(), headers=answer)

    app = web.Application()
    app.router.add_route("*", "/{path:.*}", relay)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    # Like azproxy (server/runner.py freeze_start_up): the comparison is of
    # the code, not the collector.
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        await session.close()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), sys.argv[2]))

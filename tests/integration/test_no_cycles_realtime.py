"""A realtime handshake that fails leaves nothing of the request in
reference cycles (as test_no_cycles.py checks for HTTP requests): no request,
no frame of azproxy's, which would hold the headers that carry the Azure key."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpClient, AiohttpServer

from azproxy.app import create_app
from azproxy.settings.config import Config
from tests.conftest import BEARER
from tests.cycles import closed_port, collector_off, finished, held
from tests.realtime_fake import UPGRADE, start_fake_realtime

__all__ = ["collector_off"]  # the fixture, used by name

PATH = "/v1/realtime?model=gpt-4o-realtime"


async def silent_url(aiohttp_server: AiohttpServer) -> str:
    """An upstream that never answers the handshake."""

    async def silent(request: web.Request) -> web.StreamResponse:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    app = web.Application()
    app.router.add_get("/{path:.*}", silent)
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/")


@pytest.mark.parametrize(
    ("how", "status", "tries"),
    [
        ("unreachable", 502, 0),
        ("silent", 504, 1),
        ("401", 401, 1),
        ("403", 403, 1),
        ("500", 500, 2),
    ],
)
async def test_a_failed_handshake_is_in_no_cycle(
    aiohttp_server: AiohttpServer,
    aiohttp_client: AiohttpClient,
    collector_off: list[object],
    how: str,
    status: int,
    tries: int,
) -> None:
    fake = await start_fake_realtime(aiohttp_server)
    upstream = fake.url
    if how == "unreachable":
        upstream = closed_port()
    elif how == "silent":
        upstream = await silent_url(aiohttp_server)
    else:
        fake.refuse(int(how), times=2)
    config = Config(
        upstream=upstream, retries=1, retry_delay_s=0.01, header_timeout_s=0.2
    )
    proxy = await aiohttp_client(create_app(config))
    response = await proxy.get(PATH, headers=BEARER | UPGRADE)
    assert response.status == status
    await response.read()
    await finished(proxy)
    if how not in ("unreachable", "silent"):
        assert len(fake.handshakes) == tries
    assert held(collector_off, proxy) == []

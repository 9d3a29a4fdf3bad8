"""Property: no path or query a client sends changes where azproxy sends it.

Requests go raw over a socket (no client library tidies the path first) to
the real app; a recording upstream keeps the exact request target azproxy
sent. Whatever the path, the answer is a 4xx from azproxy with nothing sent,
or the request reached this upstream (its host; a request to any other host
would be refused by tests/netguard.py) under /openai/, with no `.`, `..` or
empty segment and nothing percent-encoded in its path, and with an
api-version the client did not choose.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pytest_aiohttp import AiohttpServer

from azproxy import Config, create_app
from tests.conftest import TOKEN
from tests.fakes import CHAT_JSON
from tests.unit.test_properties_mapping import ROUTES, WORDS

EVIL_VERSION = "2099-01-01-evil"
PREFIXES = ["/v1/", "/v1//", "//v1/", "/v1/../v1/", "/./v1/", "/v1/./", "/V1/"]
# Query parts: azproxy's own parameter, encoded tricks and path syntax.
QUERY_PARTS = [
    f"api-version={EVIL_VERSION}",
    "API-Version=2024-13-01",
    "api-version=",
    "a=../../x",
    "b=%2F..%2F",
    "c=%zz",
    "d",
    "=e",
    "f=1&f=2",
    "#/../../admin",
    "?x=y",
    "g=%0d%0aHost:%20evil.example",
]
# What can stand in a request target as sent: no space, CR or LF.
RAW_WORDS = [w for w in WORDS if w.isascii() and w.isprintable() and " " not in w]


@dataclass
class Recorder:
    """An upstream that keeps each request target exactly as it arrived."""

    seen: list[tuple[str, str, dict[str, list[str]]]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        query: dict[str, list[str]] = {}
        for key, value in request.query.items():
            query.setdefault(key.lower(), []).append(value)
        self.seen.append((request.raw_path, request.host, query))
        return web.json_response(CHAT_JSON)


async def send_raw(port: int, method: str, target: str) -> int:
    """Send one request with `target` byte for byte; the answer's status."""
    body = json.dumps({"model": "gpt-4o", "messages": []}).encode()
    head = (
        f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.encode() + body)
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        await writer.wait_closed()
    return int(answer.split(b" ", 2)[1])


# A served path with up to three tricks put in anywhere.
paths = st.builds(
    lambda route, words, at: "/".join([*words[:at], *route, *words[at:]]),
    st.sampled_from([r.split("/") for r in ROUTES]),
    st.lists(st.sampled_from(RAW_WORDS), max_size=3),
    st.integers(0, 3),
)
targets = st.builds(
    lambda prefix, path, query: prefix + path + query,
    st.sampled_from(["/v1/"] * len(PREFIXES) + PREFIXES),
    paths,
    st.lists(st.sampled_from(QUERY_PARTS), max_size=3).map(
        lambda parts: "?" + "&".join(parts) if parts else ""
    ),
)


@dataclass
class Servers:
    proxy_port: int
    upstream_port: int
    recorder: Recorder


@pytest.fixture
async def servers(aiohttp_server: AiohttpServer) -> Servers:
    """A pass-through proxy in front of the recording upstream."""
    recorder = Recorder()
    app = web.Application()
    app.router.add_route("*", "/{path:.*}", recorder.handle)
    upstream = await aiohttp_server(app)
    config = Config(upstream=str(upstream.make_url("")).rstrip("/"), retries=0)
    proxy = await aiohttp_server(create_app(config))
    assert proxy.port is not None and upstream.port is not None
    return Servers(proxy.port, upstream.port, recorder)


@settings(
    max_examples=150,
    # One proxy and one upstream serve every example, on purpose: starting
    # them for each example would cost more than the examples.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(method=st.sampled_from(["GET", "POST", "DELETE"]), target=targets)
async def test_no_path_or_query_moves_the_upstream_request(
    servers: Servers, method: str, target: str
) -> None:
    servers.recorder.seen.clear()
    status = await send_raw(servers.proxy_port, method, target)
    event(f"status {status}")
    assert status < 500, target
    if status != 200:
        assert servers.recorder.seen == [], target
        return
    ((raw_path, host, query),) = servers.recorder.seen
    assert host == f"127.0.0.1:{servers.upstream_port}"
    path = raw_path.partition("?")[0]
    assert path.startswith("/openai/"), (target, raw_path)
    assert "%" not in path, (target, raw_path)
    assert not {"", ".", ".."} & set(path.split("/")[1:]), (target, raw_path)
    versions = query.get("api-version", [])
    assert len(versions) <= 1 and EVIL_VERSION not in versions, (target, raw_path)

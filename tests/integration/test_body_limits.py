"""What request bodies may cost: a client that pauses while sending one gets a
408 and a closed connection, and the bodies held at once stay within the
process's budgets (spooled to disk where they need no parsing, else 503)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpClient

from azproxy import Config, create_app
from azproxy.relay.bodies import BUDGETS
from azproxy.relay.upstream_slots import LIMITER
from azproxy.server import closing
from azproxy.settings.server_side import parse_endpoints, parse_model_map
from tests.conftest import AZURE_KEY, BEARER, ProxyFactory
from tests.fakes import CHAT_JSON, FakeAzure, json_answer
from tests.forms import AUDIO, CONTENT_TYPE, field, file_part, form
from tests.rawhttp import MARGIN_S, Conn
from tests.spoolfaults import FullDisk, fill_disk_after, no_descriptor_left

MAPPED = {"Authorization": f"Bearer myresource:gpt-4o|dep-4o,whisper|dep-w:{AZURE_KEY}"}
CHAT = "/v1/chat/completions"
MB = 1024 * 1024


def chat_of_size(size: int) -> bytes:
    head = b'{"model":"gpt-4o","messages":[{"role":"user","content":"'
    tail = b'"}]}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


async def until(condition: Callable[[], object], what: str) -> None:
    """Wait (generously) until condition() holds."""
    try:
        async with asyncio.timeout(MARGIN_S):
            while not condition():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"not seen in time: {what}") from None


async def held_answer(fake_azure: FakeAzure) -> asyncio.Event:
    """FakeAzure's next answer waits for the returned event: the request and
    its body stay held in azproxy meanwhile."""
    release = asyncio.Event()

    async def answer(request: web.Request) -> web.StreamResponse:
        await release.wait()
        return await json_answer(CHAT_JSON)(request)

    fake_azure.queue(answer)
    return release


async def assert_timed_out(client: Conn) -> None:
    answer = await client.answer()
    assert answer.status == 408
    assert answer.error()["code"] == "request_timeout"
    assert "client_body_timeout_s" in answer.error()["message"]
    assert answer.headers["connection"] == "close"
    assert await client.closed_by_server() == b""
    client.close()


async def test_a_json_body_that_stops_is_408_and_never_reaches_azure(
    proxy_for: ProxyFactory, fake_azure: FakeAzure
) -> None:
    proxy = await proxy_for(client_body_timeout_s=0.3)
    body = chat_of_size(1000)
    for headers in (BEARER, MAPPED):
        client = await Conn.to(proxy)
        await client.send_head("POST", CHAT, headers, len(body))
        await client.send(body[:500])  # ... and nothing more
        await assert_timed_out(client)
    assert fake_azure.requests == []
    assert proxy.server.app[BUDGETS].memory.used == 0


async def test_after_a_body_timeout_the_connection_closes_lingering(
    proxy_for: ProxyFactory, fake_azure: FakeAzure, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As for every response after which azproxy closes (closing.py): its
    # write side at once, the rest once the client closes, reading and
    # dropping what it still sends meanwhile, so no reset can destroy the 408.
    monkeypatch.setattr(closing, "LINGER_S", 60.0)
    proxy = await proxy_for(client_body_timeout_s=0.3)
    assert proxy.server.runner is not None and proxy.server.runner.server is not None
    server = proxy.server.runner.server
    body = chat_of_size(100_000)
    client = await Conn.to(proxy)
    await client.send_head("POST", CHAT, MAPPED, len(body))
    await client.send(body[:500])
    answer = await client.answer()
    assert answer.status == 408 and answer.headers["connection"] == "close"
    assert await client.reader.read() == b""  # the response ended
    await client.send(body[500:])  # late: read and dropped, no reset
    assert len(server.connections) == 1, "closed before the client did"
    client.writer.write_eof()
    await until(lambda: not server.connections, "closed once the client closed")
    assert await client.closed_by_server() == b""
    client.close()
    assert fake_azure.requests == []
    assert proxy.server.app[BUDGETS].memory.used == 0


async def test_an_upload_that_stops_while_streaming_is_408_and_frees_its_slot(
    proxy_for: ProxyFactory, fake_azure: FakeAzure
) -> None:
    proxy = await proxy_for(client_body_timeout_s=0.3, max_upstream_requests=1)
    body = form(field("model", "whisper"), file_part(AUDIO * 4))
    client = await Conn.to(proxy)
    await client.send_head(
        "POST",
        "/v1/audio/transcriptions",
        MAPPED | {"Content-Type": CONTENT_TYPE},
        len(body),
    )
    await client.send(body[: len(body) // 2])  # the model and half the file
    await assert_timed_out(client)
    # The upstream request was abandoned, its slot given back: the next
    # request gets through at once.
    assert fake_azure.requests == []
    assert proxy.server.app[LIMITER].in_use == 0
    response = await proxy.post(CHAT, data=chat_of_size(200), headers=MAPPED)
    assert response.status == 200


async def test_an_upload_that_stops_before_its_model_is_408(
    proxy_for: ProxyFactory, fake_azure: FakeAzure
) -> None:
    proxy = await proxy_for(client_body_timeout_s=0.3)
    body = form(file_part(AUDIO * 4), field("model", "whisper"))
    client = await Conn.to(proxy)
    await client.send_head(
        "POST",
        "/v1/audio/transcriptions",
        MAPPED | {"Content-Type": CONTENT_TYPE},
        len(body),
    )
    await client.send(body[:1000])
    await assert_timed_out(client)
    assert fake_azure.requests == []
    assert proxy.server.app[BUDGETS].memory.used == 0


async def test_paused_bodies_hold_no_more_than_the_budget_and_time_out(
    proxy_for: ProxyFactory, fake_azure: FakeAzure
) -> None:
    # Issue 9's 30 bodies paused one byte before their end, at small scale.
    proxy = await proxy_for(
        max_body_mb=2, max_buffered_body_mb=2, client_body_timeout_s=1.5
    )
    budget = proxy.server.app[BUDGETS].memory
    body = chat_of_size(MB)
    paused = []
    for _ in range(2):
        client = await Conn.to(proxy)
        await client.send_head("POST", CHAT, MAPPED, len(body))
        await client.send(body[:-1])
        paused.append(client)
    await until(lambda: budget.used == 2 * (MB - 1), "both bodies held")
    third = await Conn.to(proxy)
    await third.send_head("POST", CHAT, MAPPED, len(body))
    await third.send(body[:-1])
    answer = await third.answer()
    third.close()
    assert answer.status == 503
    assert answer.error()["code"] == "server_busy"
    assert "max_buffered_body_mb" in answer.error()["message"]
    assert answer.headers["retry-after"] == "1"
    assert budget.used <= budget.limit
    for client in paused:
        await assert_timed_out(client)
    assert budget.used == 0
    assert fake_azure.requests == []
    response = await proxy.post(CHAT, data=body, headers=MAPPED)
    assert response.status == 200
    assert fake_azure.last.body == body


async def test_past_the_budget_a_body_to_parse_is_503(
    proxy_for: ProxyFactory, fake_azure: FakeAzure
) -> None:
    proxy = await proxy_for(max_body_mb=1, max_buffered_body_mb=1)
    release = await held_answer(fake_azure)
    first = asyncio.ensure_future(
        proxy.post(CHAT, data=chat_of_size(MB * 7 // 10), headers=MAPPED)
    )
    await until(lambda: fake_azure.requests, "the first body reached Azure")
    second = chat_of_size(MB // 2)
    response = await proxy.post(CHAT, data=second, headers=MAPPED)
    assert response.status == 503
    assert response.headers["Retry-After"] == "1"
    assert "max_buffered_body_mb" in (await response.json())["error"]["message"]
    release.set()
    assert (await first).status == 200
    response = await proxy.post(CHAT, data=second, headers=MAPPED)
    assert response.status == 200
    assert fake_azure.last.body == second
    assert proxy.server.app[BUDGETS].memory.used == 0


async def test_past_the_budget_a_body_not_parsed_is_spooled_and_can_be_resent(
    proxy_for: ProxyFactory, fake_azure: FakeAzure
) -> None:
    proxy = await proxy_for(max_body_mb=1, max_buffered_body_mb=1)
    budgets = proxy.server.app[BUDGETS]
    first = chat_of_size(MB * 7 // 10)
    release_first = await held_answer(fake_azure)
    sending_first = asyncio.ensure_future(proxy.post(CHAT, data=first, headers=BEARER))
    await until(lambda: len(fake_azure.requests) == 1, "the first body reached Azure")
    # Azure fails once, then holds its answer: the second body is sent again
    # from its spool, whole, and stays on disk while it is held.
    fake_azure.queue(json_answer({"error": {}}, status=500))
    release_second = await held_answer(fake_azure)
    second = chat_of_size(MB // 2)
    sending_second = asyncio.ensure_future(
        proxy.post(CHAT, data=second, headers=BEARER)
    )
    await until(lambda: len(fake_azure.requests) == 3, "the second body was resent")
    assert (budgets.memory.used, budgets.disk.used) == (len(first), len(second))
    release_first.set()
    release_second.set()
    assert (await sending_first).status == 200
    assert (await sending_second).status == 200
    assert [r.body for r in fake_azure.requests] == [first, second, second]
    assert fake_azure.last.headers["Content-Length"] == str(len(second))
    assert (budgets.memory.used, budgets.disk.used) == (0, 0)


async def test_past_both_budgets_it_is_503_naming_max_spool_mb(
    proxy_for: ProxyFactory, fake_azure: FakeAzure
) -> None:
    proxy = await proxy_for(max_body_mb=1, max_buffered_body_mb=1, max_spool_mb=0.5)
    release = await held_answer(fake_azure)
    first = asyncio.ensure_future(
        proxy.post(CHAT, data=chat_of_size(MB * 7 // 10), headers=BEARER)
    )
    await until(lambda: fake_azure.requests, "the first body reached Azure")
    response = await proxy.post(CHAT, data=chat_of_size(MB * 6 // 10), headers=BEARER)
    assert response.status == 503
    assert "max_spool_mb" in (await response.json())["error"]["message"]
    assert len(fake_azure.requests) == 1
    release.set()
    assert (await first).status == 200


async def test_upload_spooling_counts_against_max_spool_mb(
    proxy_for: ProxyFactory, fake_azure: FakeAzure
) -> None:
    proxy = await proxy_for(max_spool_mb=1)
    big = form(file_part(b"a" * 3 * MB), field("model", "whisper"))
    headers = MAPPED | {"Content-Type": CONTENT_TYPE}
    response = await proxy.post(
        "/v1/audio/transcriptions", data=io.BytesIO(big), headers=headers
    )
    assert response.status == 503
    error = (await response.json())["error"]
    assert error["code"] == "server_busy" and "max_spool_mb" in error["message"]
    assert fake_azure.requests == []
    small = form(file_part(b"a" * (MB // 2)), field("model", "whisper"))
    response = await proxy.post("/v1/audio/transcriptions", data=small, headers=headers)
    assert response.status == 200
    assert fake_azure.last.body == small
    budgets = proxy.server.app[BUDGETS]
    assert budgets.memory.used == 0 and budgets.disk.used == 0


async def test_an_upload_refused_after_its_head_was_read_gives_its_budget_back(
    aiohttp_client: AiohttpClient, fake_azure: FakeAzure
) -> None:
    config = Config(
        endpoints=parse_endpoints(
            {"e": {"url": fake_azure.url, "api_key": AZURE_KEY}}, {}
        ),
        model_map=parse_model_map({"whisper": "e/dep-w"}),
        allow_anonymous=True,
    )
    app = create_app(config)
    proxy = await aiohttp_client(app)
    body = form(file_part(b"a" * (2 * MB)), field("model", "not-mapped"))
    response = await proxy.post(
        "/v1/audio/transcriptions",
        data=io.BytesIO(body),
        headers={"Content-Type": CONTENT_TYPE},
    )
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "model_not_found"
    budgets = app[BUDGETS]
    assert (budgets.memory.used, budgets.disk.used) == (0, 0)
    assert fake_azure.requests == []


async def test_a_spool_file_that_cannot_be_made_is_503_and_costs_nothing_after(
    proxy_for: ProxyFactory,
    fake_azure: FakeAzure,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    proxy = await proxy_for(max_body_mb=1, max_buffered_body_mb=1)
    budgets = proxy.server.app[BUDGETS]
    release = await held_answer(fake_azure)
    first = chat_of_size(MB * 7 // 10)
    sending_first = asyncio.ensure_future(proxy.post(CHAT, data=first, headers=BEARER))
    await until(lambda: fake_azure.requests, "the first body reached Azure")
    # The second body must spill, and no spool file can be made.
    no_descriptor_left(monkeypatch)
    try:
        response = await proxy.post(CHAT, data=chat_of_size(MB // 2), headers=BEARER)
        assert response.status == 503
        assert response.headers["Retry-After"] == "1"
        error = (await response.json())["error"]
        assert error["code"] == "server_busy"
        assert "spool on disk failed" in error["message"]
        assert [r.body for r in fake_azure.requests] == [first]
        assert (budgets.memory.used, budgets.disk.used) == (len(first), 0)
    finally:
        release.set()
    assert (await sending_first).status == 200
    assert (budgets.memory.used, budgets.disk.used) == (0, 0)
    [warning] = [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")]
    assert warning.getMessage().endswith("Too many open files")
    assert warning.exc_info is None  # one line, no traceback


async def test_an_upload_whose_spool_fills_the_disk_is_503_and_gives_it_back(
    proxy_for: ProxyFactory, fake_azure: FakeAzure, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = await proxy_for()
    fill_disk_after(monkeypatch, 2 * MB)
    big = form(file_part(b"a" * 3 * MB), field("model", "whisper"))
    headers = MAPPED | {"Content-Type": CONTENT_TYPE}
    response = await proxy.post(
        "/v1/audio/transcriptions", data=io.BytesIO(big), headers=headers
    )
    assert response.status == 503
    assert (await response.json())["error"]["code"] == "server_busy"
    assert fake_azure.requests == []
    budgets = proxy.server.app[BUDGETS]
    assert (budgets.memory.used, budgets.disk.used) == (0, 0)
    assert [spool.closed for spool in FullDisk.made] == [True]
    # The budget is whole again: a body that fits goes through.
    monkeypatch.undo()
    small = form(file_part(b"a" * (MB // 2)), field("model", "whisper"))
    response = await proxy.post("/v1/audio/transcriptions", data=small, headers=headers)
    assert response.status == 200
    assert fake_azure.last.body == small

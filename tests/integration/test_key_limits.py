"""Limits per access key, end to end: the official openai SDK over real
sockets to azproxy, FakeAzure behind it, time from a FakeClock. Asserted at
both ends: what the client got (status, Retry-After, the remaining-budget
headers, the error) and what Azure received (nothing, when refused)."""

from __future__ import annotations

import asyncio
import datetime
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import openai
import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from azproxy import Config, create_app
from azproxy.observe.usage import estimate_tokens
from azproxy.settings.server_side import (
    parse_access_keys,
    parse_endpoints,
    parse_model_map,
)
from tests.clock import FakeClock
from tests.conftest import AZURE_KEY
from tests.fakes import CHAT_JSON, FakeAzure, json_answer, sse_answer, sse_event

TEAM_A = "team-a-key-0123456789abcdef"
TEAM_B = "team-b-key-0123456789abcdef"
# Wednesday 2026-03-04, 13:00 UTC: mid-day, mid-week.
MIDDAY = datetime.datetime(2026, 3, 4, 13, tzinfo=datetime.UTC).timestamp()
MESSAGES: Any = [{"role": "user", "content": "Hi"}]

Start = Callable[..., Awaitable[tuple[TestClient[Any, Any], FakeClock]]]


@pytest.fixture
def start(aiohttp_client: AiohttpClient, fake_azure: FakeAzure) -> Start:
    """azproxy with team-a limited as given and team-b without limits."""

    async def start(**limits: Any) -> tuple[TestClient[Any, Any], FakeClock]:
        clock = FakeClock(MIDDAY)
        config = Config(
            endpoints=parse_endpoints(
                {"e": {"url": fake_azure.url, "api_key": AZURE_KEY}}, {}
            ),
            model_map=parse_model_map("gpt-4o=dep"),
            access_keys=parse_access_keys(
                [
                    {"key": TEAM_A, "name": "team-a", **limits},
                    {"key": TEAM_B, "name": "team-b"},
                ],
                {},
            ),
            cors_origins=("*",),
        )
        proxy = await aiohttp_client(create_app(config, wall_clock=clock))
        return proxy, clock

    return start


Sdk = Callable[..., openai.AsyncOpenAI]


@pytest.fixture
async def sdk() -> AsyncIterator[Sdk]:
    """The official SDK's client for a key (closed after the test)."""
    clients: list[openai.AsyncOpenAI] = []

    def make(proxy: TestClient[Any, Any], key: str = TEAM_A) -> openai.AsyncOpenAI:
        client = openai.AsyncOpenAI(
            base_url=str(proxy.make_url("/v1")), api_key=key, max_retries=0
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


def usage_answer(total: int) -> Any:
    usage = {"prompt_tokens": total - 4, "completion_tokens": 4, "total_tokens": total}
    return json_answer(CHAT_JSON | {"usage": usage})


async def metrics(proxy: TestClient[Any, Any]) -> str:
    return await (await proxy.get("/metrics")).text()


async def test_the_sixth_request_in_a_minute_is_refused_while_another_key_is_served(
    start: Start, fake_azure: FakeAzure, sdk: Sdk
) -> None:
    proxy, clock = await start(rpm=5)
    client = sdk(proxy)
    remaining = []
    for _ in range(5):
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=MESSAGES
        )
        remaining.append(raw.headers["x-azproxy-ratelimit-remaining-requests"])
        assert "x-azproxy-ratelimit-remaining-tokens" not in raw.headers  # no tpm
    assert remaining == ["4", "3", "2", "1", "0"]
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(
            model="gpt-4o",
            messages=MESSAGES,
            extra_headers={"Origin": "https://app.example"},
        )
    refusal = caught.value.response
    # One request drains every 60/5 = 12 s: that is the real wait.
    assert refusal.headers["Retry-After"] == "12"
    assert refusal.headers["retry-after-ms"] == "12000"
    assert refusal.headers["x-azproxy-ratelimit-remaining-requests"] == "0"
    assert (
        "x-azproxy-ratelimit-remaining-requests"
        in (refusal.headers["Access-Control-Expose-Headers"])
    )
    error = refusal.json()["error"]
    assert error["code"] == "rate_limit_exceeded"
    assert "team-a" in error["message"] and "5 requests per minute" in error["message"]
    assert len(fake_azure.requests) == 5  # the refused one never reached Azure

    # team-b has no limits: served, and told nothing about budgets.
    other = await sdk(proxy, TEAM_B).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES
    )
    assert other.http_response.status_code == 200
    assert "x-azproxy-ratelimit-remaining-requests" not in other.headers
    assert len(fake_azure.requests) == 6

    clock.advance(11.9)
    with pytest.raises(openai.RateLimitError):
        await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    clock.advance(0.1)
    await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert len(fake_azure.requests) == 7

    text = await metrics(proxy)
    assert 'azproxy_limit_refusals_total{key="team-a",kind="rpm"} 2.0' in text
    assert (
        'azproxy_requests_total{deployment="dep",key="team-a",model="gpt-4o",'
        'status="200"} 6.0' in text
    )
    assert 'key="team-b",model="gpt-4o",status="200"} 1.0' in text
    assert (
        'azproxy_requests_total{deployment="",key="team-a",model="gpt-4o",'
        'status="429"} 2.0' in text
    )


async def test_a_large_prompt_over_tpm_is_refused_before_sending(
    start: Start, fake_azure: FakeAzure, sdk: Sdk
) -> None:
    proxy, _ = await start(tpm=1000)
    client = sdk(proxy)
    large: Any = [{"role": "user", "content": "word " * 480}]
    fake_azure.queue(usage_answer(600))
    first = await client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=large
    )
    # The prompt's estimate (its body's bytes / 4) is reserved before sending.
    estimate = estimate_tokens(len(fake_azure.requests[0].body))
    assert 500 < estimate < 700
    tokens_left = int(first.headers["x-azproxy-ratelimit-remaining-tokens"])
    assert tokens_left == 1000 - estimate
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(model="gpt-4o", messages=large)
    # Azure's usage (600) replaced the estimate; the same prompt again needs
    # 600 + estimate - 1000 tokens to drain, 60/1000 s each.
    wait_ms = (600 + estimate - 1000) * 60
    refusal = caught.value.response
    assert refusal.headers["Retry-After"] == str(-(-wait_ms // 1000))
    assert refusal.headers["retry-after-ms"] == str(wait_ms)
    assert refusal.headers["x-azproxy-ratelimit-remaining-tokens"] == "400"
    assert f"estimated at {estimate} tokens" in refusal.json()["error"]["message"]
    assert len(fake_azure.requests) == 1
    # A small prompt still fits the 400 tokens left.
    await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert len(fake_azure.requests) == 2
    assert 'azproxy_limit_refusals_total{key="team-a",kind="tpm"} 1.0' in (
        await metrics(proxy)
    )


async def test_a_quota_spent_mid_day_is_403_until_midnight_utc(
    start: Start, fake_azure: FakeAzure, sdk: Sdk
) -> None:
    proxy, clock = await start(token_quota=1000, token_quota_period="day")
    client = sdk(proxy)
    fake_azure.queue(usage_answer(1000))
    first = await client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES
    )
    assert int(first.headers["x-azproxy-quota-remaining-tokens"]) > 950
    with pytest.raises(openai.PermissionDeniedError) as caught:
        await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    refusal = caught.value.response
    assert refusal.status_code == 403
    assert refusal.headers["x-azproxy-quota-remaining-tokens"] == "0"
    error = refusal.json()["error"]
    assert (error["code"], error["type"]) == ("quota_exceeded", "insufficient_quota")
    assert "1000 tokens per day" in error["message"]
    assert "renews at 2026-03-05T00:00:00Z" in error["message"]
    assert len(fake_azure.requests) == 1
    clock.advance(11 * 3600 - 1)  # 23:59:59
    with pytest.raises(openai.PermissionDeniedError):
        await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    clock.advance(1)  # midnight UTC: a new day, a new quota
    renewed = await client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES
    )
    assert int(renewed.headers["x-azproxy-quota-remaining-tokens"]) > 950
    assert len(fake_azure.requests) == 2
    assert 'azproxy_limit_refusals_total{key="team-a",kind="quota"} 2.0' in (
        await metrics(proxy)
    )


async def test_max_concurrent_refuses_while_a_stream_is_held_open(
    start: Start, fake_azure: FakeAzure, sdk: Sdk
) -> None:
    proxy, _ = await start(max_concurrent=1, rpm=100)
    client = sdk(proxy)
    gate = asyncio.Event()
    chunk = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o",
        "choices": [{"index": 0, "delta": {"content": "Hi"}}],
    }
    fake_azure.queue(sse_answer([sse_event(chunk), sse_event("[DONE]")], gates=[gate]))
    raw = await client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, stream=True
    )
    # A streamed answer carries the budgets too (set before it was prepared).
    assert raw.headers["x-azproxy-ratelimit-remaining-requests"] == "99"
    stream = raw.parse()
    first = await anext(aiter(stream))
    assert first.choices[0].delta.content == "Hi"
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    refusal = caught.value.response
    assert refusal.headers["Retry-After"] == "1"
    assert refusal.headers["retry-after-ms"] == "1000"
    assert (
        "limited to 1 request in flight at once" in (refusal.json()["error"]["message"])
    )
    assert refusal.headers["x-azproxy-ratelimit-remaining-requests"] == "99"
    assert len(fake_azure.requests) == 1
    gate.set()
    assert [c async for c in stream] == []  # [DONE]
    # The stream ended: its slot is back.
    await asyncio.sleep(0.05)
    await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert len(fake_azure.requests) == 2
    assert 'azproxy_limit_refusals_total{key="team-a",kind="concurrency"} 1.0' in (
        await metrics(proxy)
    )


async def test_an_answer_that_failed_carries_the_budgets_and_gives_the_slot_back(
    start: Start, fake_azure: FakeAzure, sdk: Sdk
) -> None:
    proxy, _ = await start(max_concurrent=1, rpm=10, tpm=100_000)
    fake_azure.queue(
        json_answer({"error": {"code": "BadRequest", "message": "no"}}, status=400)
    )
    response = await proxy.post(
        "/v1/chat/completions",
        json={"model": "gpt-4o", "messages": MESSAGES},
        headers={"Authorization": f"Bearer {TEAM_A}"},
    )
    assert response.status == 400
    assert response.headers["x-azproxy-ratelimit-remaining-requests"] == "9"
    body = len(fake_azure.requests[0].body)
    assert response.headers["x-azproxy-ratelimit-remaining-tokens"] == str(
        100_000 - estimate_tokens(body)
    )
    assert json.loads(await response.read())["error"]["code"] == "BadRequest"
    # No usage in Azure's answer: the estimate stands; the slot is back.
    again = await proxy.post(
        "/v1/chat/completions",
        json={"model": "gpt-4o", "messages": MESSAGES},
        headers={"Authorization": f"Bearer {TEAM_A}"},
    )
    assert again.status == 200
    assert again.headers["x-azproxy-ratelimit-remaining-requests"] == "8"
    assert again.headers["x-azproxy-ratelimit-remaining-tokens"] == str(
        100_000 - 2 * estimate_tokens(body)
    )


async def test_usage_read_again_from_a_stored_object_is_not_counted_again(
    start: Start, fake_azure: FakeAzure, sdk: Sdk
) -> None:
    proxy, _ = await start(tpm=10_000)
    client = sdk(proxy)
    stored = {
        "id": "resp_1",
        "object": "response",
        "status": "completed",
        "output": [],
        "usage": {"input_tokens": 1000, "output_tokens": 2000, "total_tokens": 3000},
    }
    fake_azure.queue(json_answer(stored))
    created = await client.responses.with_raw_response.create(
        model="gpt-4o", input="Hi"
    )
    assert created.http_response.status_code == 200
    assert fake_azure.requests[0].path == "/openai/v1/responses"
    # Creating it used 3000 tokens: counted.
    fake_azure.queue(json_answer(stored))
    again = await client.responses.with_raw_response.retrieve("resp_1")
    assert again.headers["x-azproxy-ratelimit-remaining-tokens"] == "7000"
    # Reading it again shows the same usage: not counted twice.
    chat = await client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES
    )
    estimate = estimate_tokens(len(fake_azure.requests[2].body))
    assert chat.headers["x-azproxy-ratelimit-remaining-tokens"] == str(7000 - estimate)


async def test_tokens_are_given_back_when_no_deployment_served_the_request(
    start: Start, fake_azure: FakeAzure, sdk: Sdk
) -> None:
    # Azure's 429 (nothing processed), then azproxy's own 429 while the
    # deployment cools (Azure not reached): each counts as a request, but
    # its reserved tokens come back.
    proxy, _ = await start(rpm=10, token_quota=1_000_000)
    client = sdk(proxy)
    throttled = {"error": {"code": "429", "message": "slow down"}}
    fake_azure.queue(
        json_answer(throttled, status=429, headers={"retry-after-ms": "50"})
    )
    for _ in range(2):
        with pytest.raises(openai.RateLimitError):
            await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert len(fake_azure.requests) == 1
    await asyncio.sleep(0.1)  # the cooldown Azure asked for is over
    fake_azure.queue(usage_answer(50))
    served = await client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES
    )
    assert served.headers["x-azproxy-ratelimit-remaining-requests"] == "7"
    # While it ran, only its own estimate was held: the refused two gave
    # theirs back.
    body = len(fake_azure.requests[-1].body)
    assert served.headers["x-azproxy-quota-remaining-tokens"] == str(
        1_000_000 - estimate_tokens(body)
    )
    fake_azure.queue(usage_answer(50))
    after = await client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES
    )
    assert after.headers["x-azproxy-quota-remaining-tokens"] == str(
        1_000_000 - 50 - estimate_tokens(body)
    )

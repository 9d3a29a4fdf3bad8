"""What azproxy learns from Azure about each deployment, and what it does with
it: the pre-emptive switch away from a deployment Azure said is exhausted,
azproxy's own 429 keeping what Azure said, and the state on /metrics."""

from __future__ import annotations

import json
import socket
from typing import Any

import openai
import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pytest_aiohttp import AiohttpClient

from azproxy import Config, create_app
from azproxy.settings.server_side import (
    parse_access_keys,
    parse_endpoints,
    parse_model_map,
)
from tests.clock import FakeClock
from tests.conftest import AZURE_KEY
from tests.fakes import CHAT_JSON, FakeAzure, json_answer

ACCESS_KEY = "state-suite-access-key-0123"
TOKEN_LIMIT = (
    "Requests to the ChatCompletions_Create Operation under Azure OpenAI API "
    "version 2024-10-21 have exceeded token rate limit of your current OpenAI "
    "S0 pricing tier. Please retry after 6 seconds."
)
CALL_LIMIT = (
    "Requests to the ChatCompletions_Create Operation under Azure OpenAI API "
    "version 2024-10-21 have exceeded call rate limit of your current OpenAI "
    "S0 pricing tier. Please retry after 3 seconds."
)


def dead_url() -> str:
    """A loopback port nobody listens on: connection refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def limited(message: str, **headers: str) -> Any:
    return json_answer({"error": {"code": "429", "message": message}}, 429, headers)


def chat_with(**headers: str) -> Any:
    return json_answer(CHAT_JSON, 200, headers)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def start(
    aiohttp_client: AiohttpClient,
    fake: FakeAzure,
    clock: FakeClock,
    model_map: dict[str, Any],
    **overrides: Any,
) -> TestClient[Any, Any]:
    endpoints = {
        "fake": {"url": fake.url, "api_key": AZURE_KEY},
        "dead": {"url": dead_url(), "api_key": AZURE_KEY},
    }
    if overrides.get("model_fallback"):
        del endpoints["dead"]  # the fallback needs a single endpoint
    values: dict[str, Any] = {
        "endpoints": parse_endpoints(endpoints, {}),
        "model_map": parse_model_map(model_map),
        "access_keys": parse_access_keys([ACCESS_KEY], {}),
        "exhausted_cooldown_s": 10.0,
    }
    config = Config(**(values | overrides))
    return await aiohttp_client(create_app(config, monotonic=clock))


def sdk(proxy: TestClient[Any, Any]) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=str(proxy.make_url("/v1")), api_key=ACCESS_KEY, max_retries=0
    )


def deployments_reached(fake: FakeAzure) -> list[str]:
    return [r.path.split("/")[3] for r in fake.requests]


TWO_DEPLOYMENTS = {
    "gpt-4o": [
        {"endpoint": "fake", "deployment": "dep-a", "priority": 1},
        {"endpoint": "fake", "deployment": "dep-b", "priority": 2},
    ]
}


async def test_an_exhausted_deployment_is_passed_over_until_its_cooldown_ends(
    aiohttp_client: AiohttpClient, fake_azure: FakeAzure, clock: FakeClock
) -> None:
    proxy = await start(aiohttp_client, fake_azure, clock, TWO_DEPLOYMENTS)
    fake_azure.queue(chat_with(**{"x-ratelimit-remaining-requests": "0"}))
    async with sdk(proxy) as client:

        async def served_by() -> str:
            raw = await client.chat.completions.with_raw_response.create(
                model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
            )
            assert raw.parse().choices[0].message.content == "Hi from FakeAzure"
            return raw.headers["x-azproxy-deployment"]

        # dep-a (priority 1) answers well, but says its window is used up.
        assert await served_by() == "dep-a"
        # So the next requests go to dep-b at once: no 429 from dep-a first.
        assert [await served_by() for _ in range(3)] == ["dep-b"] * 3
        clock.advance(9.9)
        assert await served_by() == "dep-b"
        clock.advance(0.2)  # exhausted_cooldown_s (10 s) is over
        assert await served_by() == "dep-a"
    # dep-a was asked once, and Azure never had to refuse anything.
    expected = ["dep-a", "dep-b", "dep-b", "dep-b", "dep-b", "dep-a"]
    assert deployments_reached(fake_azure) == expected


async def test_an_answer_with_room_again_ends_the_exhaustion_early(
    aiohttp_client: AiohttpClient, fake_azure: FakeAzure, clock: FakeClock
) -> None:
    proxy = await start(aiohttp_client, fake_azure, clock, TWO_DEPLOYMENTS)
    fake_azure.queue(
        # dep-a: too few tokens left for a request like this one.
        chat_with(**{"x-ratelimit-remaining-tokens": "3"}),
        # dep-b fails; dep-a, exhausted but the only one left, is still used
        # (preferring is not refusing), and its answer shows room again.
        json_answer({"error": {"code": "InternalServerError"}}, 500),
        chat_with(
            **{
                "x-ratelimit-remaining-requests": "40",
                "x-ratelimit-remaining-tokens": "9000",
            }
        ),
    )
    async with sdk(proxy) as client:
        served = []
        for _ in range(3):
            raw = await client.chat.completions.with_raw_response.create(
                model="gpt-4o", messages=[{"role": "user", "content": "hello"}]
            )
            served.append(raw.headers["x-azproxy-deployment"])
    # No clock moved: dep-a is first again because Azure said it has room.
    assert served == ["dep-a", "dep-a", "dep-a"]
    assert deployments_reached(fake_azure) == ["dep-a", "dep-b", "dep-a", "dep-a"]


async def test_a_lone_exhausted_deployment_is_still_used(
    aiohttp_client: AiohttpClient, fake_azure: FakeAzure, clock: FakeClock
) -> None:
    proxy = await start(aiohttp_client, fake_azure, clock, {"gpt-4o": "fake/dep-a"})
    fake_azure.queue(chat_with(**{"x-ratelimit-remaining-requests": "0"}))
    for _ in range(2):
        response = await proxy.post(
            "/v1/chat/completions",
            data=json.dumps({"model": "gpt-4o", "messages": []}),
            headers={"Authorization": f"Bearer {ACCESS_KEY}"},
        )
        assert response.status == 200
        assert response.headers["x-azproxy-deployment"] == "dep-a"
    assert deployments_reached(fake_azure) == ["dep-a", "dep-a"]


async def test_every_deployment_cooling_keeps_what_azure_said(
    aiohttp_client: AiohttpClient, fake_azure: FakeAzure, clock: FakeClock
) -> None:
    proxy = await start(aiohttp_client, fake_azure, clock, TWO_DEPLOYMENTS)
    fake_azure.queue(
        limited(
            TOKEN_LIMIT,
            **{
                "retry-after": "6",
                "retry-after-ms": "6000",
                "x-ratelimit-remaining-tokens": "0",
                "x-ratelimit-reset-tokens": "6s",
            },
        ),
        limited(
            TOKEN_LIMIT,
            **{
                "retry-after-ms": "3000",
                "x-ratelimit-remaining-tokens": "0",
                "x-ratelimit-reset-tokens": "3s",
                "x-ratelimit-reset-requests": "250ms",
            },
        ),
    )
    async with sdk(proxy) as client:
        resets_then = (
            {"x-ratelimit-reset-tokens": "3s", "x-ratelimit-reset-requests": "0.25s"},
            # A second later: the request reset (250 ms) has passed.
            {"x-ratelimit-reset-tokens": "2s"},
        )
        for wait_ms, resets in zip((3000, 2000), resets_then, strict=True):
            with pytest.raises(openai.RateLimitError) as caught:
                await client.chat.completions.create(model="gpt-4o", messages=[])
            response = caught.value.response
            # The wait of the first deployment back (dep-b), counted down.
            assert response.headers["retry-after-ms"] == str(wait_ms)
            assert response.headers["Retry-After"] == str(wait_ms // 1000)
            said = {k: v for k, v in response.headers.items() if "-reset-" in k}
            assert said == resets
            # The kind of limit, where OpenAI's own 429s put it.
            error = response.json()["error"]
            assert error["type"] == "tokens"
            assert error["code"] == "rate_limit_exceeded"
            assert "token rate limit" in error["message"]
            # azproxy made this answer: no deployment gave it.
            assert "x-azproxy-deployment" not in response.headers
            clock.advance(1)
    # Each deployment was asked once; the second refusal asked nobody.
    assert deployments_reached(fake_azure) == ["dep-a", "dep-b"]


async def test_a_request_limit_is_named_as_one(
    aiohttp_client: AiohttpClient, fake_azure: FakeAzure, clock: FakeClock
) -> None:
    proxy = await start(aiohttp_client, fake_azure, clock, {"gpt-4o": "fake/dep-a"})
    fake_azure.queue(limited(CALL_LIMIT, **{"retry-after": "3"}))
    async with sdk(proxy) as client:
        with pytest.raises(openai.RateLimitError) as caught:
            await client.chat.completions.create(model="gpt-4o", messages=[])
    response = caught.value.response
    assert response.json()["error"]["type"] == "requests"
    assert "request rate limit" in response.json()["error"]["message"]
    assert response.headers["retry-after-ms"] == "3000"
    assert "x-azproxy-deployment" not in response.headers


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def sample(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float],
    name: str,
    **labels: str,
) -> float | None:
    return found.get((name, frozenset(labels.items())))


async def test_metrics_show_each_deployments_state_cooldowns_and_azures_counts(
    aiohttp_client: AiohttpClient, fake_azure: FakeAzure, clock: FakeClock
) -> None:
    proxy = await start(
        aiohttp_client,
        fake_azure,
        clock,
        {
            "m-429": "fake/dep-429",
            "m-down": "dead/dep-down",
            "m-500": "fake/dep-500",
            "m-empty": "fake/dep-empty",
            "m-ok": "fake/dep-ok",
            "m-idle": "fake/dep-idle",
        },
        breaker_failures=2,
        error_cooldown_s=30,
        breaker_open_s=60,
    )
    fake_azure.queue(
        limited(
            CALL_LIMIT,
            **{
                "retry-after": "3",
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-remaining-tokens": "5000",
            },
        ),
        json_answer({"error": {"code": "InternalServerError"}}, 500),
        json_answer({"error": {"code": "InternalServerError"}}, 500),
        chat_with(
            **{
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-remaining-tokens": "0",
            }
        ),
        chat_with(
            **{
                "x-ratelimit-remaining-requests": "17",
                "x-ratelimit-remaining-tokens": "12345",
            }
        ),
    )
    auth = {"Authorization": f"Bearer {ACCESS_KEY}"}
    statuses = []
    for model in ("m-429", "m-down", "m-500", "m-500", "m-empty", "m-ok"):
        body = json.dumps({"model": model, "messages": []})
        response = await proxy.post("/v1/chat/completions", data=body, headers=auth)
        statuses.append(response.status)
    assert statuses == [429, 502, 500, 500, 200, 200]

    text = await (await proxy.get("/metrics", headers=auth)).text()
    found = samples(text)
    expected_state = {
        ("fake", "dep-429"): "rate_limited",
        ("dead", "dep-down"): "cooling_errors",
        ("fake", "dep-500"): "breaker_open",
        ("fake", "dep-empty"): "exhausted",
        ("fake", "dep-ok"): "healthy",
        ("fake", "dep-idle"): "healthy",  # configured, never used
    }
    states = ("healthy", "rate_limited", "cooling_errors", "breaker_open", "exhausted")
    for (endpoint, deployment), current in expected_state.items():
        for state in states:
            value = sample(
                found,
                "azproxy_deployment_state",
                endpoint=endpoint,
                deployment=deployment,
                state=state,
            )
            assert value == (1.0 if state == current else 0.0), (deployment, state)
        for reason in states[1:]:
            started = sample(
                found,
                "azproxy_cooldowns_total",
                endpoint=endpoint,
                deployment=deployment,
                reason=reason,
            )
            assert started == (1.0 if reason == current else 0.0), (deployment, reason)

    def remaining(kind: str, deployment: str) -> float | None:
        return sample(
            found,
            f"azproxy_deployment_remaining_{kind}",
            endpoint="fake",
            deployment=deployment,
        )

    assert (remaining("requests", "dep-ok"), remaining("tokens", "dep-ok")) == (
        17.0,
        12345.0,
    )
    assert (remaining("requests", "dep-429"), remaining("tokens", "dep-429")) == (
        0.0,
        5000.0,
    )
    assert remaining("requests", "dep-empty") == remaining("tokens", "dep-empty") == 0
    # Azure never said for these: no value rather than a made-up one.
    assert remaining("requests", "dep-idle") is None
    assert remaining("tokens", "dep-500") is None

    # The rate limit ends when Azure said; the others keep their state.
    clock.advance(3.1)
    found = samples(await (await proxy.get("/metrics", headers=auth)).text())
    assert (
        sample(
            found,
            "azproxy_deployment_state",
            endpoint="fake",
            deployment="dep-429",
            state="healthy",
        )
        == 1.0
    )
    assert (
        sample(
            found,
            "azproxy_deployment_state",
            endpoint="fake",
            deployment="dep-500",
            state="breaker_open",
        )
        == 1.0
    )


async def test_names_clients_made_up_get_no_series(
    aiohttp_client: AiohttpClient, fake_azure: FakeAzure, clock: FakeClock
) -> None:
    # model_fallback sends a model name Azure may not know as a deployment:
    # those that answer are shown (there are as many as Azure has), those
    # it does not know are not, whatever headers came with the 404.
    proxy = await start(
        aiohttp_client, fake_azure, clock, {"gpt-4o": "fake/dep-a"}, model_fallback=True
    )
    counts = {
        "x-ratelimit-remaining-requests": "7",
        "x-ratelimit-remaining-tokens": "70",
    }
    not_found = {"error": {"code": "DeploymentNotFound", "message": "no"}}
    fake_azure.queue(
        *[json_answer(not_found, 404, counts) for _ in range(3)],
        chat_with(**counts),
    )
    auth = {"Authorization": f"Bearer {ACCESS_KEY}"}
    for model in ("made-up-1", "made-up-2", "made-up-3", "real-guess"):
        body = json.dumps({"model": model, "messages": []})
        response = await proxy.post("/v1/chat/completions", data=body, headers=auth)
        assert response.headers["x-azproxy-deployment"] == model
    found = samples(await (await proxy.get("/metrics", headers=auth)).text())
    shown = {
        dict(labels)["deployment"]
        for name, labels in found
        if name.startswith(("azproxy_deployment_", "azproxy_cooldowns"))
    }
    assert shown == {"dep-a", "real-guess"}
    labels = {"endpoint": "fake", "deployment": "real-guess"}
    assert sample(found, "azproxy_deployment_remaining_requests", **labels) == 7
    state = sample(found, "azproxy_deployment_state", **labels, state="healthy")
    assert state == 1.0

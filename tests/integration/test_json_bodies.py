"""JSON bodies azproxy reads: bounded before they are parsed, refused when they
name two models or arrive compressed, and edited only at the model's bytes."""

from __future__ import annotations

import gzip
import json
import logging
from typing import Any

import pytest
from pytest_aiohttp import AiohttpClient

from azproxy import Config, create_app
from azproxy.relay import jsonbody, request_body
from azproxy.settings.server_side import (
    parse_access_keys,
    parse_endpoints,
    parse_model_map,
)
from tests.conftest import AZURE_KEY, BEARER, ProxyFactory
from tests.fakes import FakeAzure

MAPPED = {
    "Authorization": f"Bearer myresource:gpt-4o|dep-4o,gpt-4o-mini|dep-mini:{AZURE_KEY}"
}
V1 = {"Authorization": f"Bearer myresource:gpt-4o|dep-4o:{AZURE_KEY}:v1"}
CHAT = "/v1/chat/completions"
LIMITED_KEY = "limited-key-0123456789abc"


def chat(extra: str = "") -> bytes:
    return (
        '{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]' + extra + "}"
    ).encode()


async def error_of(response: Any) -> dict[str, Any]:
    error = (await response.json())["error"]
    assert isinstance(error, dict)
    return error


@pytest.mark.parametrize(
    ("setting", "value", "body"),
    [
        ("max_json_depth", 3, chat(',"a":[[[1]]]')),
        ("max_json_containers", 5, chat(',"a":[[],[],[]]')),
        ("max_json_values", 10, chat(',"a":[1,2,3,4,5,6,7,8,9]')),
    ],
)
async def test_each_structure_bound_is_a_400_naming_its_setting(
    proxy_for: ProxyFactory,
    fake_azure: FakeAzure,
    setting: str,
    value: int,
    body: bytes,
) -> None:
    proxy = await proxy_for(**{setting: value})
    response = await proxy.post(CHAT, data=body, headers=MAPPED)
    assert response.status == 400
    error = await error_of(response)
    assert error["code"] == "body_too_complex"
    assert setting in error["message"]
    assert fake_azure.requests == []
    # One level, container or value less is accepted.
    polite = await proxy.post(CHAT, data=chat(), headers=MAPPED)
    assert polite.status == 200


async def test_a_body_100000_deep_is_a_400_not_a_traceback(
    proxy: Any, fake_azure: FakeAzure, caplog: pytest.LogCaptureFixture
) -> None:
    body = b'{"model":"gpt-4o","a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with caplog.at_level(logging.ERROR):
        response = await proxy.post(CHAT, data=body, headers=MAPPED)
    assert response.status == 400
    assert (await error_of(response))["code"] == "body_too_complex"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert fake_azure.requests == []


async def test_the_bomb_is_refused_before_anything_parses_it(
    proxy: Any, fake_azure: FakeAzure, monkeypatch: pytest.MonkeyPatch
) -> None:
    scanned: list[int] = []
    scan = jsonbody._scan_value

    def spy(text: str, at: int) -> tuple[object, int]:
        scanned.append(at)
        return scan(text, at)

    monkeypatch.setattr(jsonbody, "_scan_value", spy)
    bomb = b'{"model":"gpt-4o","x":[' + b"[]," * 200_000 + b"[]]}"
    response = await proxy.post(CHAT, data=bomb, headers=MAPPED)
    assert response.status == 400
    error = await error_of(response)
    assert error["code"] == "body_too_complex"
    assert "max_json_containers" in error["message"]
    assert scanned == []
    assert fake_azure.requests == []
    response = await proxy.post(CHAT, data=chat(), headers=MAPPED)
    assert response.status == 200
    assert scanned  # the spy does see a body that is parsed


async def test_a_single_deployment_token_parses_nothing(
    proxy: Any, fake_azure: FakeAzure, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: object) -> None:
        raise AssertionError("the body was parsed")

    monkeypatch.setattr(request_body, "read_object", fail)
    body = b'{"model": "x", "model": "y", "a": [[[[[[]]]]]]}'
    response = await proxy.post(CHAT, data=body, headers=BEARER)
    assert response.status == 200
    assert fake_azure.last.body == body


async def test_v1_changes_only_the_bytes_of_the_model(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    head = '{ "messages" : [ {"role":"user","content":"caf\\u00e9 \u00e9\U0001f600"} ],'
    tail = ' , "temperature":0.5,"x":"\\"model\\": \\"no\\"" }'
    body = (head + '\n  "model" :  "gpt-4o"' + tail).encode()
    response = await proxy.post(CHAT, data=body, headers=V1)
    assert response.status == 200
    expected = (head + '\n  "model" :  "dep-4o"' + tail).encode()
    assert fake_azure.last.body == expected
    assert fake_azure.last.headers["Content-Length"] == str(len(expected))


async def test_v1_adds_the_model_first_when_the_body_has_none(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    body = b'{"messages": [],\n "n": 1}'
    response = await proxy.post(CHAT, data=body, headers=V1)
    assert response.status == 200
    assert fake_azure.last.body == b'{"model":"dep-4o","messages": [],\n "n": 1}'


async def test_a_resource_call_changes_only_the_bytes_of_the_model(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    body = b'{"input": "h\\u00e9llo",  "tools": [ ],"model":"gpt-4o-mini"}'
    response = await proxy.post("/v1/responses", data=body, headers=MAPPED)
    assert response.status == 200
    assert fake_azure.last.body == body.replace(b'"gpt-4o-mini"', b'"dep-mini"')


TWO_MODELS = [
    b'{"model": "gpt-4o-mini", "messages": [], "model": "gpt-4o"}',
    b'{"model": "gpt-4o-mini", "messages": [], "mod\\u0065l": "gpt-4o"}',
]


@pytest.mark.parametrize("body", TWO_MODELS, ids=["twice", "escaped"])
@pytest.mark.parametrize(
    ("headers", "path"),
    [(MAPPED, CHAT), (V1, CHAT), (MAPPED, "/v1/responses")],
    ids=["mapped", "v1", "resource"],
)
async def test_two_top_level_models_are_ambiguous(
    proxy: Any, fake_azure: FakeAzure, headers: dict[str, str], path: str, body: bytes
) -> None:
    response = await proxy.post(path, data=body, headers=headers)
    assert response.status == 400
    error = await error_of(response)
    assert error["code"] == "ambiguous_model" and error["param"] == "model"
    assert fake_azure.requests == []


async def test_a_key_limited_to_one_model_cannot_name_another_twice(
    aiohttp_client: AiohttpClient, fake_azure: FakeAzure
) -> None:
    config = Config(
        endpoints=parse_endpoints(
            {"e": {"url": fake_azure.url, "api_key": AZURE_KEY}}, {}
        ),
        model_map=parse_model_map({"gpt-4o": "e/dep-4o", "gpt-4o-mini": "e/mini"}),
        access_keys=parse_access_keys(
            [{"key": LIMITED_KEY, "models": ["gpt-4o-mini"]}], {}
        ),
    )
    proxy = await aiohttp_client(create_app(config))
    response = await proxy.post(
        CHAT,
        data=TWO_MODELS[1],
        headers={"Authorization": f"Bearer {LIMITED_KEY}"},
    )
    assert response.status == 400
    assert (await error_of(response))["code"] == "ambiguous_model"
    assert fake_azure.requests == []


async def test_a_model_inside_the_body_is_not_a_second_model(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    body = b'{"model": "gpt-4o", "metadata": {"model": "gpt-4o-mini"}}'
    response = await proxy.post(CHAT, data=body, headers=MAPPED)
    assert response.status == 200
    assert fake_azure.last.path == "/openai/deployments/dep-4o/chat/completions"


@pytest.mark.parametrize(
    ("headers", "path"),
    [
        (BEARER, CHAT),
        (MAPPED, CHAT),
        (MAPPED, "/v1/responses"),
        (BEARER, "/v1/batches"),
    ],
    ids=["not-parsed", "parsed", "resource", "resource-not-parsed"],
)
async def test_a_compressed_json_body_is_415(
    proxy: Any, fake_azure: FakeAzure, headers: dict[str, str], path: str
) -> None:
    response = await proxy.post(
        path,
        data=gzip.compress(chat()),
        headers=headers
        | {"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert response.status == 415
    assert (await error_of(response))["code"] == "unsupported_content_encoding"
    assert fake_azure.requests == []


async def test_identity_is_no_encoding(proxy: Any, fake_azure: FakeAzure) -> None:
    response = await proxy.post(
        CHAT, data=chat(), headers=MAPPED | {"Content-Encoding": "identity"}
    )
    assert response.status == 200
    assert json.loads(fake_azure.last.body)["model"] == "gpt-4o"

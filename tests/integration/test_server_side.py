"""Server-side credentials: access keys, model map, limits, no open relay."""

from __future__ import annotations

import hmac
import json
from typing import Any

import pytest
from pytest_aiohttp import AiohttpClient, AiohttpServer

from azproxy import Config, create_app
from azproxy.settings.server_side import (
    parse_access_keys,
    parse_endpoints,
    parse_model_map,
)
from tests.conftest import AZURE_KEY, TOKEN
from tests.fakes import FakeAzure, json_answer

TEAM_KEY = "team-key-0123456789abcdef"
LIMITED_KEY = "limited-key-0123456789abc"
EAST_KEY = "east-secret-key-0000000000"


@pytest.fixture
async def east_azure(aiohttp_server: AiohttpServer) -> FakeAzure:
    fake = FakeAzure()
    server = await aiohttp_server(fake.app())
    fake.url = str(server.make_url("")).rstrip("/")
    return fake


def server_config(
    fake: FakeAzure, east: FakeAzure | None = None, **overrides: Any
) -> Config:
    endpoints: dict[str, Any] = {"sweden": {"url": fake.url, "api_key": AZURE_KEY}}
    model_map: dict[str, Any] = {
        "gpt-4o": "sweden/dep-4o",
        "gpt-4o-mini": "sweden/mini",
    }
    if east is not None:
        endpoints["east"] = {"url": east.url, "api_key": EAST_KEY, "api_version": "v1"}
        model_map["o3"] = "east/o3-deploy"
    values: dict[str, Any] = {
        "endpoints": parse_endpoints(endpoints, {}),
        "model_map": parse_model_map(model_map),
        "access_keys": parse_access_keys(
            [
                TEAM_KEY,
                {"key": LIMITED_KEY, "name": "limited", "models": ["gpt-4o-mini"]},
            ],
            {},
        ),
        "retry_delay_s": 0.01,
    }
    return Config(**(values | overrides))


@pytest.fixture
async def server_proxy(
    aiohttp_client: AiohttpClient, fake_azure: FakeAzure, east_azure: FakeAzure
) -> Any:
    return await aiohttp_client(create_app(server_config(fake_azure, east_azure)))


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def chat(model: str) -> bytes:
    return json.dumps({"model": model, "messages": []}).encode()


async def test_access_key_reaches_the_mapped_deployment_with_the_servers_key(
    server_proxy: Any, fake_azure: FakeAzure
) -> None:
    response = await server_proxy.post(
        "/v1/chat/completions", data=chat("gpt-4o"), headers=bearer(TEAM_KEY)
    )
    assert response.status == 200
    assert response.headers["x-azproxy-deployment"] == "dep-4o"
    sent = fake_azure.last
    assert sent.path == "/openai/deployments/dep-4o/chat/completions"
    assert sent.headers["api-key"] == AZURE_KEY
    assert TEAM_KEY not in str(dict(sent.headers))
    assert sent.body == chat("gpt-4o")


async def test_api_key_header_works_as_access_key(
    server_proxy: Any, fake_azure: FakeAzure
) -> None:
    response = await server_proxy.post(
        "/v1/embeddings", data=chat("gpt-4o-mini"), headers={"api-key": TEAM_KEY}
    )
    assert response.status == 200
    assert fake_azure.last.path == "/openai/deployments/mini/embeddings"


async def test_models_on_a_v1_endpoint_get_the_deployment_as_model(
    server_proxy: Any, east_azure: FakeAzure
) -> None:
    response = await server_proxy.post(
        "/v1/chat/completions", data=chat("o3"), headers=bearer(TEAM_KEY)
    )
    assert response.status == 200
    sent = east_azure.last
    assert sent.path == "/openai/v1/chat/completions"
    assert "api-version" not in sent.query
    assert json.loads(sent.body)["model"] == "o3-deploy"
    assert sent.headers["api-key"] == EAST_KEY


@pytest.mark.parametrize(
    "headers",
    [
        {},
        bearer("wrong-key-0123456789abcdef"),
        bearer(TEAM_KEY[:-1]),
        bearer(TOKEN),  # pass-through tokens are off with server-side credentials
        {"api-key": ""},
    ],
)
async def test_no_valid_access_key_is_401_and_never_reaches_azure(
    server_proxy: Any, fake_azure: FakeAzure, east_azure: FakeAzure, headers: Any
) -> None:
    response = await server_proxy.post(
        "/v1/chat/completions", data=chat("gpt-4o"), headers=headers
    )
    assert response.status == 401
    error = (await response.json())["error"]
    assert error["code"] == "invalid_api_key"
    assert "access key" in error["message"]
    assert fake_azure.requests == [] and east_azure.requests == []


@pytest.mark.parametrize("passthrough", [None, False])
async def test_a_pass_through_token_is_told_why_it_is_refused(
    aiohttp_client: AiohttpClient, fake_azure: FakeAzure, passthrough: bool | None
) -> None:
    proxy = await aiohttp_client(
        create_app(server_config(fake_azure, passthrough=passthrough))
    )
    for token in (TOKEN, f"{TOKEN}:2024-10-21"):
        response = await proxy.post(
            "/v1/chat/completions", data=chat("gpt-4o"), headers=bearer(token)
        )
        assert response.status == 401
        message = (await response.json())["error"]["message"]
        assert "pass-through tokens are" in message
        assert "passthrough = true" in message
        assert AZURE_KEY not in message and "myresource" not in message
    assert fake_azure.requests == []
    # Anything else is just not an access key.
    response = await proxy.post(
        "/v1/chat/completions", data=chat("gpt-4o"), headers=bearer("wrong")
    )
    assert (await response.json())["error"]["message"] == "Invalid azproxy access key."


async def test_access_keys_are_compared_in_constant_time_with_every_key(
    server_proxy: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    response = await server_proxy.get("/v1/models", headers=bearer(TEAM_KEY))
    assert response.status == 200
    # Both configured keys were compared, although the first one matched.
    assert sorted(a for a, _ in compared) == sorted(
        [TEAM_KEY.encode(), LIMITED_KEY.encode()]
    )
    assert all(b == TEAM_KEY.encode() for _, b in compared)


async def test_a_limited_key_gets_403_outside_its_models(
    server_proxy: Any, fake_azure: FakeAzure
) -> None:
    denied = await server_proxy.post(
        "/v1/chat/completions", data=chat("gpt-4o"), headers=bearer(LIMITED_KEY)
    )
    assert denied.status == 403
    assert (await denied.json())["error"]["code"] == "model_not_allowed"
    assert fake_azure.requests == []
    allowed = await server_proxy.post(
        "/v1/chat/completions", data=chat("gpt-4o-mini"), headers=bearer(LIMITED_KEY)
    )
    assert allowed.status == 200


async def test_models_lists_what_the_key_may_use(server_proxy: Any) -> None:
    everything = await server_proxy.get("/v1/models", headers=bearer(TEAM_KEY))
    ids = [m["id"] for m in (await everything.json())["data"]]
    assert ids == ["gpt-4o", "gpt-4o-mini", "o3"]
    limited = await server_proxy.get("/v1/models", headers=bearer(LIMITED_KEY))
    assert [m["id"] for m in (await limited.json())["data"]] == ["gpt-4o-mini"]


async def test_unmapped_model_is_400_naming_the_mapped_ones(
    server_proxy: Any, fake_azure: FakeAzure
) -> None:
    response = await server_proxy.post(
        "/v1/chat/completions", data=chat("gpt-5"), headers=bearer(TEAM_KEY)
    )
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["code"] == "model_not_found"
    assert "gpt-4o, gpt-4o-mini, o3" in error["message"]
    assert fake_azure.requests == []


async def test_passthrough_can_be_enabled_beside_access_keys(
    aiohttp_client: AiohttpClient, fake_azure: FakeAzure
) -> None:
    proxy = await aiohttp_client(
        create_app(server_config(fake_azure, passthrough=True, upstream=fake_azure.url))
    )
    with_token = await proxy.post(
        "/v1/chat/completions", data=chat("x"), headers=bearer(TOKEN)
    )
    assert with_token.status == 200
    assert fake_azure.last.path == "/openai/deployments/dep1/chat/completions"
    with_key = await proxy.post(
        "/v1/chat/completions", data=chat("gpt-4o"), headers=bearer(TEAM_KEY)
    )
    assert with_key.status == 200


async def test_anonymous_only_when_allowed_explicitly(
    aiohttp_client: AiohttpClient, fake_azure: FakeAzure
) -> None:
    proxy = await aiohttp_client(
        create_app(server_config(fake_azure, access_keys=(), allow_anonymous=True))
    )
    response = await proxy.post("/v1/chat/completions", data=chat("gpt-4o"))
    assert response.status == 200
    assert fake_azure.last.headers["api-key"] == AZURE_KEY


async def test_deployment_not_found_gets_a_hint_naming_what_was_used(
    server_proxy: Any, fake_azure: FakeAzure, caplog: pytest.LogCaptureFixture
) -> None:
    azure_message = "The API deployment for this resource does not exist."
    fake_azure.queue(
        json_answer(
            {"error": {"code": "DeploymentNotFound", "message": azure_message}},
            status=404,
        )
    )
    response = await server_proxy.post(
        "/v1/chat/completions", data=chat("gpt-4o"), headers=bearer(TEAM_KEY)
    )
    assert response.status == 404
    error = (await response.json())["error"]
    assert error["code"] == "DeploymentNotFound"
    assert error["message"].startswith(azure_message)
    assert "deployment 'dep-4o' on endpoint 'sweden'" in error["message"]
    # The endpoint's URL is server configuration: the log has it, not the client.
    assert fake_azure.url not in await response.text()
    hints = [r for r in caplog.records if "DeploymentNotFound" in r.getMessage()]
    assert len(hints) == 1
    assert hints[0].levelname == "WARNING"
    assert fake_azure.url in hints[0].getMessage()
    assert "'dep-4o'" in hints[0].getMessage()


AZURE_401 = {
    "error": {
        "code": "401",
        "message": "Access denied due to invalid subscription key or wrong API "
        "endpoint.",
    }
}
PERMISSION_DENIED = {
    "error": {
        "code": "PermissionDenied",
        "message": "The principal `0000` lacks the required data action.",
    }
}


async def test_azure_refusing_the_servers_key_is_502_naming_the_endpoint(
    server_proxy: Any, fake_azure: FakeAzure, caplog: pytest.LogCaptureFixture
) -> None:
    fake_azure.queue(json_answer(AZURE_401, status=401))
    response = await server_proxy.post(
        "/v1/chat/completions", data=chat("gpt-4o"), headers=bearer(TEAM_KEY)
    )
    # Not 401: the client's access key is valid (the SDK would raise
    # AuthenticationError at it).
    assert response.status == 502
    error = (await response.json())["error"]
    assert error["code"] == "upstream_auth_failed"
    assert "endpoint 'sweden' (HTTP 401)" in error["message"]
    assert "api_key" in error["message"]
    text = await response.text()
    assert fake_azure.url not in text and AZURE_KEY not in text
    assert response.headers["x-request-id"] == "apim-0001"  # Azure's, for support
    (logged,) = [r for r in caplog.records if "refused the api-key" in r.message]
    assert fake_azure.url in logged.message and "Access denied" in logged.message
    assert AZURE_KEY not in caplog.text


async def test_a_refused_key_fails_over_to_an_endpoint_whose_key_works(
    aiohttp_client: AiohttpClient, fake_azure: FakeAzure, east_azure: FakeAzure
) -> None:
    # sweden's api_key is wrong; east's is right. Both serve gpt-4o, sweden
    # first: the client gets east's answer, and sweden's breaker learns.
    config = server_config(
        fake_azure,
        east_azure,
        model_map=parse_model_map(
            {
                "gpt-4o": [
                    {"endpoint": "sweden", "deployment": "dep-4o", "priority": 1},
                    {"endpoint": "east", "deployment": "dep-east", "priority": 2},
                ],
                "gpt-4o-mini": "sweden/mini",
            }
        ),
        breaker_failures=1,
    )
    proxy = await aiohttp_client(create_app(config))
    fake_azure.queue(json_answer(AZURE_401, status=401))
    east_azure.queue(json_answer({"id": "from-east"}))
    response = await proxy.post(
        "/v1/chat/completions", data=chat("gpt-4o"), headers=bearer(TEAM_KEY)
    )
    assert response.status == 200
    assert await response.json() == {"id": "from-east"}
    assert response.headers["x-azproxy-deployment"] == "dep-east"
    assert [r.headers["api-key"] for r in fake_azure.requests] == [AZURE_KEY]
    assert [r.headers["api-key"] for r in east_azure.requests] == [EAST_KEY]
    # Its breaker is open now: the next request goes to east alone.
    east_azure.queue(json_answer({"id": "east-again"}))
    response = await proxy.post(
        "/v1/chat/completions", data=chat("gpt-4o"), headers=bearer(TEAM_KEY)
    )
    assert await response.json() == {"id": "east-again"}
    assert len(fake_azure.requests) == 1


async def test_permission_denied_to_a_token_names_the_missing_role(
    aiohttp_client: AiohttpClient, fake_azure: FakeAzure
) -> None:
    endpoints = parse_endpoints({"east": {"url": fake_azure.url, "ad_token": "t"}}, {})
    config = server_config(
        fake_azure,
        endpoints=endpoints,
        model_map=parse_model_map("gpt-4o=dep,gpt-4o-mini=mini"),
    )
    proxy = await aiohttp_client(create_app(config))
    fake_azure.queue(json_answer(PERMISSION_DENIED, status=403))
    response = await proxy.post(
        "/v1/chat/completions", data=chat("gpt-4o"), headers=bearer(TEAM_KEY)
    )
    assert response.status == 502
    error = (await response.json())["error"]
    assert error["code"] == "upstream_auth_failed"
    assert "endpoint 'east' (HTTP 403)" in error["message"]
    assert "'Cognitive Services OpenAI User' role" in error["message"]


async def test_other_refusals_keep_azures_answer(
    server_proxy: Any, proxy: Any, fake_azure: FakeAzure
) -> None:
    # An api-key's 403 (network rules, say) is relayed as Azure sent it.
    fake_azure.queue(json_answer(PERMISSION_DENIED, status=403))
    response = await server_proxy.post(
        "/v1/chat/completions", data=chat("gpt-4o"), headers=bearer(TEAM_KEY)
    )
    assert response.status == 403
    assert await response.json() == PERMISSION_DENIED
    # A pass-through token's key is the client's own: its 401 is the client's.
    fake_azure.queue(json_answer(AZURE_401, status=401))
    response = await proxy.post(
        "/v1/chat/completions", data=chat("gpt-4o"), headers=bearer(TOKEN)
    )
    assert response.status == 401
    assert await response.json() == AZURE_401


async def test_failing_over_is_said_only_where_there_is_somewhere_to_go(
    aiohttp_client: AiohttpClient,
    server_proxy: Any,
    fake_azure: FakeAzure,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake_azure.queue(json_answer({"error": {"code": "InternalError"}}, status=500))
    response = await server_proxy.post(
        "/v1/chat/completions", data=chat("gpt-4o"), headers=bearer(TEAM_KEY)
    )
    assert response.status == 500  # gpt-4o has one deployment: Azure's answer
    assert len(fake_azure.requests) == 1
    messages = [r.message for r in caplog.records]
    assert (
        "deployment sweden/dep-4o answered 500; no other deployment to fail over to"
        in messages
    )
    assert not any("failing over" in m for m in messages)
    # With a second deployment, it is.
    config = server_config(
        fake_azure,
        model_map=parse_model_map(
            {"gpt-4o": ["sweden/dep-4o", "sweden/dep-b"], "gpt-4o-mini": "sweden/m"}
        ),
    )
    proxy = await aiohttp_client(create_app(config))
    caplog.clear()
    fake_azure.queue(json_answer({"error": {"code": "InternalError"}}, status=500))
    response = await proxy.post(
        "/v1/chat/completions", data=chat("gpt-4o"), headers=bearer(TEAM_KEY)
    )
    assert response.status == 200
    (said,) = caplog.messages  # whichever of the two was tried first
    assert said.endswith(" answered 500; failing over")


async def test_model_fallback_tries_the_name_then_the_dotless_name(
    aiohttp_client: AiohttpClient, fake_azure: FakeAzure
) -> None:
    config = server_config(fake_azure, model_fallback=True)
    proxy = await aiohttp_client(create_app(config))
    not_found = {"error": {"code": "DeploymentNotFound", "message": "no"}}
    fake_azure.queue(json_answer(not_found, status=404))
    response = await proxy.post(
        "/v1/chat/completions", data=chat("gpt-3.5-turbo"), headers=bearer(TEAM_KEY)
    )
    assert response.status == 200
    assert response.headers["x-azproxy-deployment"] == "gpt-35-turbo"
    assert [r.path for r in fake_azure.requests] == [
        "/openai/deployments/gpt-3.5-turbo/chat/completions",
        "/openai/deployments/gpt-35-turbo/chat/completions",
    ]
    # The explicit map still wins over the fallback.
    await proxy.post(
        "/v1/chat/completions", data=chat("gpt-4o"), headers=bearer(TEAM_KEY)
    )
    assert fake_azure.last.path == "/openai/deployments/dep-4o/chat/completions"


async def test_static_ad_token_is_sent_as_bearer(
    aiohttp_client: AiohttpClient, fake_azure: FakeAzure
) -> None:
    endpoints = parse_endpoints(
        {"e": {"url": fake_azure.url, "ad_token": "eyJ.tok"}}, {}
    )
    config = server_config(
        fake_azure,
        endpoints=endpoints,
        model_map=parse_model_map("gpt-4o=dep,gpt-4o-mini=mini"),
    )
    proxy = await aiohttp_client(create_app(config))
    response = await proxy.post(
        "/v1/chat/completions", data=chat("gpt-4o"), headers=bearer(TEAM_KEY)
    )
    assert response.status == 200
    assert fake_azure.last.headers["Authorization"] == "Bearer eyJ.tok"
    assert "api-key" not in fake_azure.last.headers


async def test_resource_calls_go_to_the_first_endpoint_with_its_key(
    server_proxy: Any, fake_azure: FakeAzure, east_azure: FakeAzure
) -> None:
    response = await server_proxy.get("/v1/files?limit=3", headers=bearer(TEAM_KEY))
    assert response.status == 200
    sent = fake_azure.last
    assert sent.path == "/openai/files"
    assert list(sent.query.items()) == [("limit", "3"), ("api-version", "2024-10-21")]
    assert sent.headers["api-key"] == AZURE_KEY
    assert TEAM_KEY not in str(dict(sent.headers))
    response = await server_proxy.post(
        "/v1/responses",
        json={"model": "gpt-4o", "input": "hi"},
        headers=bearer(TEAM_KEY),
    )
    assert response.status == 200
    assert response.headers["x-azproxy-deployment"] == "dep-4o"
    assert json.loads(fake_azure.last.body) == {"model": "dep-4o", "input": "hi"}
    assert east_azure.requests == []


async def test_a_limited_key_cannot_reach_other_models_through_responses(
    server_proxy: Any, fake_azure: FakeAzure
) -> None:
    response = await server_proxy.post(
        "/v1/responses",
        json={"model": "gpt-4o", "input": "hi"},
        headers=bearer(LIMITED_KEY),
    )
    assert response.status == 403
    assert fake_azure.requests == []


async def test_resource_calls_without_an_endpoint_say_so(
    aiohttp_client: AiohttpClient, fake_azure: FakeAzure
) -> None:
    config = Config(
        upstream=fake_azure.url,
        access_keys=parse_access_keys([TEAM_KEY], {}),
        passthrough=True,
    )
    proxy = await aiohttp_client(create_app(config))
    response = await proxy.get("/v1/files", headers=bearer(TEAM_KEY))
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "no_endpoint"
    assert fake_azure.requests == []


async def test_a_key_limited_to_models_may_not_use_resource_apis(
    server_proxy: Any, fake_azure: FakeAzure
) -> None:
    # A batch's input file can name any deployment: a limited key could use
    # files and batches to reach models it is not allowed.
    for method, path in (("GET", "/v1/files"), ("POST", "/v1/batches")):
        response = await server_proxy.request(
            method, path, data=b"{}", headers=bearer(LIMITED_KEY)
        )
        assert response.status == 403
        assert (await response.json())["error"]["code"] == "resource_api_not_allowed"
    assert fake_azure.requests == []
    allowed = await server_proxy.get("/v1/files", headers=bearer(TEAM_KEY))
    assert allowed.status == 200


async def test_a_resource_call_for_a_model_not_on_the_resource_endpoint_is_400(
    server_proxy: Any, fake_azure: FakeAzure, east_azure: FakeAzure
) -> None:
    # Resource calls go to the first endpoint (sweden); o3 lives only on east.
    response = await server_proxy.post(
        "/v1/responses",
        json={"model": "o3", "input": "hi"},
        headers=bearer(TEAM_KEY),
    )
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["code"] == "model_not_on_resource_endpoint"
    assert "'sweden'" in error["message"]
    assert fake_azure.requests == [] and east_azure.requests == []


async def test_model_fallback_with_no_valid_name_is_400(
    aiohttp_client: AiohttpClient, fake_azure: FakeAzure
) -> None:
    proxy = await aiohttp_client(
        create_app(server_config(fake_azure, model_fallback=True))
    )
    response = await proxy.post(
        "/v1/chat/completions", data=chat("my model/x"), headers=bearer(TEAM_KEY)
    )
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "model_not_found"
    assert fake_azure.requests == []


async def test_undecodable_credential_bytes_are_401_not_500(
    server_proxy: Any, fake_azure: FakeAzure
) -> None:
    import asyncio

    port = server_proxy.server.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer k\xff\xfe\r\nContent-Length: 2\r\n\r\n{}"
    )
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    assert status_line.startswith(b"HTTP/1.1 401")
    assert fake_azure.requests == []

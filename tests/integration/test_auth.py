"""Credentials are checked before any network call; no open relay."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import AZURE_KEY, BEARER
from tests.fakes import FakeAzure

BODY = b'{"model": "gpt-4o", "messages": []}'


@pytest.mark.parametrize(
    "token",
    [
        f"evil.com:dep:{AZURE_KEY}",
        f"evil.com/x:dep:{AZURE_KEY}",
        f"user@evil:dep:{AZURE_KEY}",
        f"res%2e:dep:{AZURE_KEY}",
        f"-res:dep:{AZURE_KEY}",
        f"res-:dep:{AZURE_KEY}",
        f"{'a' * 65}:dep:{AZURE_KEY}",
        f"127.0.0.1:dep:{AZURE_KEY}",
        f"res:../../x:{AZURE_KEY}",
        f"res:.hidden:{AZURE_KEY}",
        f"res:dep/x:{AZURE_KEY}",
        f"res:dep?x=1:{AZURE_KEY}",
        f"res:{'d' * 65}:{AZURE_KEY}",
        f"res:dep:{AZURE_KEY}:2024-10-21&x=1",
        f"res:dep:{AZURE_KEY}:latest",
        f"res:dep:{AZURE_KEY}:\u0662\u0660\u0662\u0664-10-21",  # Arabic-Indic digits
        "res:dep:",
        "res:dep",
        f"res:a|b,c:{AZURE_KEY}",
        "just-a-key",
    ],
)
async def test_malformed_credentials_are_401_before_any_network_call(
    proxy: Any, fake_azure: FakeAzure, token: str
) -> None:
    response = await proxy.post(
        "/v1/chat/completions", data=BODY, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status == 401
    body = await response.json()
    assert body["error"]["code"] == "invalid_api_key"
    assert body["error"]["type"] == "invalid_request_error"
    assert AZURE_KEY not in await response.text()
    assert fake_azure.requests == []


async def test_missing_credentials_are_401(proxy: Any, fake_azure: FakeAzure) -> None:
    response = await proxy.post("/v1/chat/completions", data=BODY)
    assert response.status == 401
    assert "Authorization" in (await response.json())["error"]["message"]
    assert fake_azure.requests == []


async def test_error_messages_never_echo_the_token(proxy: Any) -> None:
    # A misordered token puts the key where the resource name belongs.
    token = f"{AZURE_KEY}.x:dep:res"
    response = await proxy.post(
        "/v1/chat/completions", data=BODY, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status == 401
    assert AZURE_KEY not in await response.text()


async def test_the_endpoint_url_as_the_resource_is_recognised(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    token = f"https://myres.openai.azure.com:dep:{AZURE_KEY}"
    response = await proxy.post(
        "/v1/chat/completions", data=BODY, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status == 401
    message = (await response.json())["error"]["message"]
    assert "use the resource name, not the URL" in message
    assert "API version" not in message
    assert AZURE_KEY not in message and "myres" not in message
    assert fake_azure.requests == []


async def test_healthz_needs_no_credentials(proxy: Any) -> None:
    response = await proxy.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


async def test_models_lists_the_clients_map(proxy: Any) -> None:
    token = f"res:gpt-4o|dep1,gpt-4o-mini|dep2:{AZURE_KEY}"
    response = await proxy.get(
        "/v1/models", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status == 200
    listing = await response.json()
    assert listing["object"] == "list"
    assert [m["id"] for m in listing["data"]] == ["gpt-4o", "gpt-4o-mini"]
    assert all(m["object"] == "model" for m in listing["data"])


async def test_models_of_a_single_deployment_token(proxy: Any) -> None:
    response = await proxy.get("/v1/models", headers=BEARER)
    assert [m["id"] for m in (await response.json())["data"]] == ["dep1"]


async def test_model_retrieve(proxy: Any) -> None:
    token = f"res:gpt-4o|dep1:{AZURE_KEY}"
    auth = {"Authorization": f"Bearer {token}"}
    found = await proxy.get("/v1/models/gpt-4o", headers=auth)
    assert (await found.json())["id"] == "gpt-4o"
    missing = await proxy.get("/v1/models/gpt-5", headers=auth)
    assert missing.status == 404
    assert (await missing.json())["error"]["code"] == "model_not_found"


async def test_models_need_credentials(proxy: Any) -> None:
    response = await proxy.get("/v1/models")
    assert response.status == 401


async def test_readyz_is_ready_once_started(proxy: Any) -> None:
    response = await proxy.get("/readyz")
    assert response.status == 200
    assert await response.json() == {"status": "ready"}

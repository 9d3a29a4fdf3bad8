"""Each endpoint family reaches Azure where Azure serves it (families.py),
whatever version the token or settings name; overrides apply; the client's
`api-key` query parameter never reaches Azure."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pytest_aiohttp import AiohttpClient

from azproxy import Config, create_app
from azproxy.relay.families import LATEST_PREVIEW
from azproxy.settings.server_side import (
    parse_access_keys,
    parse_endpoints,
    parse_model_map,
)
from tests.conftest import AZURE_KEY, BEARER, TOKEN, ProxyFactory
from tests.fakes import FakeAzure
from tests.forms import CONTENT_TYPE, field, file_part, form


@pytest.mark.parametrize(
    ("path", "azure_path", "version"),
    [
        ("/v1/chat/completions", "/openai/deployments/dep1/chat/completions", None),
        ("/v1/completions", "/openai/deployments/dep1/completions", None),
        ("/v1/embeddings", "/openai/deployments/dep1/embeddings", None),
        (
            "/v1/images/generations",
            "/openai/deployments/dep1/images/generations",
            None,
        ),
        # 2024-10-21 has no speech: the latest preview serves it.
        ("/v1/audio/speech", "/openai/deployments/dep1/audio/speech", LATEST_PREVIEW),
    ],
)
@pytest.mark.parametrize("named", [False, True])
async def test_deployment_families_with_the_default_version(
    proxy: Any,
    fake_azure: FakeAzure,
    path: str,
    azure_path: str,
    version: str | None,
    named: bool,
) -> None:
    # The same whether the token names the default version or not.
    auth = {"Authorization": f"Bearer {TOKEN}:2024-10-21"} if named else BEARER
    response = await proxy.post(path, data=b'{"model": "m"}', headers=auth)
    assert response.status == 200
    sent = fake_azure.last
    assert sent.path == azure_path
    assert list(sent.query.items()) == [("api-version", version or "2024-10-21")]
    assert sent.body == b'{"model": "m"}'


async def test_an_image_edit_goes_to_a_version_that_serves_it(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    body = form(field("model", "gpt-image-1"), field("prompt", "p"), file_part())
    response = await proxy.post(
        "/v1/images/edits", data=body, headers=BEARER | {"Content-Type": CONTENT_TYPE}
    )
    assert response.status == 200
    sent = fake_azure.last
    assert sent.path == "/openai/deployments/dep1/images/edits"
    assert list(sent.query.items()) == [("api-version", LATEST_PREVIEW)]
    assert sent.body == body


@pytest.mark.parametrize("token", [TOKEN, f"{TOKEN}:2024-10-21"])
async def test_responses_go_to_the_v1_api_by_default(
    proxy: Any, fake_azure: FakeAzure, token: str
) -> None:
    response = await proxy.post(
        "/v1/responses",
        json={"model": "gpt-4o", "input": "hi"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status == 200
    assert response.headers["x-azproxy-deployment"] == "dep1"
    sent = fake_azure.last
    assert sent.path == "/openai/v1/responses"
    assert list(sent.query.items()) == []
    # On v1 Azure reads the deployment from the body's model.
    assert json.loads(sent.body) == {"model": "dep1", "input": "hi"}
    assert sent.headers["api-key"] == AZURE_KEY


async def test_an_override_sends_responses_to_a_dated_preview(
    proxy_for: ProxyFactory, fake_azure: FakeAzure
) -> None:
    proxy = await proxy_for(family_api_versions={"responses": "2025-04-01-preview"})
    response = await proxy.post(
        "/v1/responses", json={"model": "gpt-4o", "input": "hi"}, headers=BEARER
    )
    assert response.status == 200
    sent = fake_azure.last
    assert sent.path == "/openai/responses"
    assert list(sent.query.items()) == [("api-version", "2025-04-01-preview")]
    assert json.loads(sent.body) == {"model": "dep1", "input": "hi"}


async def test_an_override_to_v1_puts_the_deployment_in_the_body(
    proxy_for: ProxyFactory, fake_azure: FakeAzure
) -> None:
    # A token naming one deployment needs no model to route, but v1 reads it.
    proxy = await proxy_for(family_api_versions={"chat": "v1"})
    response = await proxy.post(
        "/v1/chat/completions",
        json={"model": "gpt-4o", "messages": []},
        headers=BEARER,
    )
    assert response.status == 200
    sent = fake_azure.last
    assert sent.path == "/openai/v1/chat/completions"
    assert list(sent.query.items()) == []
    assert json.loads(sent.body) == {"model": "dep1", "messages": []}
    # Other families keep the table's answer.
    response = await proxy.post(
        "/v1/embeddings", data=b'{"input": "x"}', headers=BEARER
    )
    assert response.status == 200
    assert fake_azure.last.path == "/openai/deployments/dep1/embeddings"
    assert fake_azure.last.body == b'{"input": "x"}'


async def test_assistants_leave_the_v1_api_for_a_preview_that_serves_them(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    v1 = {"Authorization": f"Bearer myresource:gpt-4o|dep-4o:{AZURE_KEY}:v1"}
    response = await proxy.post(
        "/v1/assistants", json={"model": "gpt-4o", "name": "a"}, headers=v1
    )
    assert response.status == 200
    sent = fake_azure.last
    assert sent.path == "/openai/assistants"
    assert list(sent.query.items()) == [("api-version", LATEST_PREVIEW)]
    assert json.loads(sent.body) == {"model": "dep-4o", "name": "a"}
    # The v1 API serves speech only in preview.
    response = await proxy.post(
        "/v1/audio/speech", json={"model": "gpt-4o"}, headers=v1
    )
    assert response.status == 200
    assert fake_azure.last.path == "/openai/v1/audio/speech"
    assert list(fake_azure.last.query.items()) == [("api-version", "preview")]


async def test_server_side_endpoints_follow_the_table_and_overrides(
    aiohttp_client: AiohttpClient, fake_azure: FakeAzure
) -> None:
    key = "team-key-0123456789abcdef"
    config: dict[str, Any] = {
        "endpoints": parse_endpoints(
            {"main": {"url": fake_azure.url, "api_key": AZURE_KEY}}, {}
        ),
        "model_map": parse_model_map({"gpt-4o": "main/dep-4o"}),
        "access_keys": parse_access_keys([key], {}),
        "family_api_versions": {"speech": "v1"},
    }
    proxy = await aiohttp_client(create_app(Config(**config)))
    auth = {"Authorization": f"Bearer {key}"}
    response = await proxy.post(
        "/v1/responses", json={"model": "gpt-4o", "input": "x"}, headers=auth
    )
    assert response.status == 200
    assert fake_azure.last.path == "/openai/v1/responses"
    response = await proxy.post(
        "/v1/audio/speech", json={"model": "gpt-4o"}, headers=auth
    )
    assert response.status == 200
    sent = fake_azure.last
    assert sent.path == "/openai/v1/audio/speech"
    assert list(sent.query.items()) == [("api-version", "preview")]
    assert json.loads(sent.body) == {"model": "dep-4o"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/chat/completions"),
        ("GET", "/v1/files"),
        ("POST", "/v1/responses"),
    ],
)
@pytest.mark.parametrize("name", ["api-key", "API-Key"])
async def test_the_clients_api_key_query_parameter_stays_home(
    proxy: Any, fake_azure: FakeAzure, method: str, path: str, name: str
) -> None:
    body = b'{"model": "gpt-4o", "input": "x"}' if method == "POST" else None
    response = await proxy.request(
        method,
        f"{path}?limit=2&{name}=client-secret-key",
        data=body,
        headers=BEARER,
    )
    assert response.status == 200
    sent = fake_azure.last
    assert ("limit", "2") in list(sent.query.items())
    assert all(k.lower() != "api-key" for k in sent.query)
    assert "client-secret-key" not in sent.query.values()
    assert sent.headers["api-key"] == AZURE_KEY

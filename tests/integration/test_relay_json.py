"""Non-streamed requests: what the client receives and what Azure receives."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import AZURE_KEY, BEARER, TOKEN, ProxyFactory
from tests.fakes import CHAT_JSON, FakeAzure, json_answer, raw_answer

CHAT_BODY = b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}'


async def test_chat_is_mapped_to_the_deployment_and_relayed_byte_for_byte(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    response = await proxy.post(
        "/v1/chat/completions",
        data=CHAT_BODY,
        headers=BEARER | {"Content-Type": "application/json"},
    )
    assert response.status == 200
    assert await response.read() == json.dumps(CHAT_JSON).encode()
    assert response.headers["x-azproxy-deployment"] == "dep1"
    assert response.headers["x-request-id"] == "apim-0001"
    assert response.headers["x-ms-region"] == "Sweden Central"
    assert response.headers["Content-Type"] == "application/json"

    sent = fake_azure.last
    assert sent.method == "POST"
    assert sent.path == "/openai/deployments/dep1/chat/completions"
    assert list(sent.query.items()) == [("api-version", "2024-10-21")]
    assert sent.headers["api-key"] == AZURE_KEY
    assert "Authorization" not in sent.headers
    assert sent.headers["Content-Type"] == "application/json"
    assert sent.body == CHAT_BODY


@pytest.mark.parametrize(
    ("path", "azure_path"),
    [
        ("/v1/completions", "/openai/deployments/dep1/completions"),
        ("/v1/embeddings", "/openai/deployments/dep1/embeddings"),
        ("/v1/images/generations", "/openai/deployments/dep1/images/generations"),
        ("/v1/audio/speech", "/openai/deployments/dep1/audio/speech"),
    ],
)
async def test_deployment_scoped_paths(
    proxy: Any, fake_azure: FakeAzure, path: str, azure_path: str
) -> None:
    response = await proxy.post(path, data=b'{"model": "m"}', headers=BEARER)
    assert response.status == 200
    assert fake_azure.last.path == azure_path
    assert fake_azure.last.body == b'{"model": "m"}'


async def test_model_map_picks_the_deployment_and_falls_back_to_the_first(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    token = f"myresource:gpt-4o|big,gpt-4o-mini|small:{AZURE_KEY}:2024-06-01"
    auth = {"Authorization": f"Bearer {token}"}
    for model, deployment in [
        ("gpt-4o-mini", "small"),
        ("gpt-4o", "big"),
        ("unknown-model", "big"),
    ]:
        body = json.dumps({"model": model, "messages": []}).encode()
        response = await proxy.post("/v1/chat/completions", data=body, headers=auth)
        assert response.status == 200
        assert response.headers["x-azproxy-deployment"] == deployment
        assert (
            fake_azure.last.path == f"/openai/deployments/{deployment}/chat/completions"
        )
        assert fake_azure.last.query["api-version"] == "2024-06-01"
        assert fake_azure.last.body == body


async def test_the_original_proxys_curl_works_unchanged(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    # From the original README: no "Bearer ", a charset in the content type.
    response = await proxy.post(
        "/v1/chat/completions",
        data=CHAT_BODY,
        headers={
            "Authorization": f"{TOKEN}:2023-05-15",
            "Content-Type": "application/json; charset=utf-8",
        },
    )
    assert response.status == 200
    assert fake_azure.last.query["api-version"] == "2023-05-15"
    assert fake_azure.last.headers["Content-Type"] == "application/json; charset=utf-8"
    assert fake_azure.last.headers["api-key"] == AZURE_KEY


async def test_api_key_header_carries_the_token(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    response = await proxy.post(
        "/v1/embeddings", data=b'{"input": "x"}', headers={"api-key": TOKEN}
    )
    assert response.status == 200
    assert fake_azure.last.headers["api-key"] == AZURE_KEY
    assert fake_azure.last.headers.getall("api-key") == [AZURE_KEY]


async def test_client_credentials_identity_and_hop_by_hop_headers_stay_home(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    response = await proxy.post(
        "/v1/chat/completions",
        data=CHAT_BODY,
        headers=BEARER
        | {
            "Cookie": "session=secret",
            "OpenAI-Organization": "org-123",
            "OpenAI-Project": "proj-123",
            "Connection": "keep-alive, X-Private",
            "X-Private": "connection-scoped",
            "Keep-Alive": "timeout=5",
            "Proxy-Authorization": "Basic abc",
            "TE": "trailers",
            "X-Stainless-Lang": "python",
            "OpenAI-Beta": "assistants=v2",
            "User-Agent": "OpenAI/Python 1.0",
        },
    )
    assert response.status == 200
    sent = fake_azure.last.headers
    for name in (
        "Authorization",
        "Cookie",
        "OpenAI-Organization",
        "OpenAI-Project",
        "X-Private",
        "Keep-Alive",
        "Proxy-Authorization",
        "TE",
    ):
        assert name not in sent, name
    assert sent["X-Stainless-Lang"] == "python"
    assert sent["OpenAI-Beta"] == "assistants=v2"
    assert sent["User-Agent"] == "OpenAI/Python 1.0"
    assert sent["api-key"] == AZURE_KEY


async def test_no_invented_headers_reach_azure(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    # skip_auto_headers: aiohttp must not add Accept-Encoding (we relay bytes
    # untouched, so Azure must compress only when the client asked).
    await proxy.post(
        "/v1/chat/completions",
        data=CHAT_BODY,
        headers=BEARER,
        skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type", "Accept"),
    )
    sent = fake_azure.last.headers
    assert "Accept-Encoding" not in sent
    assert "User-Agent" not in sent
    assert "Content-Type" not in sent


async def test_rate_limit_answer_passes_through_with_its_headers(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    error = {"error": {"code": "429", "message": "Rate limit is exceeded."}}
    limits = {
        "retry-after": "7",
        "retry-after-ms": "6500",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-remaining-tokens": "120",
    }
    fake_azure.queue(json_answer(error, status=429, headers=limits))
    response = await proxy.post("/v1/chat/completions", data=CHAT_BODY, headers=BEARER)
    assert response.status == 429
    assert await response.json() == error
    for name, value in limits.items():
        assert response.headers[name] == value
    assert len(fake_azure.requests) == 1  # 4xx is never retried


async def test_binary_answer_is_relayed_byte_for_byte(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    audio = bytes(range(256)) * 64
    fake_azure.queue(raw_answer(audio, "audio/mpeg"))
    response = await proxy.post(
        "/v1/audio/speech",
        data=b'{"model": "tts-1", "input": "hi", "voice": "alloy"}',
        headers=BEARER,
    )
    assert response.status == 200
    assert response.headers["Content-Type"] == "audio/mpeg"
    assert await response.read() == audio


async def test_compressed_answer_keeps_its_encoding(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    import gzip

    packed = gzip.compress(json.dumps(CHAT_JSON).encode())
    fake_azure.queue(
        raw_answer(packed, "application/json", headers={"Content-Encoding": "gzip"})
    )
    response = await proxy.post(
        "/v1/chat/completions",
        data=CHAT_BODY,
        headers=BEARER | {"Accept-Encoding": "gzip"},
        auto_decompress=False,
    )
    assert response.headers["Content-Encoding"] == "gzip"
    assert await response.read() == packed
    assert fake_azure.last.headers["Accept-Encoding"] == "gzip"


async def test_client_query_is_kept_but_api_version_is_azproxys(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    await proxy.post(
        "/v1/chat/completions?api-version=1999-01-01&trace=a%20b",
        data=CHAT_BODY,
        headers=BEARER,
    )
    assert fake_azure.last.query.getall("api-version") == ["2024-10-21"]
    assert fake_azure.last.query["trace"] == "a b"


async def test_v1_api_rewrites_model_to_the_deployment(
    proxy_for: ProxyFactory, fake_azure: FakeAzure
) -> None:
    proxy = await proxy_for()
    token = f"myresource:gpt-4o|dep-4o:{AZURE_KEY}:v1"
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "é"}]}
    response = await proxy.post(
        "/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status == 200
    sent = fake_azure.last
    assert sent.path == "/openai/v1/chat/completions"
    assert "api-version" not in sent.query
    assert json.loads(sent.body) == body | {"model": "dep-4o"}
    assert sent.headers["api-key"] == AZURE_KEY


async def test_upstream_cors_headers_are_replaced_by_azproxys(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    fake_azure.queue(
        json_answer(CHAT_JSON, headers={"Access-Control-Allow-Origin": "https://x"})
    )
    response = await proxy.post(
        "/v1/chat/completions",
        data=CHAT_BODY,
        headers=BEARER | {"Origin": "https://app.example"},
    )
    assert response.headers.getall("Access-Control-Allow-Origin") == ["*"]


async def test_request_id_from_azure_wins_over_apim(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    fake_azure.queue(json_answer(CHAT_JSON, headers={"x-request-id": "req-9"}))
    response = await proxy.post("/v1/chat/completions", data=CHAT_BODY, headers=BEARER)
    assert response.headers.getall("x-request-id") == ["req-9"]

"""Every error azproxy makes itself has OpenAI's shape and the right status."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from tests.conftest import AZURE_KEY, BEARER, ProxyFactory
from tests.fakes import FakeAzure, hang_answer


def assert_openai_error(body: Any, code: str) -> None:
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str)
    assert error["code"] == code
    assert "Traceback" not in error["message"]


async def expect(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status == status
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.headers["x-request-id"]
    body: dict[str, Any] = await response.json()
    assert_openai_error(body, code)
    return body


async def test_401_missing_credentials(proxy: Any) -> None:
    await expect(await proxy.post("/v1/chat/completions"), 401, "invalid_api_key")


async def test_400_non_json_body_when_the_model_is_needed(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    token = f"res:gpt-4o|a,gpt-4o-mini|b:{AZURE_KEY}"
    for body in (b"not json", b"[1, 2]", b""):
        response = await proxy.post(
            "/v1/chat/completions",
            data=body,
            headers={"Authorization": f"Bearer {token}"},
        )
        error = await expect(response, 400, "invalid_request")
        assert error["error"]["param"] == "model"
    assert fake_azure.requests == []


async def test_404_unknown_path(proxy: Any) -> None:
    for path in ("/v1/nothing-here", "/", "/openai/deployments/x/chat/completions"):
        body = await expect(await proxy.post(path, headers=BEARER), 404, "unknown_url")
        assert path in body["error"]["message"]


@pytest.mark.parametrize("path", ["/v1/moderations", "/v1/images/variations"])
async def test_404_endpoints_azure_does_not_have_say_so(proxy: Any, path: str) -> None:
    body = await expect(
        await proxy.post(path, data=b"{}", headers=BEARER), 404, "unsupported_endpoint"
    )
    assert "Azure OpenAI has no" in body["error"]["message"]


async def test_405_wrong_method(proxy: Any) -> None:
    await expect(
        await proxy.get("/v1/chat/completions", headers=BEARER),
        405,
        "method_not_allowed",
    )


async def test_413_body_too_large(
    proxy_for: ProxyFactory, fake_azure: FakeAzure
) -> None:
    proxy = await proxy_for(max_body_mb=0.01)
    body = b'{"model": "x", "pad": "' + b"a" * 20_000 + b'"}'
    response = await proxy.post("/v1/chat/completions", data=body, headers=BEARER)
    error = await expect(response, 413, "request_too_large")
    assert "max_body_mb" in error["error"]["message"]
    assert fake_azure.requests == []


async def test_502_upstream_unreachable(proxy_for: ProxyFactory) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proxy = await proxy_for(upstream=f"http://127.0.0.1:{port}", retries=0)
    await expect(
        await proxy.post("/v1/chat/completions", data=b"{}", headers=BEARER),
        502,
        "upstream_unreachable",
    )


async def test_504_upstream_timeout(
    proxy_for: ProxyFactory, fake_azure: FakeAzure
) -> None:
    proxy = await proxy_for(header_timeout_s=0.1)
    fake_azure.queue(hang_answer())
    await expect(
        await proxy.post("/v1/chat/completions", data=b"{}", headers=BEARER),
        504,
        "upstream_timeout",
    )


async def test_503_while_draining(proxy: Any) -> None:
    from azproxy.front.lifecycle import LIFECYCLE

    proxy.app[LIFECYCLE].draining = True
    response = await proxy.post("/v1/chat/completions", data=b"{}", headers=BEARER)
    await expect(response, 503, "service_unavailable")
    assert response.headers["Retry-After"] == "1"
    assert (await proxy.get("/readyz")).status == 503
    assert (await proxy.get("/healthz")).status == 200


async def test_an_answer_azproxy_made_itself_names_no_deployment(
    proxy_for: ProxyFactory,
) -> None:
    # x-azproxy-deployment names the deployment whose answer the client
    # gets: a 502 for an unreachable one is azproxy's, not dep1's.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proxy = await proxy_for(upstream=f"http://127.0.0.1:{port}", retries=0)
    response = await proxy.post("/v1/chat/completions", data=b"{}", headers=BEARER)
    assert response.status == 502
    assert (await response.json())["error"]["type"] == "api_error"
    assert "x-azproxy-deployment" not in response.headers

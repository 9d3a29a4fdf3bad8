"""One access-log line per request, and Prometheus metrics at /metrics."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from azproxy.observe.observer import OBSERVER
from azproxy.settings.secrets import Secret
from tests.conftest import AZURE_KEY, BEARER, TOKEN, ProxyFactory
from tests.fakes import CHAT_JSON, FakeAzure, json_answer, sse_answer, sse_event

CHAT = (
    b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "secret prompt"}]}'
)


def access_lines(proxy: Any, capfd: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    log = proxy.app[OBSERVER].access_log
    assert log is not None
    log.flush()
    out = capfd.readouterr().out
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


async def test_a_json_line_per_request_with_what_happened(
    proxy: Any, fake_azure: FakeAzure, capfd: pytest.CaptureFixture[str]
) -> None:
    response = await proxy.post("/v1/chat/completions", data=CHAT, headers=BEARER)
    assert response.status == 200
    body = await response.read()
    (line,) = access_lines(proxy, capfd)
    assert line["method"] == "POST" and line["path"] == "/v1/chat/completions"
    assert line["status"] == 200 and line["upstream_status"] == 200
    assert line["deployment"] == "dep1" and line["endpoint"] == "myresource"
    assert line["caller"] == "passthrough:myresource"
    assert line["attempts"] == 1 and line["stream"] is False
    assert line["bytes"] == len(body)
    assert line["request_id"] == response.headers["x-request-id"] == "apim-0001"
    assert (line["prompt_tokens"], line["completion_tokens"]) == (3, 4)
    assert line["total_tokens"] == 7
    assert 0 <= line["ttfb_ms"] <= line["duration_ms"]
    text = json.dumps(line)
    assert AZURE_KEY not in text and "secret prompt" not in text
    assert CHAT_JSON["choices"][0]["message"]["content"] not in text  # type: ignore[index]


async def test_a_stream_with_usage_reports_its_tokens(
    proxy: Any, fake_azure: FakeAzure, capfd: pytest.CaptureFixture[str]
) -> None:
    usage = {"prompt_tokens": 11, "completion_tokens": 22, "total_tokens": 33}
    events = [
        sse_event({"choices": [{"index": 0, "delta": {"content": "hi"}}]}),
        sse_event({"choices": [], "usage": usage}),
        sse_event("[DONE]"),
    ]
    fake_azure.queue(sse_answer(events, delay_s=0.01))
    response = await proxy.post(
        "/v1/chat/completions",
        data=b'{"stream": true, "stream_options": {"include_usage": true}}',
        headers=BEARER,
    )
    body = await response.read()
    (line,) = access_lines(proxy, capfd)
    assert line["stream"] is True
    assert line["bytes"] == len(body)
    # A stream is sent before the exchange is recorded: it carries its id too.
    assert line["request_id"] == response.headers["x-request-id"] != ""
    assert (line["prompt_tokens"], line["total_tokens"]) == (11, 33)


async def test_probes_carry_a_request_id_though_not_logged(
    proxy: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    response = await proxy.get("/healthz")
    assert response.status == 200
    assert len(response.headers["x-request-id"]) == 32
    assert access_lines(proxy, capfd) == []


async def test_usage_that_came_with_done_in_the_last_write_is_logged(
    proxy: Any, fake_azure: FakeAzure, capfd: pytest.CaptureFixture[str]
) -> None:
    usage = {"prompt_tokens": 11, "completion_tokens": 22, "total_tokens": 33}
    events = [
        sse_event({"choices": [{"index": 0, "delta": {"content": "hi"}}]}),
        sse_event({"choices": [], "usage": usage}) + sse_event("[DONE]"),
    ]
    fake_azure.queue(sse_answer(events, delay_s=0.05))  # read apart
    response = await proxy.post(
        "/v1/chat/completions",
        data=b'{"stream": true, "stream_options": {"include_usage": true}}',
        headers=BEARER,
    )
    assert await response.read() == b"".join(events)
    (line,) = access_lines(proxy, capfd)
    assert (line["prompt_tokens"], line["completion_tokens"]) == (11, 22)
    assert line["total_tokens"] == 33


async def test_usage_at_the_end_of_a_large_json_answer_is_logged(
    proxy: Any, fake_azure: FakeAzure, capfd: pytest.CaptureFixture[str]
) -> None:
    usage = {"prompt_tokens": 5, "total_tokens": 5}
    vectors = [
        {"object": "embedding", "index": i, "embedding": [0.0123] * 7000}
        for i in range(4)
    ]
    document = {"object": "list", "data": vectors, "usage": usage}
    fake_azure.queue(json_answer(document))
    response = await proxy.post(
        "/v1/embeddings", data=b'{"input": "hi", "model": "e"}', headers=BEARER
    )
    body = await response.read()
    assert len(body) > 200_000  # more than one read from Azure
    assert json.loads(body) == document
    (line,) = access_lines(proxy, capfd)
    assert line["bytes"] == len(body) and line["stream"] is False
    assert (line["prompt_tokens"], line["total_tokens"]) == (5, 5)


async def test_retries_and_errors_are_recorded(
    proxy: Any, fake_azure: FakeAzure, capfd: pytest.CaptureFixture[str]
) -> None:
    fake_azure.queue(json_answer({"error": {}}, status=500))
    await proxy.post("/v1/chat/completions", data=CHAT, headers=BEARER)
    unauthorized = await proxy.post("/v1/chat/completions", data=CHAT)
    assert unauthorized.status == 401
    retried, refused = access_lines(proxy, capfd)
    assert retried["attempts"] == 2 and retried["status"] == 200
    assert refused["status"] == 401 and refused["attempts"] == 0
    assert refused["request_id"] == unauthorized.headers["x-request-id"]

    metrics = await (await proxy.get("/metrics")).text()
    assert 'azproxy_retries_total{deployment="dep1",model="gpt-4o"} 1.0' in metrics
    assert (
        'azproxy_requests_total{deployment="",key="",model="",status="401"} 1.0'
        in metrics
    )


async def test_answers_azproxy_writes_itself_count_their_bytes(
    proxy: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    models = await proxy.get("/v1/models", headers=BEARER)
    refused = await proxy.post("/v1/chat/completions", data=CHAT)
    listed, unauthorized = access_lines(proxy, capfd)
    assert listed["status"] == 200 and refused.status == 401
    assert listed["bytes"] == len(await models.read()) > 0
    assert unauthorized["bytes"] == len(await refused.read()) > 0


async def test_a_client_that_leaves_mid_stream_is_499_with_the_bytes_it_got(
    proxy: Any, fake_azure: FakeAzure, capfd: pytest.CaptureFixture[str]
) -> None:
    gate = asyncio.Event()
    events = [
        sse_event({"choices": [{"index": 0, "delta": {"content": "one"}}]}),
        sse_event({"choices": [{"index": 0, "delta": {"content": "two"}}]}),
        sse_event("[DONE]"),
    ]
    fake_azure.queue(sse_answer(events, gates=[gate]))
    # The race a busy stream loses: Azure's next chunk is written before the
    # loop has told the handler that the client is gone (which would cancel
    # it, and log 499 anyway). Without that message the write always finds out.
    proxy.server.runner.server.handler_cancellation = False
    response = await proxy.post(
        "/v1/chat/completions", data=b'{"stream": true}', headers=BEARER
    )
    received = await response.content.readany()
    response.close()  # the client leaves mid-stream
    server = proxy.server.runner.server
    async with asyncio.timeout(5):  # until the proxy's side is closed too
        while any(c.transport is not None for c in server.connections):
            await asyncio.sleep(0.01)
    gate.set()  # Azure goes on: the proxy's next write finds the client gone
    async with asyncio.timeout(5):
        while not (lines := access_lines(proxy, capfd)):
            await asyncio.sleep(0.01)
    (line,) = lines
    assert line["status"] == 499 and line["upstream_status"] == 200
    assert line["bytes"] == len(received) > 0


async def test_probes_are_not_logged(
    proxy: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        assert (await proxy.get(path)).status == 200
    assert access_lines(proxy, capfd) == []


async def test_text_format_for_humans(
    proxy_for: ProxyFactory, capfd: pytest.CaptureFixture[str]
) -> None:
    proxy = await proxy_for(log_format="text")
    await proxy.post("/v1/chat/completions", data=CHAT, headers=BEARER)
    proxy.app[OBSERVER].access_log.flush()
    line = capfd.readouterr().out.strip()
    assert " 200 POST /v1/chat/completions " in line
    assert "deployment=dep1" in line and "total_tokens=7" in line
    assert not line.startswith("{")


async def test_the_access_log_can_be_switched_off(
    proxy_for: ProxyFactory, capfd: pytest.CaptureFixture[str]
) -> None:
    proxy = await proxy_for(access_log=False)
    await proxy.post("/v1/chat/completions", data=CHAT, headers=BEARER)
    assert proxy.app[OBSERVER].access_log is None
    assert capfd.readouterr().out == ""


async def test_metrics_in_prometheus_format(proxy: Any, fake_azure: FakeAzure) -> None:
    # A map of two models: the proxy reads the body's model (one deployment
    # for every model would not need to).
    token = f"myresource:gpt-4o|dep-a,gpt-4o-mini|dep-b:{AZURE_KEY}"
    for _ in range(3):
        await proxy.post(
            "/v1/chat/completions",
            data=CHAT,
            headers={"Authorization": f"Bearer {token}"},
        )
    response = await proxy.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    text = await response.text()
    labels = 'deployment="dep-a",model="gpt-4o"'
    # Prometheus sorts label names; every pass-through token is one key.
    requests = 'deployment="dep-a",key="passthrough",model="gpt-4o",status="200"'
    assert f"azproxy_requests_total{{{requests}}} 3.0" in text
    tokens = (
        'azproxy_tokens_total{deployment="dep-a",key="passthrough",kind="%s",'
        'model="gpt-4o"}'
    )
    assert tokens % "prompt" + " 9.0" in text
    assert tokens % "completion" + " 12.0" in text
    assert f"azproxy_request_duration_seconds_count{{{labels}}} 3.0" in text
    ttfb = 'azproxy_time_to_first_byte_seconds_bucket{deployment="dep-a",le="+Inf"'
    assert ttfb + ',model="gpt-4o"} 3.0' in text
    assert "azproxy_streams_in_flight 0.0" in text
    assert "azproxy_upstream_requests_in_flight 0.0" in text
    for line in text.splitlines():
        if line.startswith("azproxy_") and not line.startswith("#"):
            name = line.split("{")[0].split(" ")[0]
            assert name.startswith("azproxy_")


async def test_metrics_can_require_an_access_key(
    proxy_for: ProxyFactory, fake_azure: FakeAzure
) -> None:
    from azproxy.settings.server_side import (
        parse_access_keys,
        parse_endpoints,
        parse_model_map,
    )

    key = "metrics-access-key-0123456789"
    proxy = await proxy_for(
        endpoints=parse_endpoints({"e": {"url": fake_azure.url, "api_key": "k"}}, {}),
        model_map=parse_model_map("gpt-4o=dep"),
        access_keys=parse_access_keys([key], {}),
        metrics_require_key=True,
    )
    assert (await proxy.get("/metrics")).status == 401
    wrong = await proxy.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert wrong.status == 401
    ok = await proxy.get("/metrics", headers={"Authorization": f"Bearer {key}"})
    assert ok.status == 200


MAP_TOKEN = f"myresource:gpt-4o|dep-a,gpt-4o-mini|dep-b:{AZURE_KEY}"


async def test_a_huge_model_name_leaves_metrics_and_log_small(
    proxy: Any, fake_azure: FakeAzure, capfd: pytest.CaptureFixture[str]
) -> None:
    # A map token makes the proxy read the body's model; an unmapped one goes
    # to the first deployment, so the client chooses this label value.
    model = "m" * 100_000
    body = json.dumps({"model": model, "messages": []}).encode()
    for _ in range(3):
        response = await proxy.post(
            "/v1/chat/completions",
            data=body,
            headers={"Authorization": f"Bearer {MAP_TOKEN}"},
        )
        assert response.status == 200
    assert fake_azure.requests[-1].path == "/openai/deployments/dep-a/chat/completions"
    assert fake_azure.requests[-1].body == body  # relayed untouched
    lines = access_lines(proxy, capfd)
    assert [line["model"] for line in lines] == ["m" * 64] * 3

    metrics = await (await proxy.get("/metrics")).text()
    assert len(metrics) < 20_000
    assert (
        'azproxy_requests_total{deployment="dep-a",key="passthrough",model="other"'
        in metrics
    )
    assert "mmmm" not in metrics


async def test_metrics_key_protects_metrics_in_passthrough_mode(
    proxy_for: ProxyFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "metrics-key-0123456789abcdef"
    proxy = await proxy_for(metrics_key=Secret(key))
    compared: list[str] = []
    matches = Secret.matches

    def spy(self: Secret, candidate: str) -> bool:
        compared.append(candidate)
        return matches(self, candidate)

    monkeypatch.setattr(Secret, "matches", spy)
    refused = await proxy.get("/metrics")
    assert refused.status == 401
    error = (await refused.json())["error"]
    assert error["code"] == "invalid_api_key" and "metrics_key" in error["message"]
    for wrong in (BEARER, {"Authorization": f"Bearer {key}x"}, {"api-key": key[:-1]}):
        assert (await proxy.get("/metrics", headers=wrong)).status == 401
    for right in ({"Authorization": f"Bearer {key}"}, {"api-key": key}):
        answer = await proxy.get("/metrics", headers=right)
        assert answer.status == 200
        assert "azproxy_requests_total" in await answer.text()
    assert compared == [TOKEN, f"{key}x", key[:-1], key, key]


async def test_metrics_key_or_an_access_key_with_metrics_require_key(
    proxy_for: ProxyFactory, fake_azure: FakeAzure
) -> None:
    from azproxy.settings.server_side import (
        parse_access_keys,
        parse_endpoints,
        parse_model_map,
    )

    access_key, metrics_key = "access-key-0123456789", "metrics-key-0123456789"
    proxy = await proxy_for(
        endpoints=parse_endpoints({"e": {"url": fake_azure.url, "api_key": "k"}}, {}),
        model_map=parse_model_map("gpt-4o=dep"),
        access_keys=parse_access_keys([access_key], {}),
        metrics_require_key=True,
        metrics_key=Secret(metrics_key),
    )
    assert (await proxy.get("/metrics")).status == 401
    for key in (access_key, metrics_key):
        ok = await proxy.get("/metrics", headers={"Authorization": f"Bearer {key}"})
        assert ok.status == 200


def text_lines(proxy: Any, capfd: pytest.CaptureFixture[str]) -> list[str]:
    proxy.app[OBSERVER].access_log.flush()
    return capfd.readouterr().out.splitlines()


async def test_text_log_escapes_a_newline_in_the_path(
    proxy_for: ProxyFactory, fake_azure: FakeAzure, capfd: pytest.CaptureFixture[str]
) -> None:
    proxy = await proxy_for(log_format="text")
    forged = "/v1/chat%0A2026-01-01T00:00:00.000Z 200 POST /v1/forged\\completions"
    response = await proxy.post(forged, data=CHAT, headers=BEARER)
    assert response.status == 404  # an encoded path is never relayed
    assert fake_azure.requests == []
    (line,) = text_lines(proxy, capfd)
    assert " 404 POST /v1/chat\\n2026-01-01T00:00:00.000Z 200 POST " in line
    assert "/v1/forged\\\\completions " in line  # a backslash is escaped too


async def test_text_log_escapes_control_characters_in_the_model(
    proxy_for: ProxyFactory, fake_azure: FakeAzure, capfd: pytest.CaptureFixture[str]
) -> None:
    proxy = await proxy_for(log_format="text")
    model = "gpt\r\n2026-01-01T00:00:00.000Z 200 GET /forged\x1b[2J"
    response = await proxy.post(
        "/v1/chat/completions",
        data=json.dumps({"model": model, "messages": []}),
        headers={"Authorization": f"Bearer {MAP_TOKEN}"},
    )
    assert response.status == 200
    assert json.loads(fake_azure.requests[0].body)["model"] == model
    (line,) = text_lines(proxy, capfd)
    assert " model=gpt\\r\\n2026-01-01T00:00:00.000Z 200 GET /forged\\x1b[2J " in line


async def test_a_huge_model_name_is_bounded_in_server_side_mode_too(
    proxy_for: ProxyFactory, fake_azure: FakeAzure
) -> None:
    from azproxy.settings.server_side import (
        parse_access_keys,
        parse_endpoints,
        parse_model_map,
    )

    # model_fallback relays a model the map does not name: here to the
    # deployment "a", its dotless name.
    key = "access-key-0123456789"
    proxy = await proxy_for(
        endpoints=parse_endpoints({"e": {"url": fake_azure.url, "api_key": "k"}}, {}),
        model_map=parse_model_map("gpt-4o=gpt-4o-prod"),
        access_keys=parse_access_keys([key], {}),
        model_fallback=True,
    )
    for model in ("a" + "." * 100_000, "gpt-4o"):
        response = await proxy.post(
            "/v1/chat/completions",
            data=json.dumps({"model": model, "messages": []}),
            headers={"Authorization": f"Bearer {key}"},
        )
        assert response.status == 200
    assert [r.path for r in fake_azure.requests] == [
        "/openai/deployments/a/chat/completions",
        "/openai/deployments/gpt-4o-prod/chat/completions",
    ]
    metrics = await (await proxy.get("/metrics")).text()
    assert len(metrics) < 20_000
    assert 'azproxy_requests_total{deployment="a",key="key-1",model="other"' in metrics
    assert 'total{deployment="gpt-4o-prod",key="key-1",model="gpt-4o"' in metrics

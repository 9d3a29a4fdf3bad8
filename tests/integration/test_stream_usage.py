"""Exact usage for every stream: azproxy asks Azure for the usage of a chat or
completions stream whose client did not, takes the usage chunk out of what
the client receives, and logs and counts the tokens; where it cannot ask (an
older api-version, sse_compat=raw) or the stream ends early, it logs an
estimate, marked as one."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web
from openai.types.chat import ChatCompletionMessageParam

from azproxy import Config, create_app
from azproxy.observe.observer import OBSERVER
from azproxy.observe.usage import estimate_tokens
from azproxy.relay.sse import StreamNormaliser
from azproxy.settings.server_side import (
    parse_access_keys,
    parse_endpoints,
    parse_model_map,
)
from tests.conftest import AZURE_KEY, BEARER, TOKEN, ProxyFactory
from tests.fakes import FakeAzure, json_answer, sse_answer
from tests.integration.test_observability import access_lines

USAGE = {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13}
ASKED = b'"stream_options":{"include_usage":true}'
CHAT_BODY = b'{"model": "gpt-4o", "stream": true, "messages": []}'


def event(document: Any) -> bytes:
    """One event as Azure writes it: compact JSON."""
    data = (
        document
        if isinstance(document, str)
        else json.dumps(document, separators=(",", ":"))
    )
    return f"data: {data}\n\n".encode()


def azure_stream(texts: list[str], *, usage: dict[str, int] | None) -> list[bytes]:
    """A chat stream in Azure's shape. With `usage` (the request asked for
    it), every chunk says "usage": null and the last one before [DONE] has it."""
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1}
    base["model"] = "gpt-4o-2024-08-06"
    extra = {"usage": None} if usage is not None else {}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"delta": delta, "finish_reason": finish, "index": 0}
        return event({"choices": [choice], **base, **extra})

    prompt_filter = {"choices": [], "id": "", "prompt_filter_results": []}
    events = [event(prompt_filter), chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": text}) for text in texts]
    events.append(chunk({}, "stop"))
    if usage is not None:
        events.append(event({"choices": [], **base, "usage": usage}))
    return [*events, event("[DONE]")]


def sdk(proxy: Any, api_key: str = TOKEN) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=str(proxy.make_url("/v1")), api_key=api_key, max_retries=0
    )


async def test_a_stream_without_include_usage_is_counted_and_shows_no_usage(
    proxy: Any, fake_azure: FakeAzure, capfd: pytest.CaptureFixture[str]
) -> None:
    fake_azure.queue(sse_answer(azure_stream(["Hel", "lo"], usage=USAGE)))
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
    async with sdk(proxy) as client:
        stream = await client.chat.completions.create(
            model="gpt-4o", messages=messages, stream=True
        )
        chunks = [chunk async for chunk in stream]
    # No usage chunk: every chunk has a choice, and none has usage.
    assert [c.choices[0].delta.content for c in chunks] == ["", "Hel", "lo", None]
    assert all(c.usage is None for c in chunks)
    # Azure got the SDK's body with the member inserted first, nothing else.
    sent = fake_azure.last.body
    assert sent.startswith(b"{" + ASKED + b",")
    client_body = json.loads(b"{" + sent[len(ASKED) + 2 :])
    assert client_body == {"messages": messages, "model": "gpt-4o", "stream": True}
    # Asked uncompressed, although the SDK accepts gzip: its chunk must go.
    assert fake_azure.last.headers["Accept-Encoding"] == "identity"
    (line,) = access_lines(proxy, capfd)
    assert (line["prompt_tokens"], line["completion_tokens"]) == (11, 2)
    assert line["total_tokens"] == 13 and line["usage_estimated"] is False
    assert line["key"] == "passthrough" and line["model"] == "gpt-4o"
    metrics = await (await proxy.get("/metrics")).text()
    assert (
        'azproxy_tokens_total{deployment="dep1",key="passthrough",kind="prompt",'
        'model="gpt-4o"} 11.0' in metrics
    )
    assert (
        'azproxy_tokens_total{deployment="dep1",key="passthrough",kind="completion",'
        'model="gpt-4o"} 2.0' in metrics
    )


async def test_every_other_byte_reaches_the_client_as_azure_sent_it(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    events = azure_stream(["Hel", "lo"], usage=USAGE)
    # Several events per write, one cut mid-event: the usage chunk goes anyway.
    data = b"".join(events)
    cut = data.index(b'"usage":{') + 5
    fake_azure.queue(sse_answer([data[:100], data[100:cut], data[cut:]]))
    response = await proxy.post("/v1/chat/completions", data=CHAT_BODY, headers=BEARER)
    received = await response.read()
    # Minus Azure's prompt-filter chunk (sse_compat=openai) and the usage one.
    assert received == b"".join(events[1:-2]) + events[-1]
    assert b'"usage":null' in received
    assert fake_azure.last.body == b"{" + ASKED + b"," + CHAT_BODY[1:]


async def test_a_failure_inside_azproxy_mid_stream_ends_it_with_an_error_event(
    proxy: Any, fake_azure: FakeAzure, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Once the answer has started a 500 cannot be sent: the client must get
    # an explicit error event and a closed connection, never a silent hang.
    events = azure_stream(["Hi"], usage=USAGE)
    fake_azure.queue(sse_answer([events[0], events[1], b"".join(events[2:])]))

    def failing_feed(self: StreamNormaliser, chunk: bytes) -> bytes:
        raise RuntimeError("a bug")  # after the answer's headers were sent

    monkeypatch.setattr(StreamNormaliser, "feed", failing_feed)
    response = await proxy.post("/v1/chat/completions", data=CHAT_BODY, headers=BEARER)
    assert response.status == 200
    with pytest.raises(aiohttp.ClientPayloadError):
        await asyncio.wait_for(response.read(), 10)
    async with sdk(proxy) as client:
        fake_azure.queue(sse_answer(events))
        stream = await client.chat.completions.create(
            model="gpt-4o", messages=[], stream=True
        )
        with pytest.raises(openai.APIError, match="azproxy failed while relaying"):
            async for _ in stream:
                pass


async def test_a_client_that_asked_for_usage_gets_its_chunk(
    proxy: Any, fake_azure: FakeAzure, capfd: pytest.CaptureFixture[str]
) -> None:
    fake_azure.queue(sse_answer(azure_stream(["Hi"], usage=USAGE)))
    async with sdk(proxy) as client:
        stream = await client.chat.completions.create(
            model="gpt-4o",
            messages=[],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 13
    sent = fake_azure.last.body
    assert sent.count(b"stream_options") == 1  # the client's, untouched
    assert json.loads(sent)["stream_options"] == {"include_usage": True}
    assert "gzip" in fake_azure.last.headers["Accept-Encoding"]
    (line,) = access_lines(proxy, capfd)
    assert line["total_tokens"] == 13 and line["usage_estimated"] is False


@pytest.mark.parametrize(
    ("body", "sent"),
    [
        (
            b'{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":false}}',
            b'{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true}}',
        ),
        (
            b'{"stream": true, "stream_options": {"include_obfuscation": false}}',
            b'{"stream": true, "stream_options": '
            b'{"include_usage":true,"include_obfuscation": false}}',
        ),
    ],
)
async def test_stream_options_without_include_usage_are_merged(
    proxy: Any, fake_azure: FakeAzure, body: bytes, sent: bytes
) -> None:
    events = azure_stream(["Hi"], usage=USAGE)
    fake_azure.queue(sse_answer(events))
    response = await proxy.post("/v1/chat/completions", data=body, headers=BEARER)
    assert await response.read() == b"".join(events[1:-2]) + events[-1]
    assert fake_azure.last.body == sent


async def test_completions_streams_are_asked_too(
    proxy: Any, fake_azure: FakeAzure, capfd: pytest.CaptureFixture[str]
) -> None:
    text = {"choices": [{"index": 0, "text": "Hi", "finish_reason": None}]}
    usage = {"choices": [], "id": "cmpl-1", "usage": USAGE}
    events = [event(text | {"usage": None}), event(usage), event("[DONE]")]
    fake_azure.queue(sse_answer(events))
    body = b'{"model": "gpt-35-turbo-instruct", "prompt": "x", "stream": true}'
    response = await proxy.post("/v1/completions", data=body, headers=BEARER)
    assert await response.read() == events[0] + events[2]
    assert fake_azure.last.body == b"{" + ASKED + b"," + body[1:]
    (line,) = access_lines(proxy, capfd)
    assert line["total_tokens"] == 13 and line["usage_estimated"] is False


async def test_an_older_api_version_is_left_untouched_and_estimated(
    proxy: Any, fake_azure: FakeAzure, capfd: pytest.CaptureFixture[str]
) -> None:
    events = azure_stream(["Hello", " there"], usage=None)
    fake_azure.queue(sse_answer(events))
    async with sdk(proxy, f"{TOKEN}:2024-02-01") as client:
        stream = await client.chat.completions.create(
            model="gpt-4o", messages=[], stream=True
        )
        chunks = [chunk async for chunk in stream]
    assert [c.choices[0].delta.content for c in chunks] == ["", "Hello", " there", None]
    recorded = fake_azure.last
    assert recorded.query["api-version"] == "2024-02-01"
    assert b"stream_options" not in recorded.body
    assert json.loads(recorded.body) == {
        "messages": [],
        "model": "gpt-4o",
        "stream": True,
    }
    assert "gzip" in recorded.headers["Accept-Encoding"]
    (line,) = access_lines(proxy, capfd)
    prompt = estimate_tokens(len(recorded.body))
    completion = estimate_tokens(len("Hello there"))  # the text streamed, / 4
    assert (line["prompt_tokens"], line["completion_tokens"]) == (prompt, completion)
    assert line["total_tokens"] == prompt + completion
    assert line["usage_estimated"] is True


async def test_raw_mode_leaves_request_and_stream_untouched(
    proxy_for: ProxyFactory, fake_azure: FakeAzure, capfd: pytest.CaptureFixture[str]
) -> None:
    proxy = await proxy_for(sse_compat="raw")
    events = azure_stream(["Hello"], usage=None)
    fake_azure.queue(sse_answer(events))
    response = await proxy.post("/v1/chat/completions", data=CHAT_BODY, headers=BEARER)
    assert await response.read() == b"".join(events)
    assert fake_azure.last.body == CHAT_BODY
    (line,) = access_lines(proxy, capfd)
    assert line["usage_estimated"] is True
    assert line["completion_tokens"] == estimate_tokens(len("Hello"))


@pytest.mark.parametrize("cancelled", [True, False], ids=["cancelled", "write-fails"])
async def test_a_client_that_leaves_midway_is_logged_with_an_estimate(
    proxy: Any,
    fake_azure: FakeAzure,
    capfd: pytest.CaptureFixture[str],
    cancelled: bool,
) -> None:
    gate = asyncio.Event()
    events = azure_stream(["Once upon", " a time"], usage=USAGE)
    # Azure sends the role and the first text, waits, sends the next text and
    # then nothing (had its usage chunk come, the usage would be Azure's).
    first, then = b"".join(events[:3]), events[3]
    fake_azure.queue(sse_answer([first, then], gates=[gate], then="hang"))
    # Cancelled: the handler learns at once that the client left. Else the
    # next write finds out (the race a busy stream loses).
    proxy.server.runner.server.handler_cancellation = cancelled
    response = await proxy.post("/v1/chat/completions", data=CHAT_BODY, headers=BEARER)
    received = await response.content.readany()
    assert received == b"".join(events[1:3])
    response.close()  # the client leaves mid-stream
    server = proxy.server.runner.server
    async with asyncio.timeout(5):  # until the proxy's side is closed too
        while any(c.transport is not None for c in server.connections):
            await asyncio.sleep(0.01)
    gate.set()
    async with asyncio.timeout(5):
        while not (lines := access_lines(proxy, capfd)):
            await asyncio.sleep(0.01)
    (line,) = lines
    assert line["status"] == 499
    sent_body = b"{" + ASKED + b"," + CHAT_BODY[1:]
    assert fake_azure.last.body == sent_body
    prompt = estimate_tokens(len(CHAT_BODY))
    assert line["prompt_tokens"] == prompt
    # The text Azure sent: "Once upon" (9 bytes) when the client's leaving
    # cancelled the relay; else also " a time" (7), read before the write
    # that found the client gone.
    text = len("Once upon") if cancelled else len("Once upon a time")
    assert line["completion_tokens"] == estimate_tokens(text)
    assert line["usage_estimated"] is True


async def test_each_deployment_is_asked_as_its_api_version_allows(
    fake_azure: FakeAzure, aiohttp_client: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    # Failover from an endpoint on 2024-02-01 to one on 2024-10-21: only the
    # second request carries stream_options, and its usage chunk goes.
    async def fail(request: web.Request) -> web.StreamResponse:
        return web.json_response({"error": {"code": "500"}}, status=500)

    fake_azure.queue(fail, sse_answer(azure_stream(["Hi"], usage=USAGE)))
    old = {"url": fake_azure.url, "api_key": AZURE_KEY, "api_version": "2024-02-01"}
    new = old | {"api_version": "2024-10-21"}
    config = Config(
        endpoints=parse_endpoints({"old": old, "new": new}, {}),
        model_map=parse_model_map(
            {
                "gpt-4o": [
                    {"endpoint": "old", "deployment": "dep-a", "priority": 1},
                    {"endpoint": "new", "deployment": "dep-b", "priority": 2},
                ]
            }
        ),
        access_keys=parse_access_keys(
            [{"key": "team-a-key-0123456789abcdef", "name": "team-a"}], {}
        ),
        retry_delay_s=0.01,
    )
    proxy = await aiohttp_client(create_app(config))
    async with sdk(proxy, "team-a-key-0123456789abcdef") as client:
        stream = await client.chat.completions.create(
            model="gpt-4o", messages=[], stream=True
        )
        chunks = [chunk async for chunk in stream]
    assert all(c.choices for c in chunks)
    first, second = fake_azure.requests
    assert first.query["api-version"] == "2024-02-01"
    assert b"stream_options" not in first.body
    assert second.query["api-version"] == "2024-10-21"
    assert second.body == b"{" + ASKED + b"," + first.body[1:]
    (line,) = access_lines(proxy, capfd)
    assert line["key"] == "team-a" and line["caller"] == "team-a"
    assert line["deployment"] == "dep-b" and line["total_tokens"] == 13
    assert line["usage_estimated"] is False


async def test_a_json_answer_keeps_azure_usage_and_the_model_named(
    proxy: Any, fake_azure: FakeAzure, capfd: pytest.CaptureFixture[str]
) -> None:
    # A pass-through token with one deployment: the body is not parsed, yet
    # the log names the model the client asked for.
    body = b'{"messages": [], "model": "gpt-4o-mini"}'
    response = await proxy.post("/v1/chat/completions", data=body, headers=BEARER)
    assert response.status == 200
    assert fake_azure.last.body == body
    (line,) = access_lines(proxy, capfd)
    assert line["model"] == "gpt-4o-mini" and line["key"] == "passthrough"
    assert line["total_tokens"] == 7 and line["usage_estimated"] is False


async def test_a_hostile_model_name_is_logged_cut_and_harmless(
    proxy_for: ProxyFactory, fake_azure: FakeAzure, capfd: pytest.CaptureFixture[str]
) -> None:
    proxy = await proxy_for(log_format="text")
    body = b'{"model": "' + b"x" * 70 + b'\x1b[2J\\nforged", "messages": []}'
    await proxy.post("/v1/chat/completions", data=body, headers=BEARER)
    log = proxy.app[OBSERVER].access_log
    assert log is not None
    log.flush()
    (line,) = capfd.readouterr().out.splitlines()
    assert f"model={'x' * 64} " in line
    assert "\x1b" not in line and "forged" not in line


async def test_on_the_v1_api_the_model_and_the_usage_are_both_spliced(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    events = azure_stream(["Hi"], usage=USAGE)
    fake_azure.queue(sse_answer(events))
    headers = {"Authorization": f"Bearer {TOKEN}:v1"}
    response = await proxy.post("/v1/chat/completions", data=CHAT_BODY, headers=headers)
    assert await response.read() == b"".join(events[1:-2]) + events[-1]
    assert fake_azure.last.path == "/openai/v1/chat/completions"
    assert fake_azure.last.body == (
        b'{"stream_options":{"include_usage":true},'
        b'"model": "dep1", "stream": true, "messages": []}'
    )


async def test_when_azure_refuses_the_ask_the_clients_request_goes_instead(
    proxy: Any, fake_azure: FakeAzure, capfd: pytest.CaptureFixture[str]
) -> None:
    # A deployment (or a gateway before it) that does not take stream_options
    # on an api-version that should: the stream still works, estimated.
    refusal = {
        "error": {
            "message": "Unknown parameter: 'stream_options'.",
            "type": "invalid_request_error",
            "param": "stream_options",
            "code": "unknown_parameter",
        }
    }
    events = azure_stream(["Hello"], usage=None)
    fake_azure.queue(json_answer(refusal, status=400), sse_answer(events))
    async with sdk(proxy) as client:
        stream = await client.chat.completions.create(
            model="gpt-4o", messages=[], stream=True
        )
        chunks = [chunk async for chunk in stream]
    assert [c.choices[0].delta.content for c in chunks] == ["", "Hello", None]
    asked, sent = fake_azure.requests
    assert asked.body.startswith(b"{" + ASKED + b",")
    assert sent.body == b"{" + asked.body[len(ASKED) + 2 :]  # the client's own
    (line,) = access_lines(proxy, capfd)
    assert line["status"] == 200 and line["attempts"] == 2
    assert line["usage_estimated"] is True


async def test_a_refusal_of_the_clients_own_stream_options_reaches_it(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    # The client's option is what Azure refuses: sent as the client wrote it,
    # refused again, and that answer is the client's.
    refusal = {"error": {"message": "Unknown parameter: 'stream_options.x'."}}
    fake_azure.queue(json_answer(refusal, status=400), json_answer(refusal, status=400))
    body = b'{"stream": true, "stream_options": {"x": 1}}'
    response = await proxy.post("/v1/chat/completions", data=body, headers=BEARER)
    assert response.status == 400
    assert await response.json() == refusal
    assert [r.body for r in fake_azure.requests] == [
        b'{"stream": true, "stream_options": {"include_usage":true,"x": 1}}',
        body,
    ]

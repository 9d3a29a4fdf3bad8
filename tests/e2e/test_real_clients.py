"""Real clients, unmodified, through the real `azproxy serve` process to the
built-in simulator (`azproxy simulate`), directly and through nginx with
deploy/nginx/azproxy.conf: the official openai Python SDK, the official openai
Node SDK (e2e/node/client.mjs) and LangChain's ChatOpenAI, each plain and
streamed.

The simulator's answer is deterministic (answers.words), so each test checks
the exact text the client got, piece by piece for streams; the simulator
only answers the right Azure key, and its request counter per deployment shows
what reached it.
"""

from __future__ import annotations

import functools
import json
import operator
import os
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest
from langchain_core.messages import AIMessageChunk
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from azproxy.simulator.answers import words
from tests.conftest import AZURE_KEY
from tests.netguard import hermetic_environ
from tests.nginx_front import ROOT, Front, fronting
from tests.processes import SIMULATOR, Running, running

PIECES = 6  # content chunks per simulated answer
ANSWER = "".join(words(PIECES))  # "Hello! This is the azproxy simulator"
NODE_DIR = ROOT / "e2e" / "node"
MESSAGES: list[Any] = [{"role": "user", "content": "Say hello"}]


@pytest.fixture(scope="module")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    log = tmp_path_factory.mktemp("sim") / "simulator.log"
    args = ["simulate", "--port", "0", "--chunks", str(PIECES)]
    env = {"AZPROXY_SIM_API_KEY": AZURE_KEY}  # any other key gets a 401
    with running([*args, "--chunk-delay-ms", "2"], log, env=env, ready=SIMULATOR) as s:
        yield s


@pytest.fixture(scope="module")
def azproxy(
    simulator: Running, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    log = tmp_path_factory.mktemp("azproxy") / "azproxy.log"
    env = {"AZPROXY_UPSTREAM": simulator.url}
    with running(["serve", "--port", "0"], log, env=env) as server:
        yield server


@pytest.fixture(scope="module")
def nginx(azproxy: Running) -> Iterator[Front]:
    with fronting(azproxy.port) as front:  # skips when nginx is missing
        yield front


@dataclass
class Route:
    via: str  # "direct" or "nginx"
    base_url: str  # what a client sets as its OpenAI base URL
    simulator: Running

    def key(self, deployment: str) -> str:
        """Pass-through credentials mapping gpt-4o to `deployment`."""
        return f"sim:gpt-4o|{deployment}:{AZURE_KEY}"

    def reached_simulator(self, deployment: str) -> int:
        """How many requests for `deployment` the simulator answered."""
        url = f"{self.simulator.url}/_sim/stats"
        with urllib.request.urlopen(url, timeout=5) as response:
            stats = json.load(response)
        count: int = stats["requests"].get(deployment, 0)
        return count


@pytest.fixture(params=["direct", "nginx"])
def route(
    request: pytest.FixtureRequest, simulator: Running, azproxy: Running
) -> Route:
    if request.param == "direct":
        return Route("direct", f"{azproxy.url}/v1", simulator)
    front: Front = request.getfixturevalue("nginx")
    return Route("nginx", f"{front.url}/v1", simulator)


async def test_openai_python_sdk(route: Route) -> None:
    deployment = f"py-{route.via}"
    async with openai.AsyncOpenAI(
        base_url=route.base_url, api_key=route.key(deployment), max_retries=0
    ) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=MESSAGES
        )
        completion = raw.parse()
        stream = await client.chat.completions.create(
            model="gpt-4o",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    assert raw.headers["x-azproxy-deployment"] == deployment
    assert completion.choices[0].message.content == ANSWER
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == PIECES
    pieces = [c.choices[0].delta.content for c in chunks if c.choices]
    assert [p for p in pieces if p] == words(PIECES)  # one event per piece
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == PIECES
    assert route.reached_simulator(deployment) == 2


async def test_openai_python_sdk_gets_azures_401_for_a_wrong_key(route: Route) -> None:
    async with openai.AsyncOpenAI(
        base_url=route.base_url, api_key="sim:gpt-4o:wrong-key", max_retries=0
    ) as client:
        with pytest.raises(openai.AuthenticationError) as caught:
            await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert "invalid subscription key" in str(caught.value.body)


async def test_langchain_chat_openai(route: Route) -> None:
    deployment = f"langchain-{route.via}"
    async with openai.DefaultAsyncHttpxClient() as http:  # closed here, not leaked
        llm = ChatOpenAI(
            base_url=route.base_url,
            api_key=SecretStr(route.key(deployment)),
            model="gpt-4o",
            max_retries=0,
            timeout=30,
            stream_usage=True,
            http_async_client=http,
        )
        message = await llm.ainvoke("Say hello")
        chunks = [chunk async for chunk in llm.astream("Say hello")]
    assert message.content == ANSWER
    assert message.response_metadata["finish_reason"] == "stop"
    assert message.usage_metadata is not None
    assert message.usage_metadata["output_tokens"] == PIECES
    assert [c.content for c in chunks if c.content] == words(PIECES)
    whole = functools.reduce(operator.add, chunks)
    assert isinstance(whole, AIMessageChunk)
    assert whole.content == ANSWER
    assert whole.response_metadata["finish_reason"] == "stop"
    assert whole.usage_metadata is not None
    assert whole.usage_metadata["output_tokens"] == PIECES
    assert route.reached_simulator(deployment) == 2


@pytest.fixture(scope="session")
def node_client() -> list[str]:
    """`node e2e/node/client.mjs`, when `npm ci` has installed its SDK.

    Tests reach loopback only, so installing it (from the npm registry) is
    CI's step before the tests (.ci/run), or the developer's.
    """
    node = shutil.which("node")
    if node is None:
        pytest.skip("node not found: no test of the openai Node SDK")
    if not (NODE_DIR / "node_modules" / "openai" / "package.json").exists():
        pytest.skip("no openai Node SDK: run `(cd e2e/node && npm ci)` first")
    return [node, str(NODE_DIR / "client.mjs")]


def test_openai_node_sdk(route: Route, node_client: list[str]) -> None:
    deployment = f"node-{route.via}"
    env = hermetic_environ(dict(os.environ))  # no OPENAI_* of the developer's
    env |= {"OPENAI_BASE_URL": route.base_url, "OPENAI_API_KEY": route.key(deployment)}
    done = subprocess.run(
        node_client, env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["sdk"].split(".")[0] == "6"
    plain, streamed = got["plain"], got["streamed"]
    assert plain["content"] == ANSWER
    assert plain["finish_reason"] == "stop"
    assert plain["usage"]["completion_tokens"] == PIECES
    assert plain["deployment"] == deployment
    assert streamed["pieces"] == words(PIECES)  # one event per piece
    assert streamed["content"] == ANSWER
    assert streamed["finish_reason"] == "stop"
    assert streamed["usage"]["completion_tokens"] == PIECES
    assert streamed["content_type"].startswith("text/event-stream")
    assert streamed["deployment"] == deployment
    assert route.reached_simulator(deployment) == 2

"""The targets (the table's columns): one way each to reach the simulator, and
the requests sent to them.

  direct    the simulator itself
  azproxy   OpenAI-style requests through `azproxy serve`
  floor     OpenAI-style requests through scripts/floor_relay.py, the leanest
            aiohttp relay: what the framework alone costs. It reads whole
            answers, so the stream sections leave it out.
  nginx     Azure-style requests through nginx (proxy_buffering off,
            HTTP/1.1 keepalive upstream), the reference for a lean proxy

One more column is not a target: `baseline`, the hostile section's figures
for another azproxy checkout (--baseline-src), printed beside azproxy's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from .procfs import child_pids
from .services import LOOPBACK, Service

__all__ = [
    "AZPROXY",
    "AZURE_URL_PATH",
    "BASELINE",
    "COLUMN_ORDER",
    "DEPLOYMENT",
    "DIRECT",
    "FLOOR",
    "NGINX",
    "OPENAI_PATH",
    "SMALL_BODY",
    "STREAM_BODY",
    "TARGET_ORDER",
    "Target",
    "azproxy_target",
    "direct_target",
    "floor_target",
    "nginx_target",
]

DEPLOYMENT = "gpt-4o"
API_VERSION = "2024-10-21"
AZURE_PATH = f"/openai/deployments/{DEPLOYMENT}/chat/completions"
AZURE_URL_PATH = f"{AZURE_PATH}?api-version={API_VERSION}"
OPENAI_PATH = "/v1/chat/completions"
PASSTHROUGH_TOKEN = f"bench:{DEPLOYMENT}:bench-key"
MESSAGES = [{"role": "user", "content": "Say hello"}]
SMALL_BODY = json.dumps({"model": DEPLOYMENT, "messages": MESSAGES})
STREAM_BODY = json.dumps({"model": DEPLOYMENT, "messages": MESSAGES, "stream": True})

DIRECT, AZPROXY, FLOOR, NGINX = "direct", "azproxy", "floor", "nginx"
TARGET_ORDER = (DIRECT, AZPROXY, FLOOR, NGINX)
BASELINE = "baseline"
COLUMN_ORDER = (DIRECT, BASELINE, AZPROXY, FLOOR, NGINX)  # the table's


@dataclass
class Target:
    """One way to reach the simulator: its URL, headers and server PIDs."""

    name: str
    port: int
    path: str
    headers: dict[str, str]
    pids: Callable[[], list[int]]
    streams: bool = True  # relays a stream as it comes (False: the floor)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}{self.path}"


def direct_target(simulator: Service) -> Target:
    return Target(
        DIRECT,
        simulator.port,
        AZURE_URL_PATH,
        {"api-key": "bench"},
        lambda: [simulator.popen.pid],
    )


def azproxy_target(proxy: Service, name: str = AZPROXY) -> Target:
    return Target(
        name,
        proxy.port,
        OPENAI_PATH,
        {"Authorization": f"Bearer {PASSTHROUGH_TOKEN}"},
        # The serving process and any workers it forks.
        lambda: [proxy.popen.pid, *child_pids(proxy.popen.pid)],
    )


def floor_target(floor: Service) -> Target:
    # No credentials: the floor relay sends its own api-key upstream.
    return Target(
        FLOOR, floor.port, OPENAI_PATH, {}, lambda: [floor.popen.pid], streams=False
    )


def nginx_target(nginx: Service) -> Target:
    return Target(
        NGINX,
        nginx.port,
        AZURE_URL_PATH,
        {"api-key": "bench"},
        lambda: [nginx.popen.pid, *child_pids(nginx.popen.pid)],  # master + worker
    )

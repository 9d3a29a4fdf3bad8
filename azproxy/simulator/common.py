"""Simulator state, settings and the helpers every simulated endpoint uses."""

from __future__ import annotations

import json
import uuid
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = [
    "FAULTS",
    "SIM_STATE",
    "SimSettings",
    "SimState",
    "apply_faults",
    "authorized",
    "azure_error",
    "check_faults",
    "common_headers",
    "dumps",
    "parse_fault",
    "read_json",
    "refusal",
    "sse",
    "unauthorized",
]

FAULTS = frozenset(
    {
        "400",
        "429",
        "500",
        "502",
        "503",
        "overloaded",
        "abort",
        "hang",
        "hang-headers",
        "close",
    }
)


@dataclass(frozen=True, slots=True)
class SimSettings:
    api_key: str | None = None  # None: any non-empty api-key or bearer token
    deployments: frozenset[str] | None = None  # None: every name exists
    chunks: int = 8
    chunk_delay_ms: float = 20.0
    first_byte_ms: float = 0.0
    async_filter: bool = False  # emit Azure's asynchronous-filter chunks


@dataclass
class SimState:
    settings: SimSettings
    # deployment -> faults to inject, one per request, in order
    plan: dict[str, deque[str]] = field(default_factory=dict)
    # deployment -> fault injected on every request until changed
    sticky: dict[str, str] = field(default_factory=dict)
    requests: Counter[str] = field(default_factory=Counter)

    def next_fault(self, deployment: str) -> str | None:
        queue = self.plan.get(deployment)
        if queue:
            return queue.popleft()
        return self.sticky.get(deployment)


SIM_STATE = web.AppKey("azproxy.sim_state", SimState)


def check_faults(kinds: Iterable[str]) -> list[str]:
    """Validate fault kinds; `KIND*` marks the sticky one."""
    kinds = [k.strip() for k in kinds if k.strip()]
    for kind in kinds:
        if kind.rstrip("*").partition(":")[0] not in FAULTS:
            raise ValueError(f"fault kind {kind!r}: use one of {sorted(FAULTS)}")
    return kinds


def parse_fault(spec: str) -> tuple[str, list[str]]:
    """`DEPLOYMENT=KIND[,KIND...]` (the CLI form) -> (deployment, kinds)."""
    deployment, sep, kinds = spec.partition("=")
    if not sep or not deployment or not kinds:
        raise ValueError(f"fault {spec!r}: use DEPLOYMENT=KIND[,KIND...]")
    return deployment, check_faults(kinds.split(","))


def apply_faults(state: SimState, deployment: str, faults: list[str]) -> None:
    """Queue one-shot faults; a `KIND*` entry becomes the sticky fault."""
    state.plan[deployment] = deque(f for f in faults if not f.endswith("*"))
    sticky = [f.rstrip("*") for f in faults if f.endswith("*")]
    if sticky:
        state.sticky[deployment] = sticky[-1]
    else:
        state.sticky.pop(deployment, None)


def dumps(document: Any) -> str:
    return json.dumps(document, separators=(",", ":"))  # compact, as Azure sends


def common_headers() -> dict[str, str]:
    return {
        "apim-request-id": str(uuid.uuid4()),
        "x-ms-region": "Sweden Central",
        "x-ratelimit-remaining-requests": "99",
        "x-ratelimit-remaining-tokens": "99000",
    }


def azure_error(status: int, code: str, message: str, **headers: str) -> web.Response:
    body = {"error": {"code": code, "message": message}}
    return web.json_response(
        body, status=status, headers=common_headers() | headers, dumps=dumps
    )


def authorized(request: web.Request) -> bool:
    settings = request.app[SIM_STATE].settings
    key = request.headers.get("api-key")
    auth = request.headers.get("Authorization", "")
    bearer = auth[7:] if auth.lower().startswith("bearer ") else ""
    if settings.api_key is None:
        return bool(key or bearer)
    return key == settings.api_key


def refusal(request: web.Request, deployment: str) -> web.Response | None:
    """Azure's answer when the key is wrong or the deployment does not exist;
    None when the request may go on."""
    if not authorized(request):
        return unauthorized()
    deployments = request.app[SIM_STATE].settings.deployments
    if deployments is not None and deployment not in deployments:
        return azure_error(
            404,
            "DeploymentNotFound",
            "The API deployment for this resource does not exist. If you created "
            "the deployment within the last 5 minutes, please wait a moment and "
            "try again.",
        )
    return None


def unauthorized() -> web.Response:
    return azure_error(
        401,
        "401",
        "Access denied due to invalid subscription key or wrong API endpoint. "
        "Make sure to provide a valid key for an active subscription and use a "
        "correct regional API endpoint for your resource.",
    )


async def read_json(request: web.Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        return None


def sse(event: Any, name: str | None = None) -> bytes:
    """One SSE event; `name` adds an `event:` line (Assistants, Responses)."""
    data = event if isinstance(event, str) else dumps(event)
    head = f"event: {name}\n" if name else ""
    return f"{head}data: {data}\n\n".encode()

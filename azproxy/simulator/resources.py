"""Resource-scoped APIs: routing, the v1 api-version rule and the object store.

Paths are served both classic (`/openai/{path}?api-version=V`, with a V that
serves them) and v1 (`/openai/v1/{path}`, which refuses a dated api-version:
only none, `preview` or `latest`, so a proxy that sends a dated version to a
v1 path is caught); served.py says which. Objects live in memory per
simulator.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .common import authorized, azure_error, dumps, read_json, unauthorized
from .served import classic_serves, v1_serves

__all__ = [
    "STORE",
    "Route",
    "Store",
    "bad_v1_version",
    "json_body",
    "listing",
    "missing",
    "new_id",
    "now",
    "ok",
    "setup",
    "v1_version_ok",
]

ROOTS = "files|uploads|batches|fine_tuning|assistants|threads|vector_stores|responses"
V1_VERSIONS = frozenset({"preview", "latest"})


@dataclass
class StoredFile:
    record: dict[str, Any]
    content: bytes | None  # None when too large to keep: only hashed


@dataclass
class Store:
    files: dict[str, StoredFile] = field(default_factory=dict)
    # kind ("batch", "response", "assistant", ...) -> id -> object
    objects: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    inputs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def put(self, kind: str, document: dict[str, Any]) -> dict[str, Any]:
        self.objects.setdefault(kind, {})[document["id"]] = document
        return document

    def get(self, kind: str, id_: str) -> dict[str, Any] | None:
        return self.objects.get(kind, {}).get(id_)

    def all(self, kind: str) -> list[dict[str, Any]]:
        return list(self.objects.get(kind, {}).values())


STORE = web.AppKey("azproxy.sim_store", Store)

Handler = Callable[[web.Request, Sequence[str]], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: tuple[str, ...]  # path segments; "*" matches one id
    handler: Handler

    def ids(self, method: str, segments: Sequence[str]) -> list[str] | None:
        if method != self.method or len(segments) != len(self.pattern):
            return None
        ids = []
        for want, got in zip(self.pattern, segments, strict=True):
            if want == "*":
                ids.append(got)
            elif want != got:
                return None
        return ids


def setup(app: web.Application, routes: Sequence[Route]) -> None:
    app[STORE] = Store()

    async def handle(request: web.Request) -> web.StreamResponse:
        v1 = request.path.startswith("/openai/v1/")
        if v1 and not v1_version_ok(request):
            return bad_v1_version()
        root, version = request.match_info["root"], request.query.get("api-version")
        served = v1_serves(root, version) if v1 else classic_serves(root, version)
        if not served:
            return azure_error(404, "404", "Resource not found")
        if not authorized(request):
            return unauthorized()
        rest = request.match_info["rest"].strip("/")
        segments = [root, *(rest.split("/") if rest else [])]
        for route in routes:
            ids = route.ids(request.method, segments)
            if ids is not None:
                return await route.handler(request, ids)
        return azure_error(404, "404", "Resource not found")

    pattern = "{root:" + ROOTS + "}{rest:(?:/.*)?}"
    app.router.add_route("*", "/openai/v1/" + pattern, handle)
    app.router.add_route("*", "/openai/" + pattern, handle)


def v1_version_ok(request: web.Request) -> bool:
    version = request.query.get("api-version")
    return version is None or version in V1_VERSIONS


def bad_v1_version() -> web.Response:
    return azure_error(
        400,
        "BadRequest",
        "The v1 API takes no dated api-version (use none, or 'preview').",
    )


def new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


def now() -> int:
    return int(time.time())


def ok(document: Any, status: int = 200) -> web.Response:
    return web.json_response(document, status=status, dumps=dumps)


def listing(items: list[dict[str, Any]], limit: int | None = None) -> web.Response:
    shown = items[:limit] if limit else items
    return ok(
        {
            "object": "list",
            "data": shown,
            "first_id": shown[0]["id"] if shown else None,
            "last_id": shown[-1]["id"] if shown else None,
            "has_more": len(shown) < len(items),
        }
    )


async def json_body(request: web.Request) -> dict[str, Any] | web.Response:
    body = await read_json(request)
    if not isinstance(body, dict):
        return azure_error(400, "invalid_request", "The body must be a JSON object.")
    return body


def missing(kind: str, id_: str) -> web.Response:
    return azure_error(404, "404", f"No {kind} found with id '{id_}'.")

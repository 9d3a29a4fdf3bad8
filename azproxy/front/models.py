"""GET /v1/models, answered by azproxy from the client's mapping.

The original proxy returned a stale static list; this lists what the
client's credentials can actually reach, in OpenAI's list shape.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from azproxy.errors import NotFound
from azproxy.keys import CALLER

__all__ = ["get_model", "list_models"]


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "azure-openai"}


async def list_models(request: web.Request) -> web.Response:
    names = request[CALLER].model_names()
    return web.json_response({"object": "list", "data": [_model(n) for n in names]})


async def get_model(request: web.Request) -> web.Response:
    name = request.match_info["model"]
    if name not in request[CALLER].model_names():
        raise NotFound(
            f"The model '{name}' is not in your azproxy mapping.",
            code="model_not_found",
            param="model",
        )
    return web.json_response(_model(name))

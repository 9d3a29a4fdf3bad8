"""Pure mapping from an OpenAI request path to the Azure OpenAI URL.

Classic API (every call carries `api-version`):
  deployment-scoped  /v1/chat/completions -> /openai/deployments/{dep}/chat/completions
Azure's v1 API (api version `v1`): /v1/{path} -> /openai/v1/{path}, no api-version,
and the body's `model` names the deployment.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum

from yarl import URL

from .errors import MethodNotAllowed, NotFound

__all__ = [
    "DEPLOYMENT_PATHS",
    "Scope",
    "classify",
    "upstream_base",
    "upstream_url",
]


class Scope(Enum):
    DEPLOYMENT = "deployment"  # the deployment comes from the body's model


# OpenAI paths (after /v1/) that Azure serves under /openai/deployments/{dep}/.
DEPLOYMENT_PATHS = frozenset(
    {
        "chat/completions",
        "completions",
        "embeddings",
        "images/generations",
        "audio/speech",
    }
)

# OpenAI endpoints Azure OpenAI does not offer: say so instead of a bare 404.
NO_AZURE_EQUIVALENT = {
    "moderations": "Azure OpenAI has no moderations endpoint; "
    "content filtering runs on every Azure OpenAI request instead.",
    "images/variations": "Azure OpenAI has no image variations endpoint.",
}


def classify(method: str, subpath: str) -> Scope:
    """Decide how an OpenAI path (after `/v1/`) maps to Azure, or raise."""
    if subpath in DEPLOYMENT_PATHS:
        if method != "POST":
            raise MethodNotAllowed(f"Use POST for /v1/{subpath}, not {method}.")
        return Scope.DEPLOYMENT
    if subpath in NO_AZURE_EQUIVALENT:
        raise NotFound(NO_AZURE_EQUIVALENT[subpath], code="unsupported_endpoint")
    raise unknown_url(method, "/v1/" + subpath)


def unknown_url(method: str, path: str) -> NotFound:
    return NotFound(
        f"Invalid URL ({method} {path}): azproxy serves the OpenAI API under /v1/."
    )


def upstream_base(template: str, resource: str) -> str:
    """The Azure base URL for a resource; the name was validated beforehand."""
    return template.replace("{resource}", resource).rstrip("/")


def upstream_url(
    base: str,
    subpath: str,
    *,
    deployment: str,
    api_version: str,
    client_query: Mapping[str, str] | None = None,
) -> URL:
    """Build the Azure URL. Every part was validated, so no re-encoding is needed.

    The client's own query parameters are kept, except `api-version`, which
    azproxy always decides.
    """
    if api_version == "v1":
        path, version = f"/openai/v1/{subpath}", None
    else:
        path, version = f"/openai/deployments/{deployment}/{subpath}", api_version
    if not client_query:
        query = f"?api-version={version}" if version else ""
        return URL(f"{base}{path}{query}", encoded=True)
    params = [(k, v) for k, v in client_query.items() if k.lower() != "api-version"]
    if version:
        params.append(("api-version", version))
    return URL(f"{base}{path}", encoded=True).with_query(params)

"""Pure mapping from an OpenAI request path to the Azure OpenAI URL.

Classic API (every call carries `api-version`):
  deployment-scoped  /v1/chat/completions -> /openai/deployments/{dep}/chat/completions
  uploads            /v1/audio/transcriptions (multipart) -> the same, deployment
                     from the `model` form field
  resource-scoped    /v1/files/{id} -> /openai/files/{id}
Azure's v1 API: /v1/{path} -> /openai/v1/{path}, no api-version (or
`preview`), and the body's `model` names the deployment. Which of the two a
family takes, and with which version, is families.route's decision.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import Enum

from yarl import URL

from azproxy.errors import MethodNotAllowed, NotFound
from azproxy.relay.families import RESOURCE_ROOTS, Route
from azproxy.remembered import Remembered

__all__ = [
    "DEPLOYMENT_PATHS",
    "NO_AZURE_EQUIVALENT",
    "RESOURCE_METHODS",
    "RESOURCE_ROOTS",
    "UPLOAD_PATHS",
    "V1_CLIENT_VERSIONS",
    "Scope",
    "classify",
    "model_names_deployment",
    "unknown_url",
    "upstream_url",
]


class Scope(Enum):
    DEPLOYMENT = "deployment"  # JSON body; the deployment comes from its model
    UPLOAD = "upload"  # multipart body; the deployment comes from its model field
    RESOURCE = "resource"  # /openai/{path}: files, batches, responses, ...


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
# The same, with a multipart/form-data body (a file and form fields).
UPLOAD_PATHS = frozenset({"audio/transcriptions", "audio/translations", "images/edits"})

# RESOURCE_ROOTS (from families.py, which gives each one's family): first
# segments of the paths Azure serves per resource, not per deployment.
# Stateful objects (files, batches, assistants, responses...) live on the
# resource, and their ids come back in later calls.
RESOURCE_METHODS = frozenset({"GET", "POST", "DELETE"})
# Object ids and path words: no '/', '%', '..' or anything to encode, so a
# path segment can never climb out of /openai/ on the upstream.
SEGMENT_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,255}")

# Resource calls whose body's `model` names an Azure deployment (Azure reads
# it as one), so azproxy maps it like a chat request's. Fine-tuning jobs are
# not here on purpose: their `model` is a base model name, not a deployment.
_MODEL_IS_DEPLOYMENT = (
    re.compile(r"responses"),
    re.compile(r"assistants(?:/[^/]+)?"),
    re.compile(r"threads(?:/[^/]+)?/runs"),
)

# api-version values a client may ask for on Azure's v1 API; any other
# (dated) value is dropped, since v1 rejects dated versions.
V1_CLIENT_VERSIONS = frozenset({"preview", "latest"})
# Query parameters of the client's that never go upstream (lower case): the
# api-version is azproxy's to decide; `api-key` is the client's credential.
_DROPPED_PARAMS = frozenset({"api-version", "api-key"})

# OpenAI endpoints Azure OpenAI does not offer: say so instead of a bare 404.
NO_AZURE_EQUIVALENT = {
    "moderations": "Azure OpenAI has no moderations endpoint; "
    "content filtering runs on every Azure OpenAI request instead.",
    "images/variations": "Azure OpenAI has no image variations endpoint.",
}


def classify(method: str, subpath: str) -> Scope:
    """Decide how an OpenAI path (after `/v1/`) maps to Azure, or raise."""
    if subpath in DEPLOYMENT_PATHS or subpath in UPLOAD_PATHS:
        if method != "POST":
            raise MethodNotAllowed(f"Use POST for /v1/{subpath}, not {method}.")
        return Scope.DEPLOYMENT if subpath in DEPLOYMENT_PATHS else Scope.UPLOAD
    if subpath in NO_AZURE_EQUIVALENT:
        raise NotFound(NO_AZURE_EQUIVALENT[subpath], code="unsupported_endpoint")
    segments = subpath.split("/")
    if segments[0] in RESOURCE_ROOTS and all(SEGMENT_RE.fullmatch(s) for s in segments):
        if method not in RESOURCE_METHODS:
            raise MethodNotAllowed(
                f"/v1/{subpath} takes GET, POST or DELETE, not {method}."
            )
        return Scope.RESOURCE
    raise unknown_url(method, "/v1/" + subpath)


def model_names_deployment(method: str, subpath: str) -> bool:
    """Whether a resource call's JSON `model` is a deployment name to map."""
    return method == "POST" and any(p.fullmatch(subpath) for p in _MODEL_IS_DEPLOYMENT)


def unknown_url(method: str, path: str) -> NotFound:
    return NotFound(
        f"Invalid URL ({method} {path}): azproxy serves the OpenAI API under /v1/."
    )


# URLs built before, by their text: most requests go to the same few, and a
# yarl URL costs four times the lookup. (URLs are immutable: shared safely.)
_BUILT_KEPT = 256  # a client varying its deployment churns it
_BUILT: Remembered[str, URL] = Remembered(
    lambda text: URL(text, encoded=True), _BUILT_KEPT
)


def upstream_url(
    base: str,
    subpath: str,
    *,
    deployment: str | None,
    route: Route,
    client_query: Mapping[str, str] | None = None,
) -> URL:
    """Build the Azure URL. Every part was validated, so no re-encoding is needed.

    `deployment` None means a resource-scoped path (/openai/{subpath}). The
    client's own query parameters are kept, except two: `api-version`, which
    the route decides (on v1 the client may still ask for `preview` or
    `latest`, the v1 way to reach preview features), and `api-key`, the
    client's credential, which Azure would read from the query too.
    """
    version = route.version
    if route.v1:
        path = f"/openai/v1/{subpath}"
        asked = client_query.get("api-version") if client_query else None
        if asked in V1_CLIENT_VERSIONS:
            version = asked
    elif deployment is None:
        path = f"/openai/{subpath}"
    else:
        path = f"/openai/deployments/{deployment}/{subpath}"
    if not client_query:
        text = f"{base}{path}?api-version={version}" if version else f"{base}{path}"
        return _BUILT[text]
    params = [
        (k, v) for k, v in client_query.items() if k.lower() not in _DROPPED_PARAMS
    ]
    if version:
        params.append(("api-version", version))
    return URL(f"{base}{path}", encoded=True).with_query(params)

"""Who is calling and which Azure deployments they may reach.

The gate (auth/gate.py) turns the presented credentials into a Caller; the relay
asks it for the backends that serve the request's model, in order of
preference. Two kinds of caller:
- PassthroughCaller: the original proxy's RESOURCE:DEPLOYMENT:KEY token, which
  names its one endpoint and carries its own key;
- ServerCaller: an azproxy access key (or anonymous, when allowed), routed by
  the server's model map to endpoints whose credentials stay on the server.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from azproxy.auth.azure_auth import ApiKeyAuth, UpstreamAuth
from azproxy.errors import BadRequest, Forbidden
from azproxy.relay.attempts import FAILOVER, RETRY, Attempts
from azproxy.relay.backends import Backend, Endpoint
from azproxy.relay.families import sends_deployments_to_v1
from azproxy.settings.patterns import DEPLOYMENT_RE
from azproxy.settings.secrets import Secret
from azproxy.settings.server_side import (
    AccessKey,
    EndpointConfig,
    Limits,
    upstream_base,
)

if TYPE_CHECKING:
    from azproxy.auth.credentials import PassthroughToken
    from azproxy.settings.config import Config

__all__ = [
    "Caller",
    "PassthroughCaller",
    "Router",
    "ServerCaller",
    "dotless",
]


class Caller(Protocol):
    name: str
    # Who is counted and logged: an access key's configured name,
    # `passthrough` (every pass-through token) or `anonymous`.
    key_name: str
    # How its calls are tried at Azure: one deployment retried, as the
    # original proxy did (pass-through tokens), or failing over between a
    # model's deployments (server-side routing).
    attempts: Attempts
    # Its access key's limits; None: nothing to count (no cost per request).
    limits: Limits | None

    @property
    def needs_model(self) -> bool:
        """Whether the backend depends on the request's `model`."""
        ...

    def backends(self, model: str | None) -> Sequence[Backend]:
        """The backends for a model, best first; raises if there are none."""
        ...

    def model_names(self) -> list[str]: ...

    def resource_endpoint(self) -> Endpoint:
        """The endpoint that serves resource-scoped calls (files, batches,
        assistants, responses...): their objects live on one Azure resource,
        and later calls name them by id, so they all go to the same one."""
        ...


class PassthroughCaller:
    """A pass-through token: one resource, the token's own key and map."""

    attempts: Attempts = RETRY
    limits: Limits | None = None
    key_name = "passthrough"

    def __init__(self, token: PassthroughToken, config: Config) -> None:
        self.token = token
        self.name = f"passthrough:{token.resource}"
        self.endpoint = Endpoint(
            token.resource,
            upstream_base(config.upstream, token.resource),
            token.api_version or config.api_version,
            ApiKeyAuth(Secret(token.key)),
            config.family_api_versions,
        )
        self._backends = {
            deployment: (Backend(self.endpoint, deployment),)
            for deployment in {token.default_deployment, *token.model_map.values()}
        }
        # Asked twice per request; token and endpoint never change, so once.
        self.needs_model = token.needs_model or sends_deployments_to_v1(self.endpoint)

    def backends(self, model: str | None) -> Sequence[Backend]:
        return self._backends[self.token.deployment_for(model)]

    def model_names(self) -> list[str]:
        return self.token.model_names()

    def resource_endpoint(self) -> Endpoint:
        return self.endpoint


def dotless(model: str) -> str:
    """Azure's deployment naming habit: gpt-3.5-turbo -> gpt-35-turbo."""
    return model.replace(".", "")


class Router:
    """The server's model map, with live endpoints (and their credentials)."""

    def __init__(
        self, config: Config, auth_for: Callable[[EndpointConfig], UpstreamAuth]
    ) -> None:
        self.endpoints = {
            e.name: Endpoint(
                e.name,
                e.base_url(config.upstream),
                e.api_version or config.api_version,
                auth_for(e),
                config.family_api_versions,
                server_side=True,
            )
            for e in config.endpoints
        }
        self.routes: dict[str, tuple[Backend, ...]] = {}
        for model, routes in config.model_map.items():
            backends = []
            for route in routes:
                found = config.endpoint(route.endpoint)
                assert found is not None  # Config validation guarantees it
                endpoint = self.endpoints[found.name]
                backends.append(
                    Backend(endpoint, route.deployment, route.priority, route.weight)
                )
            self.routes[model] = tuple(backends)
        # Resource-scoped calls (files, responses, ...) go to the first
        # configured endpoint: stateful objects must stay on one resource.
        self.resource_endpoint = next(iter(self.endpoints.values()), None)
        self.fallback = (
            next(iter(self.endpoints.values()))
            if config.model_fallback and len(self.endpoints) == 1
            else None
        )

    def backends(self, model: str | None) -> Sequence[Backend]:
        if model is None:
            raise BadRequest(
                "The request has no 'model'; azproxy needs it to choose the "
                "Azure deployment.",
                param="model",
                code="model_required",
            )
        found = self.routes.get(model)
        if found:
            return found
        guesses: list[Backend] = []
        if self.fallback is not None:
            # The model name itself first, then Azure's dotless habit; the
            # relay moves on when Azure answers DeploymentNotFound.
            names = dict.fromkeys((model, dotless(model)))
            guesses = [
                Backend(self.fallback, name, priority=order, guess=True)
                for order, name in enumerate(
                    n for n in names if DEPLOYMENT_RE.fullmatch(n)
                )
            ]
        if guesses:
            return guesses
        mapped = ", ".join(sorted(self.routes)) or "none"
        raise BadRequest(
            f"The model {model!r} is not mapped to an Azure deployment "
            f"(mapped models: {mapped}).",
            param="model",
            code="model_not_found",
        )

    def model_names(self) -> list[str]:
        return list(self.routes)


class ServerCaller:
    """An access key (or an anonymous caller) routed by the server's map."""

    needs_model = True
    attempts: Attempts = FAILOVER

    def __init__(self, router: Router, key: AccessKey | None) -> None:
        self.router = router
        self.key = key
        self.name = self.key_name = key.name if key is not None else "anonymous"
        self.limits = key.limits if key is not None else None

    def backends(self, model: str | None) -> Sequence[Backend]:
        allowed = self.key.models if self.key is not None else None
        if allowed is not None and model not in allowed:
            raise Forbidden(
                f"This access key may not use the model {model!r} "
                f"(allowed: {', '.join(sorted(allowed))}).",
                param="model",
            )
        return self.router.backends(model)

    def model_names(self) -> list[str]:
        names = self.router.model_names()
        allowed = self.key.models if self.key is not None else None
        return [n for n in names if allowed is None or n in allowed]

    def resource_endpoint(self) -> Endpoint:
        if self.key is not None and self.key.models is not None:
            # Files and batches can name any deployment (a batch's input
            # lines do): a key limited to some models must not reach them.
            raise Forbidden(
                "This access key is limited to the models "
                f"{', '.join(sorted(self.key.models))}; files, batches, "
                "assistants and the other resource APIs could reach any "
                "deployment, so they are not open to it.",
                code="resource_api_not_allowed",
            )
        endpoint = self.router.resource_endpoint
        if endpoint is None:
            raise BadRequest(
                "No Azure endpoint is configured for files, batches, assistants "
                "or responses (set AZURE_OPENAI_ENDPOINT or add [endpoints.NAME]).",
                code="no_endpoint",
            )
        return endpoint

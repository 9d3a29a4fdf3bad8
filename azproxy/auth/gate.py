"""The gate: presented credentials -> a Caller, or 401. Never an open relay.

With server-side credentials configured, a request needs a valid azproxy
access key (compared in constant time with every configured key); pass-through
tokens are accepted only where the passthrough setting allows them, and
anonymous callers only with allow_anonymous and no access keys at all.
GET /metrics asks the same access-key check (metrics_require_key), or for
metrics_key.

setup() builds the gate over the server's callers, each endpoint with its
credentials for Azure: an api-key, a static bearer token, or Entra ID tokens
from one background source that lives as long as the app.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from azproxy.auth.azure_auth import ApiKeyAuth, BearerAuth, EntraAuth, UpstreamAuth
from azproxy.auth.callers import Caller, PassthroughCaller, Router, ServerCaller
from azproxy.auth.credentials import parse_passthrough, presented_token
from azproxy.errors import ConfigError, InvalidCredentials
from azproxy.front.lifecycle import LIFECYCLE
from azproxy.remembered import Remembered

if TYPE_CHECKING:
    from azproxy.settings.config import Config
    from azproxy.settings.server_side import AccessKey, EndpointConfig

__all__ = ["GATE", "Gate", "setup"]

PASSTHROUGH_CACHE = 1024


class Gate:
    def __init__(self, config: Config, router: Router) -> None:
        self.config = config
        self.router = router
        self._callers = {
            id(key): ServerCaller(router, key) for key in config.access_keys
        }
        self._anonymous = (
            ServerCaller(router, None)
            if config.server_side and config.allow_anonymous and not config.access_keys
            else None
        )
        # A pass-through token's caller, made the first time it is seen.
        self._passthrough: Remembered[str, PassthroughCaller] = Remembered(
            lambda token: PassthroughCaller(parse_passthrough(token), config),
            PASSTHROUGH_CACHE,
        )
        self._metrics_refusal = _metrics_refusal(config)
        # Read on every request: found once (each a property of Config).
        self._passthrough_allowed = config.passthrough_allowed
        self._server_side = config.server_side

    def access_key(self, presented: str) -> AccessKey | None:
        """The access key presented, if any. Compared with every key in
        constant time, so the answer's timing tells nothing about how close
        a guess was or which key it hit."""
        found = None
        for key in self.config.access_keys:
            if key.key.matches(presented) and found is None:
                found = key
        return found

    def caller(self, presented: str | None) -> Caller:
        config = self.config
        if presented and config.access_keys:
            key = self.access_key(presented)
            if key is not None:
                return self._callers[id(key)]
        server_side = self._server_side
        if (
            presented
            and self._passthrough_allowed
            and (":" in presented or not server_side)
        ):
            return self._passthrough[presented]
        if self._anonymous is not None:
            return self._anonymous
        if presented:
            raise self._refused(presented)
        if server_side:
            raise InvalidCredentials(
                "No access key: send 'Authorization: Bearer <azproxy access key>' "
                "or an 'api-key' header."
            )
        raise InvalidCredentials(
            "No credentials: send 'Authorization: Bearer "
            "RESOURCE:DEPLOYMENT:AZURE_KEY[:API_VERSION]' or an 'api-key' header."
        )

    def _refused(self, presented: str) -> InvalidCredentials:
        """A credential that is no access key; a pass-through token is told
        why it is refused and what lets it in (never what it holds)."""
        if presented.count(":") not in (2, 3):  # RESOURCE:DEPLOYMENT:KEY[:VERSION]
            return InvalidCredentials("Invalid azproxy access key.")
        why = (
            "switched off (passthrough = false)"
            if self.config.passthrough is False
            else "off because server-side endpoints are configured"
        )
        return InvalidCredentials(
            "Invalid azproxy access key. This looks like a pass-through token "
            f"(RESOURCE:DEPLOYMENT:KEY), and pass-through tokens are {why}: send "
            "an azproxy access key instead, or have the operator set "
            "passthrough = true (AZPROXY_PASSTHROUGH=true) to accept both."
        )

    def may_read_metrics(self, request: web.Request) -> None:
        """Who may read /metrics: anyone, or (with metrics_key or
        metrics_require_key) whoever presents metrics_key or an access key;
        401 for the others."""
        refusal = self._metrics_refusal
        if refusal is None:
            return
        presented = presented_token(request.headers)
        if presented is not None:
            # Both compared in constant time (Secret.matches).
            metrics_key = self.config.metrics_key
            if metrics_key is not None and metrics_key.matches(presented):
                return
            if (
                self.config.metrics_require_key
                and self.access_key(presented) is not None
            ):
                return
        raise InvalidCredentials(refusal)


def _metrics_refusal(config: Config) -> str | None:
    """What a refused /metrics reader is told, or None: /metrics is open."""
    wanted = []
    if config.metrics_key is not None:
        wanted.append("the metrics key (metrics_key)")
    if config.metrics_require_key:
        wanted.append("an azproxy access key (metrics_require_key)")
    return f"GET /metrics needs {' or '.join(wanted)}." if wanted else None


GATE = web.AppKey("azproxy.gate", Gate)


def setup(
    app: web.Application,
    config: Config,
    *,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """app[GATE] (after app[LIFECYCLE], which waits for the first Entra ID
    token); `clock` and `sleep` time Entra ID tokens (wall-clock time)."""
    entra = _entra_auth(config, clock, sleep)
    if entra is not None:
        app.cleanup_ctx.append(_entra_tokens(entra))
        # Not ready before the first token (for a while): every request
        # would get 503 entra_token_unavailable.
        app[LIFECYCLE].awaited.append(entra.ready_to_serve)
    app[GATE] = Gate(config, Router(config, lambda e: _upstream_auth(e, entra)))


def _upstream_auth(endpoint: EndpointConfig, entra: EntraAuth | None) -> UpstreamAuth:
    if endpoint.api_key is not None:
        return ApiKeyAuth(endpoint.api_key)
    if endpoint.ad_token is not None:
        return BearerAuth(endpoint.ad_token)
    assert entra is not None  # an endpoint with entra = true exists
    return entra


def _entra_auth(
    config: Config,
    clock: Callable[[], float],
    sleep: Callable[[float], Awaitable[None]],
) -> EntraAuth | None:
    """One Entra ID token source shared by every endpoint that uses Entra ID."""
    if not any(e.entra for e in config.endpoints):
        return None
    try:
        from azure.identity.aio import DefaultAzureCredential
    except ImportError:
        raise ConfigError(
            [
                "entra: Entra ID needs the azure-identity package: "
                "pip install 'azproxy[entra]'"
            ]
        ) from None
    credential = DefaultAzureCredential()
    return EntraAuth(credential, config.entra_scope, clock=clock, sleep=sleep)


def _entra_tokens(
    entra: EntraAuth,
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        await entra.start()  # a failure is logged and retried in the background
        yield
        await entra.close()

    return lifetime

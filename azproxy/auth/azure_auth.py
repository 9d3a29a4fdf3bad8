"""How azproxy authenticates to Azure: an api-key, a static bearer token, or
an Entra ID token kept fresh in the background.

`header()` is synchronous and cheap: it runs on every request and never waits
for a token service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from azproxy.errors import ServiceUnavailable

if TYPE_CHECKING:
    from azproxy.settings.secrets import Secret

__all__ = [
    "ENTRA_READY_WAIT_S",
    "ApiKeyAuth",
    "BearerAuth",
    "EntraAuth",
    "UpstreamAuth",
]

log = logging.getLogger("azproxy.entra")

# How long /readyz waits for the first Entra ID token at start. A managed or
# workload identity answers within seconds; one that cannot (no role, no
# identity) should not keep the instance out of service for ever: after
# this, it is ready, and each request's 503 entra_token_unavailable says why.
ENTRA_READY_WAIT_S = 30.0


class UpstreamAuth(Protocol):
    # An Entra ID token (Authorization: Bearer), not an api-key: Azure
    # answers 403 to a token whose identity lacks a role.
    bearer: ClassVar[bool]

    def header(self) -> tuple[str, str]: ...


class ApiKeyAuth:
    __slots__ = ("_header",)
    bearer: ClassVar[bool] = False

    def __init__(self, key: Secret) -> None:
        self._header = ("api-key", key.reveal())

    def header(self) -> tuple[str, str]:
        return self._header


class BearerAuth:
    """A static Entra ID token (AZURE_OPENAI_AD_TOKEN)."""

    __slots__ = ("_header",)
    bearer: ClassVar[bool] = True

    def __init__(self, token: Secret) -> None:
        self._header = ("Authorization", f"Bearer {token.reveal()}")

    def header(self) -> tuple[str, str]:
        return self._header


class EntraAuth:
    """A token from an azure-identity async credential, refreshed before expiry.

    The first token is fetched at start-up; after that a background task
    fetches the next one `refresh_margin_s` before the current one expires
    (or at half its life for short-lived tokens, or sooner if the credential
    says so), retrying every `retry_s` on failure while the current token is
    still valid. Requests never wait for it; readiness does, at start
    (ready_to_serve).

    `clock` (wall-clock time, as tokens' expires_on is) and `sleep` time all
    of it; a test passes a fake clock rather than wait for a token to expire.
    """

    bearer: ClassVar[bool] = True

    def __init__(
        self,
        credential: Any,
        scope: str,
        *,
        refresh_margin_s: float = 300.0,
        retry_s: float = 10.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._credential = credential
        self._scope = scope
        self._margin_s = refresh_margin_s
        self._retry_s = retry_s
        self._clock = clock
        self._sleep = sleep
        self._header: tuple[str, str] | None = None
        self._expires_on = 0.0
        self._refresh_on = 0.0
        self._error = "no token fetched yet"
        self._task: asyncio.Task[None] | None = None
        self._started_at = 0.0

    def header(self) -> tuple[str, str]:
        if self._header is None or self._clock() >= self._expires_on:
            raise ServiceUnavailable(
                f"azproxy has no valid Entra ID token for Azure ({self._error}).",
                code="entra_token_unavailable",
            )
        return self._header

    def ready_to_serve(self) -> bool:
        """Whether /readyz may say ready: a first token has come, or
        ENTRA_READY_WAIT_S have passed since start without one."""
        if self._header is not None:
            return True
        if self._clock() - self._started_at < ENTRA_READY_WAIT_S:
            return False
        log.warning(
            "no Entra ID token %g s after start (%s): ready anyway; requests get "
            "503 entra_token_unavailable until a token comes",
            ENTRA_READY_WAIT_S,
            self._error,
        )
        return True

    async def start(self) -> None:
        self._started_at = self._clock()
        await self._fetch()
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._refresh_loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._credential.close()

    async def _fetch(self) -> None:
        try:
            info = await self._credential.get_token_info(self._scope)
        except Exception as exc:
            # azure-identity messages name the credential that failed; they
            # carry no token.
            self._error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            log.error("Entra ID token fetch failed: %s", self._error)
            return
        now = self._clock()
        self._header = ("Authorization", f"Bearer {info.token}")
        self._expires_on = float(info.expires_on)
        lead = min(self._margin_s, max(self._expires_on - now, 0.0) / 2)
        refresh_on = getattr(info, "refresh_on", None) or self._expires_on
        self._refresh_on = min(float(refresh_on), self._expires_on - lead)
        log.info(
            "Entra ID token fetched; valid for %d s", self._expires_on - self._clock()
        )

    async def _refresh_loop(self) -> None:
        while True:
            # A short floor keeps a token service that hands out
            # already-expiring tokens from being hammered.
            await self._sleep(max(self._refresh_on - self._clock(), 0.1))
            before = self._expires_on
            await self._fetch()
            if self._expires_on > before:
                continue
            # Not renewed: the fetch failed, or the credential served its
            # cache (azure-identity renews a still-valid token at most every
            # 30 s, an expired one at once). Try again soon, and at the
            # latest right when the current token expires.
            now = self._clock()
            retry_at = now + self._retry_s
            if now < self._expires_on:
                retry_at = min(retry_at, self._expires_on + 0.05)
            self._refresh_on = retry_at

"""EntraAuth's refresh schedule, on a fake clock, with a scripted credential.

tests/integration/test_entra.py drives the real azure-identity flow; this
covers what that flow does only after real time passes: azure-identity
serves a still-valid token from its cache (it asks the token service again
at most every 30 s), so the refresh at half a short token's life gets the
same token back, and azproxy must try again when that token expires.
"""

from __future__ import annotations

import asyncio

from azure.core.credentials import AccessTokenInfo

from azproxy.auth.azure_auth import EntraAuth
from tests.clock import FakeClock


class Credential:
    """Answers get_token_info with the tokens given, in turn."""

    def __init__(self, *tokens: AccessTokenInfo) -> None:
        self.tokens = list(tokens)
        self.calls = 0

    async def get_token_info(self, scope: str) -> AccessTokenInfo:
        self.calls += 1
        return self.tokens.pop(0)

    async def close(self) -> None:
        pass


async def fetched(credential: Credential, calls: int, clock: FakeClock) -> None:
    """Until the refresh task has made `calls` fetches and sleeps again."""
    async with asyncio.timeout(5):
        while credential.calls < calls or not clock.sleeping:
            await asyncio.sleep(0)


async def test_a_token_served_from_the_cache_is_fetched_again_at_expiry() -> None:
    clock = FakeClock(1000.0)
    short = AccessTokenInfo("token-1", 1002)
    credential = Credential(short, short, AccessTokenInfo("token-2", 4600))
    entra = EntraAuth(credential, "scope", clock=clock, sleep=clock.sleep)
    await entra.start()
    try:
        await fetched(credential, 1, clock)
        assert entra.header() == ("Authorization", "Bearer token-1")
        clock.advance(1.0)  # half its life: the refresh gets the same token
        await fetched(credential, 2, clock)
        assert entra.header() == ("Authorization", "Bearer token-1")
        clock.advance(0.9)
        await asyncio.sleep(0)
        assert credential.calls == 2  # no new fetch while it is still valid
        clock.advance(0.2)  # past its expiry (and the 50 ms after): fetched again
        await fetched(credential, 3, clock)
        assert entra.header() == ("Authorization", "Bearer token-2")
    finally:
        await entra.close()


class Refusing(Credential):
    """Fails its first fetch (no identity yet), then hands out `tokens`."""

    async def get_token_info(self, scope: str) -> AccessTokenInfo:
        if self.calls == 0:
            self.calls += 1
            raise RuntimeError("ManagedIdentityCredential: no identity yet")
        return await super().get_token_info(scope)


async def test_ready_to_serve_once_the_first_token_comes() -> None:
    clock = FakeClock(1000.0)
    credential = Refusing(AccessTokenInfo("token-1", 4600))
    entra = EntraAuth(credential, "scope", retry_s=10, clock=clock, sleep=clock.sleep)
    await entra.start()
    try:
        assert not entra.ready_to_serve()
        await fetched(credential, 1, clock)
        clock.advance(10)  # the retry after a failed fetch
        await fetched(credential, 2, clock)
        assert entra.ready_to_serve()
        assert entra.header() == ("Authorization", "Bearer token-1")
    finally:
        await entra.close()

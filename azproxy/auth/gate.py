"""The gate: presented credentials -> a Caller, or 401. Never an open relay.

With server-side credentials configured, a request needs a valid azproxy
access key (compared in constant time with every configured key); pass-through
tokens are accepted only where the passthrough setting allows them, and
anonymous callers only with allow_anonymous and no access keys at all.
"""

from __future__ import annotations

from collections.abc import Sequence

from azproxy.auth.callers import Caller, PassthroughCaller, Router, ServerCaller
from azproxy.auth.credentials import parse_passthrough
from azproxy.errors import InvalidCredentials
from azproxy.settings.config import Config
from azproxy.settings.server_side import AccessKey

__all__ = ["Gate", "match_access_key"]

PASSTHROUGH_CACHE = 1024


def match_access_key(keys: Sequence[AccessKey], presented: str) -> AccessKey | None:
    """The key that matches, comparing with every key in constant time, so the
    answer's timing tells nothing about how close a guess was or which key it hit."""
    found = None
    for key in keys:
        if key.key.matches(presented) and found is None:
            found = key
    return found


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
        self._passthrough: dict[str, PassthroughCaller] = {}

    def caller(self, presented: str | None) -> Caller:
        config = self.config
        if presented and config.access_keys:
            key = match_access_key(config.access_keys, presented)
            if key is not None:
                return self._callers[id(key)]
        if (
            presented
            and config.passthrough_allowed
            and (":" in presented or not config.server_side)
        ):
            return self._passthrough_caller(presented)
        if self._anonymous is not None:
            return self._anonymous
        if presented:
            raise InvalidCredentials("Invalid azproxy access key.")
        if config.server_side:
            raise InvalidCredentials(
                "No access key: send 'Authorization: Bearer <azproxy access key>' "
                "or an 'api-key' header."
            )
        raise InvalidCredentials(
            "No credentials: send 'Authorization: Bearer "
            "RESOURCE:DEPLOYMENT:AZURE_KEY[:API_VERSION]' or an 'api-key' header."
        )

    def _passthrough_caller(self, presented: str) -> PassthroughCaller:
        caller = self._passthrough.get(presented)
        if caller is None:
            caller = PassthroughCaller(parse_passthrough(presented), self.config)
            if len(self._passthrough) >= PASSTHROUGH_CACHE:
                self._passthrough.clear()
            self._passthrough[presented] = caller
        return caller

"""Secrets in settings: literal values or `env:NAME` references, never shown.

A config file may hold `api_key = "env:AZURE_KEY_SWEDEN"` instead of the key
itself; the reference is resolved when the settings load. A Secret's repr and
str are redacted, so a Config printed or logged shows no key.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

__all__ = ["ENV_PREFIX", "Secret", "resolve_secret"]

ENV_PREFIX = "env:"


class Secret:
    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str = "") -> None:
        self._value = value
        self.source = source  # where it came from, for messages: "env:X"

    def reveal(self) -> str:
        return self._value

    def matches(self, candidate: str) -> bool:
        """Constant-time comparison (no early exit on the first differing byte).

        Header values may carry undecodable bytes (aiohttp keeps them as
        surrogates): they simply do not match.
        """
        presented = candidate.encode("utf-8", "surrogateescape")
        return hmac.compare_digest(self._value.encode(), presented)

    def __repr__(self) -> str:
        return f"Secret({self.source or '***'})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and self.matches(other._value)

    def __hash__(self) -> int:
        return hash(self._value)


def resolve_secret(raw: object, where: str, environ: Mapping[str, str]) -> Secret:
    """Turn a literal or an `env:NAME` reference into a Secret, or raise ValueError."""
    if not isinstance(raw, str) or not raw:
        raise ValueError(f"{where}: expected a non-empty string or env:NAME")
    if raw.startswith(ENV_PREFIX):
        name = raw[len(ENV_PREFIX) :]
        value = environ.get(name)
        if value is None:
            raise ValueError(f"{where}: environment variable {name} is not set")
        if not value:
            raise ValueError(f"{where}: environment variable {name} is empty")
        return Secret(value, raw)
    return Secret(raw)

"""The Redis URL of shared state (redis_url): where it is, and its password
kept out of sight.

`redis://HOST:PORT/DB` or `rediss://...` (TLS, the certificate and host name
checked). The password may be written in the URL, as Kubernetes Secrets and
Azure's connection strings carry it, or as a reference to the environment,
`rediss://:env:REDIS_PASSWORD@host:6380`, so that a config file need not hold
it. A literal password is refused on the command line (a command line shows
in `ps`). The URL shown anywhere (repr, logs, check-config) has no password.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from yarl import URL

from azproxy.settings.secrets import ENV_PREFIX, Secret, resolve_secret

__all__ = ["SCHEMES", "RedisURL", "read_redis_url"]

SCHEMES = ("redis", "rediss")


@dataclass(frozen=True, slots=True)
class RedisURL:
    """A Redis URL without its password, and the password apart."""

    shown: str  # the URL without the password: safe to log
    password: Secret | None = None

    @property
    def tls(self) -> bool:
        return self.shown.startswith("rediss://")

    def reveal(self) -> str:
        """The URL a client connects with, password included."""
        if self.password is None:
            return self.shown
        url = URL(self.shown)
        return str(url.with_password(self.password.reveal()))

    def __repr__(self) -> str:
        return f"RedisURL({self.shown!r}{', password=***' if self.password else ''})"

    __str__ = __repr__


def read_redis_url(
    raw: Any, source: str, environ: Mapping[str, str]
) -> RedisURL | None:
    """A RedisURL from a setting's raw value ("" or "none": no shared state)."""
    if not isinstance(raw, str):
        raise ValueError(f"{source}: expected a redis:// or rediss:// URL")
    if raw.strip().lower() in ("", "none"):
        return None
    if raw.startswith(ENV_PREFIX):  # the whole URL from elsewhere (config file)
        raw = resolve_secret(raw, source, environ).reveal()
    try:
        url = URL(raw.strip())
    except ValueError:
        raise ValueError(f"{source}: not a URL") from None
    if url.scheme not in SCHEMES or not url.host:
        raise ValueError(
            f"{source}: use redis://HOST:PORT or rediss://HOST:PORT (TLS), "
            f"not {url.with_password(None).with_query(None)}"
        )
    if url.query_string or url.fragment:
        raise ValueError(f"{source}: no query or fragment allowed in the URL")
    if url.path not in ("", "/") and not url.path[1:].isdigit():
        raise ValueError(f"{source}: the path is a database number, like /0")
    password = None
    if url.password:
        if url.password.startswith(ENV_PREFIX):
            password = resolve_secret(url.password, source, environ)
        elif source.startswith("--"):
            raise ValueError(
                f"{source}: a password on the command line shows in `ps`; set "
                "AZPROXY_REDIS_URL instead, or write it as "
                "redis://:env:NAME@HOST:PORT"
            )
        else:
            password = Secret(url.password)
    return RedisURL(str(url.with_password(None)), password)

"""The one Redis client of a process, with azproxy's timeouts.

redis-py's defaults do not suit a proxy: a 5 s socket timeout and three
retries with back-off would hold a request for many seconds when Redis is
away. Here every read and connect gives up after redis_timeout_ms, nothing is
retried by the client (the breaker decides when to try again), and a rediss://
URL checks Redis' certificate and host name (redis-py's defaults for TLS).
Connections come back by themselves: the pool opens a new one on the next
call after one broke.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from azproxy.settings.redis_url import RedisURL

__all__ = ["connect"]


def connect(url: RedisURL, *, timeout_s: float) -> Redis:
    """A client for `url`; it connects on its first call."""
    return Redis.from_url(
        url.reveal(),
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
        client_name="azproxy",
    )

"""The one Redis client of a process, with azproxy's timeouts, single-node
or cluster as Redis itself says.

redis-py's defaults do not suit a proxy: a 5 s socket timeout and three
retries with back-off would hold a request for many seconds when Redis is
away. Here every read and connect gives up after redis_timeout_ms, nothing is
retried by the client (the breaker decides when to try again), and a rediss://
URL checks Redis' certificate and host name (redis-py's defaults for TLS).
Connections come back by themselves: the pool opens a new one on the next
call after one broke.

A clustered Redis (Azure Managed Redis with the OSS clustering policy, Redis
Cluster) needs a client that routes each key to its shard. Which kind a Redis
is, is read once, on the first contact (`INFO cluster`), so that a Redis away
at start is still found out when it comes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

if TYPE_CHECKING:
    from azproxy.settings.redis_url import RedisURL

__all__ = ["Client", "Link"]

Client = Redis | RedisCluster
# Connections to Redis per process: each call holds one for about 0.1 ms.
MAX_CONNECTIONS = 64


class Link:
    def __init__(self, url: RedisURL, *, timeout_s: float) -> None:
        self._url = url
        self._timeout_s = timeout_s
        # A bounded pool whose callers wait for a free connection (within the
        # breaker's timeout): redis-py's default pool raises at its 100th
        # connection at once, which a burst of requests reaches, and which
        # would count as Redis being away.
        pool = BlockingConnectionPool.from_url(
            url.reveal(),
            max_connections=MAX_CONNECTIONS,
            timeout=None,
            **self._options(),
        )
        self.client: Client = Redis.from_pool(pool)
        self.cluster: bool | None = None  # None: not known yet

    def _options(self) -> dict[str, Any]:
        return {
            "socket_timeout": self._timeout_s,
            "socket_connect_timeout": self._timeout_s,
            "retry": Retry(NoBackoff(), 0),
            "client_name": "azproxy",
        }

    async def ready(self) -> Client:
        """The client, once Redis said which kind it is (one INFO, once)."""
        if self.cluster is None:
            found = await self.client.info("cluster")
            if found.get("cluster_enabled"):
                single = self.client
                cluster = RedisCluster.from_url(self._url.reveal(), **self._options())
                await cluster.initialize()  # the map of slots to shards
                self.client = cluster
                await single.aclose()
            self.cluster = bool(found.get("cluster_enabled"))
        return self.client

    async def drop_connections(self) -> None:
        """Close every idle connection: after an outage each would fail once."""
        if isinstance(self.client, Redis):
            await self.client.connection_pool.disconnect()

    async def aclose(self) -> None:
        await self.client.aclose()

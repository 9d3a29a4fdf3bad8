"""Shared state: the processes of a fleet acting as one, through Redis.

With redis_url set, every azproxy process that points at the same Redis
shares the health board's deployment state (cooldowns with their deadline,
breakers, the single half-open probe); the per-key counters of the gateway
use the same plumbing (one script call per access key, batched completion
updates). Without it nothing here runs and redis-py is never imported.

- names.py: key and channel names, with Redis Cluster hash tags
- breaker.py: a short timeout per call, and no calls while Redis is away
- scripts.py: Lua scripts by EVALSHA, and calls batched into one pipeline
- connection.py: the one Redis client of a process
- board_sync.py: the health board's changes to Redis and back
- shared.py: the pieces started and stopped with the app, the metric
"""

from __future__ import annotations

from aiohttp import web

from azproxy.settings.config import Config

__all__ = ["setup"]


def setup(app: web.Application, config: Config) -> None:
    """Share state through config.redis_url, if set (after the health board
    and the metrics, which it hooks into)."""
    if config.redis_url is None:
        return
    # Imported here, not above: redis-py costs a process that never uses it
    # about 60 ms of start-up and 6 MB (measured), and the hot path nothing.
    from azproxy.fleet import shared

    shared.setup(app, config)

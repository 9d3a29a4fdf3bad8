"""Shared state: the processes of a fleet acting as one, through Redis.

With redis_url set, every azproxy process that points at the same Redis
shares the health board's deployment state (cooldowns with their deadline,
breakers, the single half-open probe) and the per-key limits' counters (one
script call per access key before sending, batched completion updates).
Without it nothing here runs and redis-py is never imported.

- names.py: key and channel names, with Redis Cluster hash tags
- breaker.py: a short timeout per call, and no calls while Redis is away
- scripts.py: Lua scripts by EVALSHA, and calls batched into one pipeline
- coalesce.py: the admissions of one loop tick in one write, answers in order
- connection.py: the one Redis client of a process, single-node or cluster
- board_sync.py: the health board's changes to Redis and back
- counters.py: the per-key limits' counters (limits/store.py) in Redis
- counter_scripts.py: their Lua scripts
- shared.py: the pieces started and stopped with the app, the metric
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from azproxy.settings.config import Config

__all__ = ["describe", "ping", "setup"]


def setup(app: web.Application, config: Config) -> None:
    """Share state through config.redis_url, if set (after the health board
    and the metrics, which it hooks into)."""
    if config.redis_url is None:
        return
    # Imported here, not above: redis-py would cost a process that never uses
    # it 50-170 ms of start-up and about 7 MB (measured here).
    from azproxy.fleet import shared

    shared.setup(app, config)


def describe(config: Config) -> str:
    """The shared-state settings in a few words, the password left out."""
    if config.redis_url is None:
        return "shared state: none (each process its own)"
    return (
        f"shared state: {config.redis_url.shown} (prefix {config.redis_prefix}, "
        f"timeout {config.redis_timeout_ms} ms, on failure {config.redis_failure})"
    )


async def ping(config: Config) -> tuple[bool, str]:
    """Whether Redis answers a PING within redis_timeout_ms, and what to
    change when it does not (check-config --probe)."""
    import asyncio
    import time

    from azproxy.fleet.breaker import FAILURES
    from azproxy.fleet.connection import Link
    from azproxy.observe.logging import redact

    assert config.redis_url is not None
    timeout_s = config.redis_timeout_ms / 1000
    link = Link(config.redis_url, timeout_s=timeout_s)
    started = time.monotonic()
    try:
        # The connection, INFO (and a cluster's map of slots), then PING.
        async with asyncio.timeout(timeout_s * 4):
            await (await link.ready()).ping()
    except FAILURES as exc:
        why = redact(f"{type(exc).__name__}: {exc}".rstrip(": "), config.secrets())
        return False, f"does not answer within redis_timeout_ms ({why})"
    finally:
        await link.aclose()
    kind = "a cluster" if link.cluster else "single node"
    return True, f"answers, {kind} ({(time.monotonic() - started) * 1000:.1f} ms)"

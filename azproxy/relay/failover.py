"""Server-side routing: try a model's deployments, best first, until one
answers well, keeping the health board (cooldowns, breakers) up to date."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from aiohttp import web

from azproxy.auth.callers import Backend
from azproxy.errors import ProxyError, RateLimited
from azproxy.keys import CONFIG, EXCHANGE, SESSION
from azproxy.relay.health_board import (
    HEALTH,
    AllCoolingDown,
    retry_after_headers,
    retry_after_s,
)
from azproxy.relay.send import Failure, Reply, send_once
from azproxy.relay.target import Outgoing, build_target

__all__ = ["all_cooling_down", "attempt", "fail_over"]

log = logging.getLogger("azproxy.relay")


async def fail_over(
    request: web.Request,
    backends: Sequence[Backend],
    outgoing: Outgoing,
    model: str | None,
) -> tuple[Reply, Backend]:
    """Try the model's deployments, best first, until one answers well.

    A 429 or 408, a 5xx, an "overloaded" first event, a connection error or
    no headers in time move on to the next deployment at once (no sleeping).
    The health board learns of each: a 429, a 408 or a connection failure
    cools the deployment; a 5xx counts toward its breaker. Any other answer,
    4xx included, is the answer. All this happens before the first byte
    reaches the client.
    """
    app = request.app
    config, board = app[CONFIG], app[HEALTH]
    try:
        plan = board.plan(backends)[: config.max_attempts]
    except AllCoolingDown as cooling:
        raise all_cooling_down(model, cooling.wait_s) from None
    if not outgoing.replayable:
        plan = plan[:1]  # a body streamed once cannot go to another
    last: tuple[Reply, Backend] | None = None
    error: ProxyError | None = None
    try:
        for index, backend in enumerate(plan):
            try:
                reply = await attempt(request, backend, outgoing)
            except Failure as failure:
                error = failure.error
                log.warning("deployment %s failed: %s", backend.name, error.message)
                continue
            if backend.guess and reply.deployment_not_found and index < len(plan) - 1:
                board.abandoned(backend)
                reply.close()  # a guessed name that does not exist: try the next
                continue
            if reply.status in (408, 429):
                board.rate_limited(backend, retry_after_s(reply.response.headers))
            elif reply.status >= 500 or reply.overloaded:
                board.server_error(backend)
            else:
                board.succeeded(backend)
                if last is not None:
                    last[0].close()
                return reply, backend
            log.warning(
                "deployment %s answered %d; failing over", backend.name, reply.status
            )
            if last is not None:
                last[0].close()
            last = (reply, backend)
    except BaseException:
        if last is not None:
            last[0].close()  # cancelled meanwhile: release the kept answer
        raise
    if last is not None:
        if last[0].status == 429:
            try:
                board.plan(backends)
            except AllCoolingDown as cooling:
                last[0].close()
                raise all_cooling_down(model, cooling.wait_s) from None
        return last
    assert error is not None
    raise error


async def attempt(request: web.Request, backend: Backend, outgoing: Outgoing) -> Reply:
    """One try at one deployment, as the health board sees it: a connection
    error or a timeout makes it unreachable for a while; a try that ends with
    no verdict at all (the client cancelled, no credentials to send, a
    refused redirect) lets a half-open breaker be probed again instead of
    waiting for a verdict that never comes."""
    app = request.app
    board = app[HEALTH]
    board.started(backend)
    try:
        target = build_target(backend, outgoing, request)
        return await send_once(app[SESSION], app[CONFIG], target, request[EXCHANGE])
    except Failure:
        board.unreachable(backend)
        raise
    except BaseException:
        board.abandoned(backend)
        raise


def all_cooling_down(model: str | None, wait_s: float) -> ProxyError:
    return RateLimited(
        f"Every Azure deployment of model {model!r} is rate-limited right now, "
        f"or waiting for a test request to come back; retry after {wait_s:.1f} s.",
        headers=retry_after_headers(wait_s),
    )

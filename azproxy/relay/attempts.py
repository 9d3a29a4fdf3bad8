"""How a request is tried at Azure until there is an answer to relay: one
interface (Attempts), two policies, picked once per caller (auth/callers.py).

- Retry, the original proxy's rules: one deployment, tried again after
  retry_delay_s, up to `retries` times. Pass-through tokens use it, and so
  do the resource calls (files, batches...), whose objects live on one
  resource. Its loop (retried) also retries the realtime handshake.
- Failover, server-side routing: the model's deployments, best first by the
  health board (cooldowns, breakers, quota Azure said is used up, the panic
  rule), each tried once, with no sleeping in between.

Both return Azure's answer with its first chunk read (a Reply, naming the
backend that gave it), or raise the error the client gets. All of it
happens before the first byte reaches the client.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Protocol, TypeVar

from azproxy.errors import AllCoolingDown, Failure, ProxyError, RateLimited
from azproxy.relay.azure_limits import (
    format_duration,
    refusal,
    remaining,
    retry_after_s,
)
from azproxy.relay.health_board import retry_after_headers
from azproxy.relay.refusal import refuses_credentials
from azproxy.relay.send import Reply, send_once
from azproxy.relay.target import Outgoing, build_target
from azproxy.relay.uploads import can_send_again

if TYPE_CHECKING:
    from azproxy.observe.exchange import Exchange
    from azproxy.relay.backends import Backend
    from azproxy.relay.context import RelayContext
    from azproxy.settings.config import Config

__all__ = [
    "FAILOVER",
    "RETRY",
    "Attempts",
    "Failover",
    "Retry",
    "pause_before_retry",
    "retried",
]

log = logging.getLogger("azproxy.relay")

NOT_SAID = (None, None)  # no remaining requests or tokens

T = TypeVar("T")


class Attempts(Protocol):
    def send(
        self,
        context: RelayContext,
        exchange: Exchange,
        backends: Sequence[Backend],
        outgoing: Outgoing,
        model: str | None,
    ) -> Awaitable[Reply]:
        """Azure's answer to relay, from one of `backends` (best first)."""
        ...


class Retry:
    """The original proxy's rules, for the one backend a pass-through token
    or a resource call has. Tried again: connection errors, 5xx, and
    a first SSE event saying the model is overloaded. Never: 4xx (429
    included) and timeouts waiting for Azure to answer. A call that changes
    state on Azure is sent again only when none of it left (connection
    refused, connect timeout): a 5xx or a reset may come after Azure created
    the batch or started the run. A body streamed from the client (an
    upload) is consumed by the first try, so it is never retried."""

    def send(
        self,
        context: RelayContext,
        exchange: Exchange,
        backends: Sequence[Backend],
        outgoing: Outgoing,
        model: str | None,
    ) -> Awaitable[Reply]:
        # Not a coroutine itself: it hands back the loop's, one coroutine
        # less on the path most requests take.
        config = context.config
        target = build_target(backends[0], outgoing)
        return retried(
            config,
            target,  # its str() names it in the log, made only on a retry
            partial(send_once, context.session, config, target, exchange),
            retries=config.retries if can_send_again(target.body) else 0,
            resend=not target.stateful,
            again=retryable_answer,
        )


async def retried(
    config: Config,
    what: object,
    attempt: Callable[[], Awaitable[T]],
    *,
    retries: int,
    resend: bool = True,
    again: Callable[[T], str | None] | None = None,
) -> T:
    """Make `attempt` up to `retries` more times, retry_delay_s apart.
    `what` is what is tried, as the log names it (its str()).

    A try that raises a retryable Failure is made again; with `resend` off,
    only if none of the request went out (Failure.unsent). A try that
    returns is made again only when `again` gives a reason (it releases the
    answer it turns down). The error of the last try that failed is raised.
    """
    for attempt_index in range(retries + 1):
        retries_left = attempt_index < retries
        try:
            result = await attempt()
        except Failure as failure:
            if not (retries_left and failure.retryable and (resend or failure.unsent)):
                # Not held in a local: this frame would hold the error whose
                # traceback holds this frame, a cycle that keeps the request
                # (its body) until the collector's next pass.
                raise _last_error(failure, attempt_index) from None
            reason = failure.error.message
        else:
            if not (retries_left and resend and again is not None):
                return result
            turned_down = again(result)
            if turned_down is None:
                return result
            reason = turned_down
        await pause_before_retry(config, attempt_index, what, reason)
    raise AssertionError("unreachable: the last attempt returns or raises")


def _last_error(failure: Failure, attempt_index: int) -> ProxyError:
    """The error a last failed try raises, saying how many tries were made.
    Always a new instance: raised while `failure` is handled, it holds the
    failure (its context), which must not hold it back (a cycle)."""
    error = failure.error
    if not attempt_index:
        return error.reworded(error.message)
    return error.reworded(
        f"{error.message.rstrip('.')}, after {attempt_index + 1} attempts."
    )


def retryable_answer(reply: Reply) -> str | None:
    """Why the original proxy would try again after this answer (a 5xx, or
    an "overloaded" first event), having released it; None to keep it."""
    if not (reply.status >= 500 or reply.overloaded):
        return None
    reply.close()
    return "model overloaded" if reply.overloaded else f"HTTP {reply.status}"


async def pause_before_retry(
    config: Config, attempt: int, what: object, reason: str
) -> None:
    """Log a failed attempt and wait retry_delay_s: the original proxy's pace."""
    log.warning(
        "%s failed (%s); retry %d/%d in %g s",
        what,
        reason,
        attempt + 1,
        config.retries,
        config.retry_delay_s,
    )
    await asyncio.sleep(config.retry_delay_s)


class Failover:
    """Server-side routing: the model's deployments, best first, until one
    answers well.

    A 429 or 408, a 5xx, an "overloaded" first event, Azure refusing the
    endpoint's own credentials (refusal.py), a connection error or no headers
    in time move on to the next deployment at once (no sleeping). The health
    board learns of each: a 429, a 408 or a connection failure cools the
    deployment (with what Azure said about its limit); a 5xx or a refusal
    counts toward its breaker; any other answer brings Azure's remaining
    requests and tokens, which may mark the deployment exhausted. Any other
    answer, 4xx included, is the answer; but a guessed name (model_fallback) that
    Azure does not know moves on to the next guess. At most max_attempts
    deployments are tried, and one only when the body cannot be sent twice.
    """

    async def send(
        self,
        context: RelayContext,
        exchange: Exchange,
        backends: Sequence[Backend],
        outgoing: Outgoing,
        model: str | None,
    ) -> Reply:
        exchange.failover = True  # its extra tries are failovers
        config, board = context.config, context.health
        try:
            plan = board.plan(backends)[: config.max_attempts]
        except AllCoolingDown as cooling:
            raise all_cooling_down(model, cooling) from None
        if not outgoing.replayable:
            plan = plan[:1]  # a body streamed once cannot go to another
        last: Reply | None = None
        error: ProxyError | None = None
        try:
            for index, backend in enumerate(plan):
                try:
                    reply = await try_backend(context, exchange, backend, outgoing)
                except Failure as failure:
                    error = failure.error
                    log.warning("deployment %s failed: %s", backend.name, error.message)
                    continue
                if (
                    backend.guess
                    and reply.deployment_not_found
                    and index < len(plan) - 1
                ):
                    board.abandoned(backend)
                    reply.close()  # a guessed name that does not exist: try the next
                    continue
                headers = reply.response.headers
                if reply.status in (408, 429):
                    board.rate_limited(
                        backend, retry_after_s(headers), refusal(headers, reply.first)
                    )
                elif (
                    reply.status >= 500
                    or reply.overloaded
                    or refuses_credentials(reply)
                ):
                    board.server_error(backend)
                else:
                    # Azure's counts from its good answers only: a 4xx may
                    # answer a name a client made up (model_fallback), which
                    # must not get a record on the board.
                    said = remaining(headers) if reply.status < 400 else NOT_SAID
                    # What a request like this one needs from the deployment's
                    # token budget (Azure also counts the max_tokens it asks
                    # for, which this leaves out).
                    board.succeeded(backend, *said, outgoing.prompt_tokens)
                    if last is not None:
                        last.close()
                    return reply
                log.warning(
                    "deployment %s answered %d; %s",
                    backend.name,
                    reply.status,
                    "failing over"
                    if index < len(plan) - 1
                    else "no other deployment to fail over to",
                )
                if last is not None:
                    last.close()
                last = reply
        except BaseException:
            if last is not None:
                last.close()  # cancelled meanwhile: release the kept answer
            raise
        if last is not None:
            if last.status == 429:
                try:
                    board.plan(backends)
                except AllCoolingDown as cooling:
                    last.close()
                    raise all_cooling_down(model, cooling) from None
            return last
        assert error is not None
        try:
            raise error
        finally:
            # This frame would hold the error whose traceback holds this
            # frame: a cycle keeping the request (its body) until the
            # collector's next pass.
            error = None


async def try_backend(
    context: RelayContext, exchange: Exchange, backend: Backend, outgoing: Outgoing
) -> Reply:
    """One try at one deployment, as the health board sees it: a connection
    error or a timeout makes it unreachable for a while; a try that ends with
    no verdict at all (the client cancelled, no credentials to send, a
    refused redirect) lets a half-open breaker be probed again instead of
    waiting for a verdict that never comes."""
    board = context.health
    board.started(backend)
    try:
        target = build_target(backend, outgoing)
        return await send_once(context.session, context.config, target, exchange)
    except Failure:
        board.unreachable(backend)
        raise
    except BaseException:
        board.abandoned(backend)
        raise


def all_cooling_down(model: str | None, cooling: AllCoolingDown) -> ProxyError:
    """azproxy's own 429, keeping what Azure said: the kind of limit (in
    `type`, as OpenAI's own 429s name it: "requests" or "tokens") and its
    reset headers, counted down to what is left of the wait."""
    wait_s, kind = cooling.wait_s, cooling.kind
    headers = retry_after_headers(wait_s)
    for name, seconds in cooling.resets.items():
        headers[name] = format_duration(seconds)
    if kind is None:
        message = (
            f"Every Azure deployment of model {model!r} is rate-limited right "
            "now, or waiting for a test request to come back; retry after "
            f"{wait_s:.1f} s."
        )
    else:
        limit = "token" if kind == "tokens" else "request"
        message = (
            f"Every Azure deployment of model {model!r} is rate-limited right "
            f"now; the first one back exceeded Azure's {limit} rate limit. "
            f"Retry after {wait_s:.1f} s."
        )
    return RateLimited(message, headers=headers, type=kind)


# Stateless: one of each serves every caller.
RETRY = Retry()
FAILOVER = Failover()

"""Per-key limits on one request: admitted before anything is sent to Azure,
settled when it ends.

- admit(): the key's counters reserve one request, a concurrency slot and
  the prompt's estimated tokens; over a limit, the request is refused (429
  with the real wait, or 403 quota_exceeded with the renewal time) and
  nothing reaches Azure. The ticket goes on the exchange; its remaining
  budgets go on every answer (headers()).
- The entry layer (front/entry.py) settles the ticket when the request ends, however
  it ends: the estimate is replaced by the usage Azure reported, or kept when
  there is none.

Requests of callers without limits never come here: the relay looks at
`caller.limits` (None) and goes on.
"""

from __future__ import annotations

import datetime
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web

from azproxy.errors import ProxyError, QuotaExceeded, RateLimited
from azproxy.keys import EXCHANGE
from azproxy.limits.store import CounterStore, InProcessStore, Kind, Refusal, Ticket
from azproxy.observe.metrics import METRICS
from azproxy.relay.mapping import Scope

if TYPE_CHECKING:
    from azproxy.relay.target import Outgoing
    from azproxy.settings.config import Config
    from azproxy.settings.server_side import Limits

__all__ = ["COUNTERS", "admit", "prompt_estimate", "refusal_error", "setup"]

COUNTERS = web.AppKey("azproxy.counters", CounterStore)


def setup(
    app: web.Application, config: Config, *, clock: Callable[[], float] = time.time
) -> None:
    """app[COUNTERS]: in this process (per worker with --workers); fleet.setup
    puts a shared store in its place with redis_url. `clock` is
    wall-clock time: quota periods start at UTC boundaries."""
    app[COUNTERS] = InProcessStore(clock)


def prompt_estimate(outgoing: Outgoing) -> int | None:
    """The prompt's tokens to reserve (Outgoing.prompt_tokens). None for a
    call whose tokens are not
    counted: the resource APIs other than creating a response. Their answers
    may show usage spent elsewhere (a run's, or a stored response's, read
    again), which must not count once more."""
    if outgoing.scope is Scope.RESOURCE and not (
        outgoing.method == "POST" and outgoing.subpath == "responses"
    ):
        return None
    return outgoing.prompt_tokens


async def admit(request: web.Request, limits: Limits, estimate: int | None) -> Ticket:
    """Reserve the request in the key's counters, or raise its refusal.
    `estimate` None: a call whose tokens are not counted (its usage is not
    settled), reserving none."""
    reserved = estimate or 0
    result = await request.app[COUNTERS].admit(limits, reserved)
    if isinstance(result, Refusal):
        request.app[METRICS].limit_refusals[(limits.name, result.kind.value)] += 1
        raise refusal_error(result, limits, reserved)
    result.counts_tokens = estimate is not None
    request[EXCHANGE].ticket = result
    return result


def refusal_error(refusal: Refusal, limits: Limits, estimate: int) -> ProxyError:
    """What the client is told: which limit, and when it may try again."""
    headers = refusal.remaining.headers()
    kind = refusal.kind
    if kind is Kind.QUOTA:
        assert refusal.renews_at is not None
        renews = datetime.datetime.fromtimestamp(refusal.renews_at, datetime.UTC)
        left = refusal.remaining.quota or 0
        why = (
            "has used its token quota"
            if left == 0
            else f"has {left} tokens of its quota left, and this request's "
            f"prompt is estimated at {estimate}"
        )
        return QuotaExceeded(
            f"This access key ({limits.name}) {why} ({limits.token_quota} tokens "
            f"per {limits.token_quota_period}, UTC). The quota renews at "
            f"{renews:%Y-%m-%dT%H:%M:%SZ}.",
            headers=headers,
        )
    wait = refusal.wait_s
    # Rounded to the microsecond first: 12.9 s must not become 12901 ms.
    headers["Retry-After"] = str(math.ceil(round(wait, 6)))
    headers["retry-after-ms"] = str(math.ceil(round(wait * 1000, 3)))
    if kind is Kind.RPM:
        what = f"{limits.rpm} requests per minute"
    elif kind is Kind.TPM:
        what = (
            f"{limits.tpm} tokens per minute (this request's prompt is "
            f"estimated at {estimate} tokens)"
        )
    else:
        n = limits.max_concurrent
        what = f"{n} request{'' if n == 1 else 's'} in flight at once"
    return RateLimited(
        f"This access key ({limits.name}) is limited to {what}. "
        f"Retry after {wait:.3g} s.",
        headers=headers,
    )

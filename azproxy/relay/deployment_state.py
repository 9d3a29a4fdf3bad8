"""One deployment's record on the health board, and the state /metrics names
from it. The board (health_board.py) decides; this is what it remembers.

The states, one vocabulary with the reasons a cooldown starts for:
- healthy: takes traffic in its turn;
- rate_limited: cooling after a 429 or 408, as long as Azure asked;
- cooling_errors: cooling after a connection failure (error_cooldown_s);
- breaker_open: skipped after breaker_failures failures in a row;
- exhausted: Azure said it has no requests (or too few tokens) left in its
  window; its siblings go first for exhausted_cooldown_s, and it is still
  used when nothing else can be.
When several apply, the first of breaker_open, cooling_errors, rate_limited
is named: the one least likely to end soon. While the single request that
probes a deployment after its cooldown is out, the deployment keeps the
state that cooled it: the others still wait for that probe's verdict.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from azproxy.relay.azure_limits import LimitKind

__all__ = [
    "BREAKER_OPEN",
    "COOLING_ERRORS",
    "EXHAUSTED",
    "HEALTHY",
    "RATE_LIMITED",
    "REASONS",
    "STATES",
    "Record",
]

HEALTHY = "healthy"
RATE_LIMITED = "rate_limited"
COOLING_ERRORS = "cooling_errors"
BREAKER_OPEN = "breaker_open"
EXHAUSTED = "exhausted"
STATES = (HEALTHY, RATE_LIMITED, COOLING_ERRORS, BREAKER_OPEN, EXHAUSTED)
REASONS = STATES[1:]  # why a cooldown starts: every state but healthy


@dataclass(slots=True)
class Record:
    endpoint: str  # the labels /metrics shows it under
    deployment: str
    limited_until: float = 0.0  # cooling after a 429 or 408 (Azure asked)
    cooling_until: float = 0.0  # cooling after a connection failure
    failures: int = 0  # in a row
    failed_at: float = 0.0  # the last failure, for the panic choice
    open_until: float = 0.0  # breaker open (skipped) until then
    probing: bool = False  # half-open: one request is testing it
    exhausted_until: float = 0.0  # siblings first until then
    # Azure's x-ratelimit-remaining-* on the last answer that had them.
    remaining_requests: int | None = None
    remaining_tokens: int | None = None
    # What the last 429 said (until a success): the kind of limit, and the
    # deadlines of Azure's reset headers (header name -> monotonic time).
    limit_kind: LimitKind | None = None
    resets: dict[str, float] = field(default_factory=dict)
    cooldowns: dict[str, int] = field(default_factory=dict)  # started, by reason

    def state(self, now: float) -> str:
        causes = (
            (self.open_until, BREAKER_OPEN),
            (self.cooling_until, COOLING_ERRORS),
            (self.limited_until, RATE_LIMITED),
        )
        for until, name in causes:
            if until > now:
                return name
        if self.probing:
            until, name = max(causes)
            if until:
                return name  # the cause its probe is testing
        if self.exhausted_until > now:
            return EXHAUSTED
        return HEALTHY

    def cooldown_started(self, reason: str) -> None:
        self.cooldowns[reason] = self.cooldowns.get(reason, 0) + 1

    def reset_waits(self, now: float) -> dict[str, float]:
        """Azure's reset headers, as the seconds still to wait."""
        return {name: at - now for name, at in self.resets.items() if at > now}

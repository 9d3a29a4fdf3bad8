"""What Azure says about its own rate limits, read from an answer. No I/O.

Azure OpenAI answers inference calls with `x-ratelimit-remaining-requests`
and `x-ratelimit-remaining-tokens` (what this deployment may still take in
its current window), and refuses with a 429 whose message names the limit:
"... have exceeded call rate limit ..." (requests per minute) or "... have
exceeded token rate limit ..." / "... exceeded the token rate limit ..."
(tokens per minute). Some answers also carry OpenAI's
`x-ratelimit-reset-requests` / `x-ratelimit-reset-tokens` (a duration such
as `1s`, `6m0s` or `20ms`). The health board keeps these per deployment;
azproxy's own 429 (every deployment cooling) repeats the kind and the
resets, counted down to the real remaining wait.
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "RESET_HEADERS",
    "LimitKind",
    "Refusal",
    "duration_s",
    "format_duration",
    "limit_kind",
    "refusal",
    "remaining",
    "retry_after_s",
]

LimitKind = Literal["requests", "tokens"]

RESET_HEADERS = ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens")

# Go's time.Duration form, which OpenAI's reset headers use: "6m0s", "1.5s",
# "120ms"; a bare number counts seconds.
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
# Long enough for any duration Azure sends; a longer value is not one.
_MAX_DURATION_CHARS = 32


@dataclass(frozen=True, slots=True)
class Refusal:
    """What a 429 (or 408) from Azure said about its limits."""

    kind: LimitKind | None  # None: Azure did not say (a 408, say)
    resets: dict[str, float]  # reset header -> seconds Azure named
    requests: int | None  # remaining requests, as it said
    tokens: int | None  # remaining tokens, as it said


def refusal(headers: Mapping[str, str], first: bytes) -> Refusal:
    """Read a refusal: which limit, the resets, the remaining counts."""
    resets = {}
    for name in RESET_HEADERS:
        seconds = duration_s(headers.get(name))
        if seconds is not None:
            resets[name] = seconds
    requests, tokens = remaining(headers)
    return Refusal(limit_kind(headers, first), resets, requests, tokens)


def remaining(headers: Mapping[str, str]) -> tuple[int | None, int | None]:
    """Azure's remaining requests and tokens (None when it did not say)."""
    return (
        _count(headers.get("x-ratelimit-remaining-requests")),
        _count(headers.get("x-ratelimit-remaining-tokens")),
    )


def _count(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return max(int(value), 0)
    except ValueError:
        return None


def limit_kind(headers: Mapping[str, str], body: bytes) -> LimitKind | None:
    """Which of Azure's limits a 429 reports: its message first (Azure's own
    words), then a remaining count at zero; None when neither tells."""
    # The message is in the answer's first chunk (a small JSON error); only
    # its start is searched, so a huge body costs nothing.
    text = body[:2048].lower()
    if b"token rate limit" in text:
        return "tokens"
    if b"call rate limit" in text or b"request rate limit" in text:
        return "requests"
    requests, tokens = remaining(headers)
    if tokens == 0 and requests != 0:
        return "tokens"
    if requests == 0:
        return "requests"
    return None


def duration_s(value: str | None) -> float | None:
    """Seconds in a reset header: `1s`, `6m0s`, `1.5s`, `20ms`, or a bare
    number of seconds; None when it is none of these."""
    if not value or len(value) > _MAX_DURATION_CHARS:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return bounded(seconds)
    total, position = 0.0, 0
    for part in _DURATION_PART.finditer(value):
        if part.start() != position:
            return None
        total += float(part.group(1)) * _UNIT_S[part.group(2)]
        position = part.end()
    if position == 0 or position != len(value):
        return None
    return bounded(total)


# The longest wait azproxy takes from Azure's headers: a day. More (1e308,
# inf) is nonsense that would overflow the arithmetic made with it.
MAX_WAIT_S = 86400.0


def bounded(seconds: float) -> float | None:
    """A wait Azure stated, within [0, MAX_WAIT_S]; None when not a number."""
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_WAIT_S)


def format_duration(seconds: float) -> str:
    """A wait as a reset header says it, rounded up to the millisecond:
    `1.25s` (readable both by Go's duration parser and as OpenAI writes it)."""
    milliseconds = max(1, math.ceil(seconds * 1000))
    whole, fraction = divmod(milliseconds, 1000)
    return f"{whole}.{fraction:03d}".rstrip("0").rstrip(".") + "s"


def retry_after_s(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """How long Azure asked us to wait, from the headers it uses for that."""
    for name, scale in (("retry-after-ms", 1e-3), ("x-ms-retry-after-ms", 1e-3)):
        value = headers.get(name)
        if value:
            try:
                return bounded(float(value) * scale)
            except ValueError:
                pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return bounded(float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, OverflowError):
        return None
    return bounded(when - (time.time() if now is None else now))

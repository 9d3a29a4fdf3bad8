from __future__ import annotations

import pytest

from azproxy.relay.azure_limits import (
    duration_s,
    format_duration,
    limit_kind,
    refusal,
    remaining,
    retry_after_s,
)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("1.5s", 1.5),
        ("20ms", 0.02),
        ("1h2m3s", 3723.0),
        ("7", 7.0),
        ("0.25", 0.25),
        (" 2s ", 2.0),
        ("-3", 0.0),
        ("", None),
        (None, None),
        ("soon", None),
        ("1s junk", None),
        ("s", None),
        ("1x", None),
        ("inf", None),
        ("nan", None),
        ("1" * 40 + "s", None),  # longer than any duration Azure sends
        ("1e308", 86400.0),  # a day at most: more would overflow the arithmetic
        ("99999999h", 86400.0),
    ],
)
def test_reset_durations(value: str | None, seconds: float | None) -> None:
    assert duration_s(value) == (pytest.approx(seconds) if seconds else seconds)


@pytest.mark.parametrize(
    ("seconds", "said"),
    [(3.0, "3s"), (0.25, "0.25s"), (2.0001, "2.001s"), (360, "360s"), (0, "0.001s")],
)
def test_waits_are_said_in_seconds_rounded_up_to_the_millisecond(
    seconds: float, said: str
) -> None:
    assert format_duration(seconds) == said
    assert duration_s(said) == pytest.approx(max(seconds, 0.001), abs=0.001)


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "7"}, 7.0),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after": "inf"}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after-ms": "1e308"}, 86400.0),
        ({"retry-after": "1e308"}, 86400.0),
        ({"retry-after": "Fri, 31 Dec 9999 23:59:59 GMT"}, 86400.0),
        ({"retry-after": "-5"}, 0.0),
    ],
)
def test_retry_after_is_a_finite_wait_of_a_day_at_most(
    headers: dict[str, str], seconds: float | None
) -> None:
    assert retry_after_s(headers, now=0.0) == seconds


REQUESTS = "x-ratelimit-remaining-requests"
TOKENS_LEFT = "x-ratelimit-remaining-tokens"


@pytest.mark.parametrize(
    ("headers", "counts"),
    [
        ({}, (None, None)),
        (
            {
                "x-ratelimit-remaining-requests": "4",
                "x-ratelimit-remaining-tokens": "0",
            },
            (4, 0),
        ),
        ({"x-ratelimit-remaining-tokens": "900"}, (None, 900)),
        ({"x-ratelimit-remaining-requests": "lots"}, (None, None)),
        ({"x-ratelimit-remaining-requests": "-2"}, (0, None)),
    ],
)
def test_remaining_counts(
    headers: dict[str, str], counts: tuple[int | None, int | None]
) -> None:
    assert remaining(headers) == counts


TOKENS = b'{"error":{"code":"429","message":"Requests to the ChatCompletions_Create \
Operation under Azure OpenAI API version 2024-10-21 have exceeded token rate limit"}}'
NEWER_TOKENS = b'{"error":{"message":"Your requests to gpt-5.1 for gpt-5.1 in East US \
2 have exceeded the token rate limit for your current AIServices S0 pricing tier."}}'
CALLS = b'{"error":{"code":"429","message":"Requests to the Embeddings_Create \
Operation under Azure OpenAI API have exceeded call rate limit of your current tier."}}'
VAGUE = (
    b'{"error":{"code":"429","message":"Rate limit is exceeded. Try again in 2 s."}}'
)


@pytest.mark.parametrize(
    ("headers", "body", "kind"),
    [
        ({}, TOKENS, "tokens"),
        ({}, NEWER_TOKENS, "tokens"),
        ({}, CALLS, "requests"),
        # Azure's words win over its counts.
        ({"x-ratelimit-remaining-requests": "0"}, TOKENS, "tokens"),
        # Without words, a count at zero tells.
        ({"x-ratelimit-remaining-tokens": "0"}, VAGUE, "tokens"),
        (
            {
                "x-ratelimit-remaining-tokens": "0",
                "x-ratelimit-remaining-requests": "3",
            },
            VAGUE,
            "tokens",
        ),
        ({"x-ratelimit-remaining-requests": "0"}, VAGUE, "requests"),
        ({"x-ratelimit-remaining-requests": "7"}, VAGUE, None),
        ({}, b"", None),
    ],
)
def test_the_kind_of_limit_a_429_reports(
    headers: dict[str, str], body: bytes, kind: str | None
) -> None:
    assert limit_kind(headers, body) == kind


def test_a_refusal_keeps_the_kind_the_resets_and_the_counts() -> None:
    said = refusal(
        {
            "x-ratelimit-reset-tokens": "6m0s",
            "x-ratelimit-reset-requests": "later",
            "x-ratelimit-remaining-tokens": "0",
        },
        TOKENS,
    )
    assert said.kind == "tokens"
    assert said.resets == {"x-ratelimit-reset-tokens": 360.0}
    assert (said.requests, said.tokens) == (None, 0)

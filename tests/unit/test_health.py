from __future__ import annotations

import random
from collections import Counter

import pytest

from azproxy.auth.azure_auth import ApiKeyAuth
from azproxy.errors import AllCoolingDown
from azproxy.relay.azure_limits import Refusal, retry_after_s
from azproxy.relay.backends import Backend, Endpoint
from azproxy.relay.health_board import HealthBoard, Shared
from azproxy.settings.secrets import Secret
from tests.clock import FakeClock

ENDPOINT = Endpoint("e", "https://e", "2024-10-21", ApiKeyAuth(Secret("k")))


def backend(name: str, priority: int = 1, weight: float = 1.0) -> Backend:
    return Backend(ENDPOINT, name, priority, weight)


def board(clock: FakeClock, **overrides: float) -> HealthBoard:
    values = {
        "rate_limit_cooldown_s": 10.0,
        "error_cooldown_s": 2.0,
        "breaker_failures": 3,
        "breaker_open_s": 30.0,
        "exhausted_cooldown_s": 10.0,
    } | overrides
    return HealthBoard(
        rate_limit_cooldown_s=values["rate_limit_cooldown_s"],
        error_cooldown_s=values["error_cooldown_s"],
        breaker_failures=int(values["breaker_failures"]),
        breaker_open_s=values["breaker_open_s"],
        exhausted_cooldown_s=values["exhausted_cooldown_s"],
        clock=clock,
        rng=random.Random(7),
    )


def test_lower_priority_numbers_come_first() -> None:
    health = board(FakeClock())
    a, b, c = backend("a", 2), backend("b", 1), backend("c", 3)
    assert health.plan([a, b, c]) == [b, a, c]


def test_weights_spread_the_first_choice() -> None:
    health = board(FakeClock())
    heavy, light = backend("heavy", weight=3), backend("light", weight=1)
    firsts = Counter(health.plan([heavy, light])[0].deployment for _ in range(4000))
    assert 0.70 < firsts["heavy"] / 4000 < 0.80  # 3:1 -> 75 %


def test_429_cools_down_for_as_long_as_azure_asked() -> None:
    clock = FakeClock()
    health = board(clock)
    a, b = backend("a"), backend("b")
    health.rate_limited(a, 5.0)
    assert health.plan([a, b]) == [b]
    clock.advance(4.9)
    assert health.plan([a, b]) == [b]
    clock.advance(0.2)
    assert set(health.plan([a, b])) == {a, b}


def test_429_without_retry_after_uses_the_default() -> None:
    clock = FakeClock()
    health = board(clock)
    a = backend("a")
    health.rate_limited(a, None)
    with pytest.raises(AllCoolingDown) as caught:
        health.plan([a])
    assert caught.value.wait_s == pytest.approx(10.0)


def test_all_cooling_down_reports_the_shortest_wait() -> None:
    clock = FakeClock()
    health = board(clock)
    a, b = backend("a"), backend("b")
    health.rate_limited(a, 7.0)
    health.rate_limited(b, 3.0)
    clock.advance(1)
    with pytest.raises(AllCoolingDown) as caught:
        health.plan([a, b])
    assert caught.value.wait_s == pytest.approx(2.0)


def test_a_5xx_does_not_cool_a_deployment() -> None:
    # One client's malformed request must not take the deployment away from
    # everyone else: a 5xx only counts toward the breaker.
    health = board(FakeClock())
    a, b = backend("a"), backend("b")
    health.started(a)
    health.server_error(a)
    assert set(health.plan([a, b])) == {a, b}
    health.started(a)
    assert set(health.plan([a, b])) == {a, b}  # and no probe: it never cooled


def test_a_connection_failure_cools_down_at_once() -> None:
    clock = FakeClock()
    health = board(clock)
    a, b = backend("a"), backend("b")
    health.started(a)
    health.unreachable(a)
    assert health.plan([a, b]) == [b]
    clock.advance(2.1)  # past error_cooldown_s
    assert set(health.plan([a, b])) == {a, b}


def test_breaker_opens_after_failures_in_a_row_then_probes_once() -> None:
    clock = FakeClock()
    health = board(clock)
    a, b = backend("a"), backend("b")
    for _ in range(2):
        health.started(a)
        health.server_error(a)
        assert set(health.plan([a, b])) == {a, b}  # not yet
    health.started(a)
    health.server_error(a)
    assert health.plan([a, b]) == [b]  # open: skipped for breaker_open_s
    clock.advance(29.9)
    assert health.plan([a, b]) == [b]
    clock.advance(0.2)
    assert set(health.plan([a, b])) == {a, b}  # half-open
    health.started(a)  # the single probe goes out
    assert health.plan([a, b]) == [b]  # no second probe meanwhile
    health.succeeded(a)
    assert set(health.plan([a, b])) == {a, b}  # closed again


def test_connection_failures_count_toward_the_breaker_too() -> None:
    clock = FakeClock()
    health = board(clock)
    a, b = backend("a"), backend("b")
    health.server_error(a)
    health.unreachable(a)
    clock.advance(2.1)
    health.server_error(a)
    clock.advance(2.1)  # the error cooldown is over, the breaker is open
    assert health.plan([a, b]) == [b]


def test_a_failed_probe_opens_the_breaker_again() -> None:
    clock = FakeClock()
    health = board(clock, breaker_failures=1)
    a, b = backend("a"), backend("b")
    health.started(a)
    health.server_error(a)
    clock.advance(30.5)
    health.started(a)
    health.server_error(a)
    clock.advance(29)
    assert health.plan([a, b]) == [b]


def test_a_success_resets_the_failure_count() -> None:
    clock = FakeClock()
    health = board(clock)
    a, b = backend("a"), backend("b")
    for _ in range(2):
        health.server_error(a)
    health.succeeded(a)
    health.server_error(a)
    assert a in health.plan([a, b])  # 1 failure in a row, not 3
    health.server_error(a)
    assert a in health.plan([a, b])  # 2


def test_when_every_deployment_fails_the_least_recently_failed_is_tried() -> None:
    # Envoy's panic threshold: refusing everyone helps nobody when the
    # cooldowns may come from one client's requests.
    clock = FakeClock()
    health = board(clock, error_cooldown_s=60.0)
    a, b, c = backend("a"), backend("b", priority=2), backend("c", priority=3)
    health.unreachable(b)
    clock.advance(1)
    health.unreachable(a)
    clock.advance(1)
    for _ in range(3):
        health.server_error(c)  # its breaker opens
    assert health.plan([a, b, c]) == [b]
    health.started(b)  # b is the probe now: the next request gets a
    assert health.plan([a, b, c]) == [a]
    health.started(a)
    assert health.plan([a, b, c]) == [c]
    health.started(c)
    with pytest.raises(AllCoolingDown) as caught:
        health.plan([a, b, c])  # one probe each, at most
    assert caught.value.wait_s == pytest.approx(1.0)
    health.succeeded(b)
    assert health.plan([a, b, c]) == [b]


def test_no_panic_over_a_429() -> None:
    # Azure said how long to wait: that deployment is not tried early, but
    # one cooling for errors beside it is.
    clock = FakeClock()
    health = board(clock)
    a, b = backend("a"), backend("b")
    health.rate_limited(a, 30.0)
    health.unreachable(b)
    assert health.plan([a, b]) == [b]
    health.started(b)
    health.unreachable(b)
    health.rate_limited(b, 20.0)  # both rate-limited now
    with pytest.raises(AllCoolingDown) as caught:
        health.plan([a, b])
    assert caught.value.wait_s == pytest.approx(20.0)


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after-ms": "1500"}, 1.5),
        ({"x-ms-retry-after-ms": "250"}, 0.25),
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": "Wed, 25 Nov 2026 17:00:30 GMT"}, 30.0),
        ({"retry-after-ms": "100", "retry-after": "9"}, 0.1),
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after(headers: dict[str, str], seconds: float | None) -> None:
    now = 1795626000.0  # Wed, 25 Nov 2026 17:00:00 GMT
    found = retry_after_s(headers, now)
    if seconds is None:
        assert found is None
    else:
        assert found == pytest.approx(seconds)


def test_after_a_cooldown_one_request_probes_alone() -> None:
    clock = FakeClock()
    health = board(clock)
    a, b = backend("a"), backend("b")
    health.rate_limited(a, 1.0)
    clock.advance(1.1)
    assert a in health.plan([a, b])  # cooled down: it may be tried again...
    health.started(a)
    assert health.plan([a, b]) == [b]  # ...by one request, not a herd
    health.rate_limited(a, 1.0)  # the probe met another 429
    clock.advance(0.5)
    assert health.plan([a, b]) == [b]
    clock.advance(0.6)
    health.started(a)
    health.succeeded(a)
    assert set(health.plan([a, b])) == {a, b}
    health.started(a)
    assert set(health.plan([a, b])) == {a, b}  # healthy again: no probing


def test_a_refused_client_is_told_the_real_wait_at_least_1_s() -> None:
    clock = FakeClock()
    health = board(clock, error_cooldown_s=30.0)
    a, b = backend("a"), backend("b")
    health.rate_limited(a, 0.3)
    health.rate_limited(b, 5.0)
    with pytest.raises(AllCoolingDown) as caught:
        health.plan([a, b])
    assert caught.value.wait_s == pytest.approx(1.0)  # 0.3 s, but at least 1 s
    clock.advance(0.5)
    health.started(a)  # the probe after a's cooldown is out
    with pytest.raises(AllCoolingDown) as caught:
        health.plan([a, b])
    # Its verdict is due soon: not error_cooldown_s, not b's 4.5 s.
    assert caught.value.wait_s == pytest.approx(1.0)
    health.rate_limited(a, 8.0)  # the probe met another 429
    with pytest.raises(AllCoolingDown) as caught:
        health.plan([a, b])
    assert caught.value.wait_s == pytest.approx(4.5)


def state_of(health: HealthBoard, name: str) -> str:
    (record,) = [r for r in health.records() if r.deployment == name]
    return record.state(health.now())


def test_an_exhausted_deployment_goes_after_its_siblings_for_a_while() -> None:
    clock = FakeClock()
    health = board(clock)
    a, b, c = backend("a", 1), backend("b", 2), backend("c", 3)
    health.succeeded(a, requests=0, tokens=5000)
    # After every healthy sibling, whatever its priority; never refused.
    assert health.plan([a, b, c]) == [b, c, a]
    assert health.plan([a]) == [a]
    assert state_of(health, "a") == "exhausted"
    clock.advance(9.9)
    assert health.plan([a, b, c]) == [b, c, a]
    clock.advance(0.2)  # exhausted_cooldown_s is over
    assert health.plan([a, b, c]) == [a, b, c]
    assert state_of(health, "a") == "healthy"


@pytest.mark.parametrize(
    ("requests", "tokens", "needs", "exhausted"),
    [
        (0, None, 0, True),
        (0, 9000, 10, True),
        (None, 0, 0, True),
        (None, 99, 100, True),  # fewer tokens than a request like this needs
        (None, 100, 100, False),
        (3, 100, 10, False),
        (3, None, 0, False),
        (None, None, 0, False),  # Azure did not say
    ],
)
def test_what_makes_a_deployment_exhausted(
    requests: int | None, tokens: int | None, needs: int, exhausted: bool
) -> None:
    health = board(FakeClock())
    a, b = backend("a", 1), backend("b", 2)
    health.succeeded(a, requests, tokens, needs)
    assert health.plan([a, b]) == ([b, a] if exhausted else [a, b])


def test_an_answer_with_room_ends_the_exhaustion_and_none_keeps_it() -> None:
    health = board(FakeClock())
    a, b = backend("a", 1), backend("b", 2)
    health.succeeded(a, requests=0)
    health.succeeded(a)  # an answer without the headers says nothing
    assert health.plan([a, b]) == [b, a]
    health.succeeded(a, requests=12, tokens=800)
    assert health.plan([a, b]) == [a, b]


def test_exhaustion_is_off_with_a_zero_cooldown() -> None:
    health = board(FakeClock(), exhausted_cooldown_s=0.0)
    a, b = backend("a", 1), backend("b", 2)
    health.succeeded(a, requests=0)
    assert health.plan([a, b]) == [a, b]
    assert state_of(health, "a") == "healthy"


def test_states_and_the_cooldowns_that_started_them() -> None:
    clock = FakeClock()
    health = board(clock, breaker_failures=2)
    a, b, c, d = backend("a"), backend("b"), backend("c"), backend("d")
    health.rate_limited(a, 5.0)
    health.rate_limited(a, 6.0)  # a second 429 meanwhile: the same cooldown
    health.unreachable(b)
    health.server_error(c)
    assert state_of(health, "c") == "healthy"  # one 5xx: counted, not cooled
    health.server_error(c)
    health.succeeded(d, requests=0)
    health.succeeded(d, requests=0)  # still exhausted: the same cooldown
    assert [state_of(health, n) for n in "abcd"] == [
        "rate_limited",
        "cooling_errors",
        "breaker_open",
        "exhausted",
    ]
    counts = {r.deployment: r.cooldowns for r in health.records()}
    assert counts == {
        "a": {"rate_limited": 1},
        "b": {"cooling_errors": 1},
        "c": {"breaker_open": 1},
        "d": {"exhausted": 1},
    }
    clock.advance(6.1)  # a's 429 cooldown is over: its probe goes out
    assert state_of(health, "a") == "healthy"
    health.started(a)
    assert state_of(health, "a") == "rate_limited"  # the others wait for it
    health.rate_limited(a, 1.0)  # the probe met another 429: a new cooldown
    assert health.records()[0].cooldowns == {"rate_limited": 2}


def test_all_cooling_down_keeps_what_azure_said_about_the_first_back() -> None:
    clock = FakeClock()
    health = board(clock)
    a, b = backend("a"), backend("b")
    health.rate_limited(
        a, 9.0, Refusal("requests", {"x-ratelimit-reset-requests": 9.0}, 0, 50)
    )
    health.rate_limited(
        b, 4.0, Refusal("tokens", {"x-ratelimit-reset-tokens": 4.0}, 5, 0)
    )
    clock.advance(1)
    with pytest.raises(AllCoolingDown) as caught:
        health.plan([a, b])
    assert caught.value.wait_s == pytest.approx(3.0)
    assert caught.value.kind == "tokens"
    assert caught.value.resets == {"x-ratelimit-reset-tokens": pytest.approx(3.0)}
    # A success forgets what the 429 said.
    health.succeeded(b)
    health.rate_limited(b, 2.0)
    with pytest.raises(AllCoolingDown) as caught:
        health.plan([a, b])
    assert (caught.value.kind, caught.value.resets) == (None, {})


class Heard:
    """A board listener that keeps what it heard."""

    def __init__(self) -> None:
        self.changes: list[tuple[str, Shared]] = []

    def changed(self, name: str, view: Shared) -> None:
        self.changes.append((name, view))


def test_the_listener_hears_each_change_and_not_plain_successes() -> None:
    clock = FakeClock()
    health, heard = board(clock), Heard()
    health.listener = heard
    a = backend("a")
    health.started(a)
    health.succeeded(a)  # the common case: healthy stays healthy, nothing said
    assert heard.changes == []
    health.rate_limited(a, 5.0)
    assert heard.changes == [("e/a", Shared(limited_s=5.0))]
    clock.advance(5.0)
    health.started(a)  # the probe after the cooldown
    assert heard.changes[-1] == ("e/a", Shared(probing=True))
    health.succeeded(a)
    assert heard.changes[-1] == ("e/a", Shared())
    health.server_error(a)  # one failure: the breaker stays closed, nothing said
    assert len(heard.changes) == 3
    health.server_error(a)
    health.server_error(a)  # the third opens it
    assert heard.changes[-1] == ("e/a", Shared(open_s=30.0))
    health.unreachable(backend("b"))
    assert heard.changes[-1] == ("e/b", Shared(cooling_s=2.0))


def test_what_another_process_learned_steers_this_board() -> None:
    clock = FakeClock()
    health, heard = board(clock), Heard()
    health.listener = heard
    a, b = backend("a"), backend("b")
    health.apply("e/a", Shared(limited_s=4.0))
    assert heard.changes == []  # not echoed back to the fleet
    assert health.plan([a, b]) == [b]
    assert health.view("e/a") == Shared(limited_s=4.0)
    clock.advance(4.0)
    assert set(health.plan([a, b])) == {a, b}
    health.apply("e/a", Shared(probing=True))  # another process probes it
    assert health.plan([a, b]) == [b]
    health.apply("e/b", Shared(limited_s=3.0))
    with pytest.raises(AllCoolingDown):
        health.plan([a, b])
    health.apply("e/a", Shared())  # the probe succeeded there
    assert health.plan([a, b]) == [a]
    health.apply("e/c", Shared())  # healthy and unknown: nothing kept
    assert health.view("e/c") == Shared()


def test_the_fleet_hears_an_exhausted_mark_start_and_end_not_each_answer() -> None:
    clock = FakeClock()
    health, heard = board(clock), Heard()
    health.listener = heard
    a = backend("a")
    health.succeeded(a, requests=0)
    assert heard.changes == [("e/a", Shared(exhausted_s=10.0))]
    clock.advance(1.0)
    health.succeeded(a, requests=0)  # extends it here; nothing said
    health.succeeded(a)  # an answer without the headers: nothing either
    assert len(heard.changes) == 1
    health.rate_limited(a, 5.0)  # other changes leave the fleet's marks alone
    assert heard.changes[-1] == ("e/a", Shared(limited_s=5.0))
    health.succeeded(a, requests=7)  # room again: the cooldown and the mark end
    assert heard.changes[-1] == ("e/a", Shared(exhausted_s=0.0))
    health.succeeded(a, requests=7)  # healthy stays healthy
    assert len(heard.changes) == 3
    health.succeeded(a, requests=0)
    clock.advance(10.0)  # it ran out everywhere: ending it now is no news
    health.succeeded(a, requests=7)
    assert len(heard.changes) == 4


def test_an_exhausted_mark_from_another_process_orders_this_board() -> None:
    clock = FakeClock()
    health = board(clock)
    a, b = backend("a", 1), backend("b", 2)
    health.apply("e/a", Shared(exhausted_s=3.0))
    assert health.plan([a, b]) == [b, a]
    assert state_of(health, "a") == "exhausted"
    assert health.view("e/a") == Shared(exhausted_s=3.0)
    health.apply("e/a", Shared(limited_s=1.0))  # a change that leaves the mark
    clock.advance(1.0)
    assert health.plan([a, b]) == [b, a]
    health.apply("e/a", Shared(exhausted_s=0.0))  # room again there
    assert health.plan([a, b]) == [a, b]
    health.apply("e/a", Shared(exhausted_s=2.0))
    clock.advance(2.0)  # its deadline passed
    assert health.plan([a, b]) == [a, b]
    assert health.view("e/a") == Shared()
    health.apply("e/c", Shared(exhausted_s=0.0))  # ended and unknown: not kept
    assert [r.deployment for r in health.records()] == ["a"]

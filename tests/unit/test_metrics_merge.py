"""Several workers' figures as one /metrics (observe/metrics_merge.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from azproxy.app import create_app
from azproxy.observe.exchange import Exchange
from azproxy.observe.metrics import METRICS, Metrics
from azproxy.observe.metrics_group import Member, WorkerGroup
from azproxy.observe.metrics_merge import GAUGES, decode, encode, merge
from azproxy.settings.config import Config
from azproxy.settings.redis_url import read_redis_url

COUNTED = frozenset(
    {("status", "200"), ("key", "k"), ("model", "gpt-4o"), ("deployment", "dep1")}
)


class Families:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


def rendered(families: list[Metric]) -> str:
    return generate_latest(Families(families)).decode()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def board(state: str, remaining: float, up: float) -> Iterator[Metric]:
    """A stand-in for a worker's deployment board and Redis gauge."""
    states = GaugeMetricFamily("azproxy_deployment_state", "", labels=["d", "state"])
    for name in ("healthy", "breaker_open"):
        states.add_metric(["dep1", name], 1.0 if name == state else 0.0)
    yield states
    left = GaugeMetricFamily("azproxy_deployment_remaining_requests", "", labels=["d"])
    left.add_metric(["dep1"], remaining)
    yield left
    yield GaugeMetricFamily("azproxy_shared_state_up", "", value=up)


def worker(
    durations: list[float], status: int, in_flight: int, state: str, remaining: float
) -> Metrics:
    metrics = Metrics(
        {"azproxy_requests_in_flight": ("", lambda: in_flight)},
        sources=[lambda: board(state, remaining, up=1.0 if in_flight else 0.0)],
    )
    for duration in durations:
        exchange = Exchange("POST", "/v1/chat/completions", 0.0)
        exchange.key, exchange.model, exchange.deployment = "k", "gpt-4o", "dep1"
        exchange.usage = (10, 5, 15)
        metrics.record(exchange, status, duration)
    return metrics


def test_counters_and_histograms_add_up_and_gauges_follow_their_rule() -> None:
    one = worker([0.003, 0.2, 0.2], 200, in_flight=2, state="healthy", remaining=90)
    two = worker([0.2, 7.0], 200, in_flight=0, state="breaker_open", remaining=40)
    two.record(Exchange("GET", "/v1/models", 0.0), 401, 0.001)
    snapshots = [decode(encode(m.collect())) for m in (one, two)]
    got = samples(rendered(merge(snapshots)))
    labels = {("key", "k"), ("model", "gpt-4o"), ("deployment", "dep1")}

    def at(name: str, **more: str) -> float:
        return got[(name, frozenset(labels | set(more.items())))]

    assert at("azproxy_requests_total", status="200") == 5
    refused = {("status", "401"), ("key", ""), ("model", ""), ("deployment", "")}
    # A series only one worker has:
    assert got[("azproxy_requests_total", frozenset(refused))] == 1
    assert at("azproxy_tokens_total", kind="prompt") == 50
    labels = {("model", "gpt-4o"), ("deployment", "dep1")}
    duration = "azproxy_request_duration_seconds"
    assert at(f"{duration}_bucket", le="0.005") == 1
    assert at(f"{duration}_bucket", le="0.25") == 4
    assert at(f"{duration}_bucket", le="5") == 4
    assert at(f"{duration}_bucket", le="10") == 5
    assert at(f"{duration}_bucket", le="+Inf") == 5
    assert at(f"{duration}_count") == 5
    assert at(f"{duration}_sum") == pytest.approx(7.603)
    assert got[("azproxy_requests_in_flight", frozenset())] == 2  # summed
    assert got[("azproxy_shared_state_up", frozenset())] == 0  # the lowest
    state = "azproxy_deployment_state"
    assert got[(state, frozenset({("d", "dep1"), ("state", "healthy")}))] == 1
    assert got[(state, frozenset({("d", "dep1"), ("state", "breaker_open")}))] == 1
    left = "azproxy_deployment_remaining_requests"
    assert got[(left, frozenset({("d", "dep1")}))] == 40  # the lowest


def test_one_worker_merged_alone_renders_as_it_does_itself() -> None:
    alone = worker([0.01, 3.0], 200, in_flight=1, state="healthy", remaining=7)
    assert rendered(merge([decode(encode(alone.collect()))])) == rendered(
        list(alone.collect())
    )


@pytest.mark.parametrize(
    "snapshot",
    [
        b"",
        b"not json",
        b'{"a": 1}',
        b"[1]",
        b'[["x", "gauge", "h", [["x", {"a": 1}, 1]]]]',
        b'[["x", "gauge", "h", [["x", [], 1]]]]',
        b'[["x", "nonsense", "h", []]]',
        b'[["x", "gauge", "h", [["x", {}, "many"]]]]',
    ],
)
def test_what_is_not_a_snapshot_is_refused(snapshot: bytes) -> None:
    with pytest.raises(ValueError):
        decode(snapshot)


def test_every_gauge_the_app_shows_has_a_rule() -> None:
    config = Config(
        upstream="http://127.0.0.1:9",
        redis_url=read_redis_url("redis://127.0.0.1:9", "test", {}),
    )
    families = create_app(config)[METRICS].collect()
    gauges = {f.name for f in families if f.type == "gauge"}
    assert "azproxy_shared_state_up" in gauges
    assert gauges <= set(GAUGES)


def test_a_worker_stands_in_and_carries_on_with_counters_only(tmp_path: Path) -> None:
    group = WorkerGroup(str(tmp_path), size=2, slot=1)
    first = Member(worker([0.1, 0.2], 200, 3, "healthy", 5), group)
    assert first.carried == []  # nothing before it
    reported, snapshot = first.report()
    assert decode(snapshot) == reported
    # What stands in for it, and what its replacement starts from: no gauges.
    sibling = Member(Metrics({}), WorkerGroup(str(tmp_path), size=2, slot=0))
    stand_in = samples(rendered(sibling.stand_in(1)))
    assert stand_in[("azproxy_requests_total", COUNTED)] == 2
    assert ("azproxy_requests_in_flight", frozenset()) not in stand_in
    replacement = Member(worker([0.3], 200, 1, "healthy", 5), group)
    got = samples(rendered(replacement.report()[0]))
    assert got[("azproxy_requests_total", COUNTED)] == 3
    assert got[("azproxy_requests_in_flight", frozenset())] == 1  # its own only
    assert (
        samples(rendered(sibling.stand_in(1)))[("azproxy_requests_total", COUNTED)] == 3
    )


@pytest.mark.parametrize("content", [b"garbage", b"[" * 10, None])
def test_no_stand_in_from_a_file_that_is_not_a_snapshot(
    tmp_path: Path, content: bytes | None
) -> None:
    group = WorkerGroup(str(tmp_path), size=2, slot=0)
    if content is not None:
        Path(group.last_path(1)).write_bytes(content)
    assert Member(Metrics({}), group).stand_in(1) == []

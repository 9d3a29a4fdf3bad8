"""Prometheus metrics at GET /metrics (names start with azproxy_).

Requests update plain counters and bucket arrays (a few dict and list
operations); prometheus-client only renders them when /metrics is scraped,
through a custom collector.

Label values come from the configuration or from clients (model names, and
deployments named by pass-through tokens), so every one is bounded: a value a
client chose is a label only if it looks like a name and is at most
MAX_SHOWN_CHARS long, and only the first MAX_MODELS models and
MAX_DEPLOYMENTS deployments seen become labels; the rest count as "other".
Configured names are always labels. Past MAX_SERIES distinct label pairs, new
ones count as "other" too, so no input can grow /metrics or memory for the
life of the process. The `key` label is an access key's configured name,
`anonymous`, or `passthrough` for every pass-through token (whose resource a
client chose): bounded by the configuration.
"""

from __future__ import annotations

import bisect
import re
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from azproxy.front.lifecycle import LIFECYCLE
from azproxy.observe.deployments import configured_deployments, deployment_metrics
from azproxy.observe.exchange import Exchange
from azproxy.relay.health_board import HEALTH
from azproxy.relay.upstream_slots import LIMITER
from azproxy.settings.patterns import DEPLOYMENT_RE, MAX_SHOWN_CHARS, MODEL_RE

if TYPE_CHECKING:
    from azproxy.observe.exchange import Exchange
    from azproxy.settings.config import Config

__all__ = [
    "MAX_DEPLOYMENTS",
    "MAX_MODELS",
    "MAX_SERIES",
    "METRICS",
    "OTHER",
    "LabelValues",
    "Metrics",
    "metrics_handler",
    "setup",
]

MAX_SERIES = 2000
MAX_MODELS = 100
MAX_DEPLOYMENTS = 100
# Raw (status, key, model, deployment) values whose series are remembered;
# past this, a request finds its series the slow way (the same labels).
MAX_REMEMBERED = 4 * MAX_SERIES
OTHER = "other"
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

Labels = tuple[str, ...]


class _Histogram:
    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, value)] += 1
        self.sum += value


class _Series:
    """What one (status, key, model, deployment) records into, found once:
    a request then pays one dict lookup instead of building label tuples."""

    __slots__ = ("completion", "duration", "labels", "prompt", "requests")

    def __init__(self, metrics: Metrics, status: int, key: str, labels: Labels) -> None:
        self.labels = labels
        self.requests = (str(status), key, *labels)
        self.duration = metrics.duration[labels]
        self.prompt = (key, *labels, "prompt")
        self.completion = (key, *labels, "completion")


class LabelValues:
    """The values one label may take: the configured names, and up to `room`
    names clients chose that match `pattern`, are printable and are at most
    MAX_SHOWN_CHARS long. Anything else is OTHER ("" stays "": no value)."""

    __slots__ = ("_known", "_pattern", "_room")

    def __init__(
        self, pattern: re.Pattern[str], room: int, configured: Iterable[str] = ()
    ) -> None:
        self._known = set(configured)
        self._pattern = pattern
        self._room = room

    def of(self, value: str | None) -> str:
        if not value:
            return ""
        # Length first: hashing a 1 MB name for the lookup would cost its length.
        if len(value) > MAX_SHOWN_CHARS:
            return OTHER
        if value in self._known:
            return value
        # MODEL_RE admits control characters (ESC, NUL, ...), which /metrics
        # would show raw: prometheus_client escapes only backslash, quote and
        # newline. Only names not known yet (64 characters at most) pay for it.
        if self._room > 0 and value.isprintable() and self._pattern.fullmatch(value):
            self._room -= 1
            self._known.add(value)
            return value
        return OTHER


class Metrics:
    def __init__(
        self,
        gauges: dict[str, tuple[str, Callable[[], float]]],
        *,
        models: Iterable[str] = (),
        deployments: Iterable[str] = (),
        sources: Iterable[Callable[[], Iterable[Metric]]] = (),
    ) -> None:
        """`models` and `deployments`: the configured names, always labels.
        `sources`: more families, read from their owners on a scrape."""
        self.requests: defaultdict[Labels, int] = defaultdict(int)
        self.tokens: defaultdict[Labels, int] = defaultdict(int)
        self.retries: defaultdict[Labels, int] = defaultdict(int)
        self.failovers: defaultdict[Labels, int] = defaultdict(int)
        # (key name, kind): requests refused by a key's limits (limits/).
        self.limit_refusals: defaultdict[Labels, int] = defaultdict(int)
        self.duration: defaultdict[Labels, _Histogram] = defaultdict(_Histogram)
        self.ttfb: defaultdict[Labels, _Histogram] = defaultdict(_Histogram)
        self.streams_in_flight = 0
        self._gauges = gauges
        self._sources = tuple(sources)
        self._models = LabelValues(MODEL_RE, MAX_MODELS, models)
        self._deployments = LabelValues(DEPLOYMENT_RE, MAX_DEPLOYMENTS, deployments)
        self._seen: set[Labels] = set()
        self._series: dict[tuple[int, str | None, str | None, str | None], _Series] = {}

    def add_gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        """One more gauge, read when /metrics is scraped."""
        self._gauges[name] = (help_text, read)

    def _labels(self, model: str | None, deployment: str | None) -> Labels:
        labels = (self._models.of(model), self._deployments.of(deployment))
        if labels not in self._seen:
            if len(self._seen) >= MAX_SERIES:
                return tuple(OTHER if v else "" for v in labels)
            self._seen.add(labels)
        return labels

    def record(self, exchange: Exchange, status: int, end: float) -> None:
        model = exchange.model
        # Length first: hashing a 1 MB name for the lookup would cost its
        # length. Any overlong name is labelled OTHER, as "other" itself is.
        if model is not None and len(model) > MAX_SHOWN_CHARS:
            model = OTHER
        found = (status, exchange.key, model, exchange.deployment)
        series = self._series.get(found)
        if series is None:
            series = self._series_of(found, exchange.model)
        self.requests[series.requests] += 1
        series.duration.observe(end - exchange.started)
        if exchange.first_byte is not None:
            self.ttfb[series.labels].observe(exchange.first_byte - exchange.started)
        if exchange.attempts > 1:
            extra = self.failovers if exchange.failover else self.retries
            extra[series.labels] += exchange.attempts - 1
        usage = exchange.usage
        if usage is not None:
            self.tokens[series.prompt] += usage[0]
            self.tokens[series.completion] += usage[1]

    def _series_of(
        self, found: tuple[int, str | None, str | None, str | None], model: str | None
    ) -> _Series:
        """The series of values not seen yet (`model` as the client sent it).
        The labels given to values never change once given (LabelValues and
        _labels only grow), so they can be remembered."""
        status, key, _, deployment = found
        # key: "" before a caller is known (a 401).
        series = _Series(self, status, key or "", self._labels(model, deployment))
        if len(self._series) < MAX_REMEMBERED:
            self._series[found] = series
        return series

    def collect(self) -> Iterator[Metric]:
        yield _counter(
            "azproxy_requests",
            "Requests answered, by status, access key name, model and deployment.",
            ["status", "key", "model", "deployment"],
            self.requests,
        )
        yield self._histogram(
            "azproxy_request_duration_seconds",
            "Time from request to the end of the answer.",
            self.duration,
        )
        yield self._histogram(
            "azproxy_time_to_first_byte_seconds",
            "Time from request to the first byte of the answer sent.",
            self.ttfb,
        )
        yield _counter(
            "azproxy_retries",
            "Retries of one deployment (pass-through).",
            ["model", "deployment"],
            self.retries,
        )
        yield _counter(
            "azproxy_failovers",
            "Moves to another deployment.",
            ["model", "deployment"],
            self.failovers,
        )
        yield _counter(
            "azproxy_tokens",
            "Tokens Azure reported using, by access key name, model, deployment "
            "and kind.",
            ["key", "model", "deployment", "kind"],
            self.tokens,
        )
        yield _counter(
            "azproxy_limit_refusals",
            "Requests refused by an access key's limits, by key name and kind "
            "(rpm, tpm, concurrency, quota).",
            ["key", "kind"],
            self.limit_refusals,
        )
        streams = GaugeMetricFamily(
            "azproxy_streams_in_flight", "Streamed answers being relayed now."
        )
        streams.add_metric([], self.streams_in_flight)
        yield streams
        for name, (help_text, read) in self._gauges.items():
            gauge = GaugeMetricFamily(name, help_text)
            gauge.add_metric([], read())
            yield gauge
        for source in self._sources:
            yield from source()

    @staticmethod
    def _histogram(
        name: str, help_text: str, values: dict[Labels, _Histogram]
    ) -> HistogramMetricFamily:
        family = HistogramMetricFamily(name, help_text, labels=["model", "deployment"])
        for key, histogram in values.items():
            cumulative, buckets = 0, []
            for bound, count in zip(
                (*BUCKETS, float("inf")), histogram.counts, strict=True
            ):
                cumulative += count
                bucket = "+Inf" if bound == float("inf") else str(bound)
                buckets.append((bucket, cumulative))
            family.add_metric(list(key), buckets, histogram.sum)
        return family


METRICS = web.AppKey("azproxy.metrics", Metrics)


def setup(app: web.Application, config: Config) -> None:
    """app[METRICS], with the gauges of app[LIFECYCLE] and app[LIMITER] and
    the deployments' state on app[HEALTH] (read only when /metrics is
    scraped)."""
    lifecycle, limiter = app[LIFECYCLE], app[LIMITER]
    app[METRICS] = Metrics(
        {
            "azproxy_requests_in_flight": (
                "Requests being handled now.",
                lambda: lifecycle.in_flight,
            ),
            "azproxy_upstream_requests_in_flight": (
                "Requests holding one of the max_upstream_requests slots.",
                lambda: limiter.in_use,
            ),
        },
        models=config.model_map,
        deployments=(r.deployment for rs in config.model_map.values() for r in rs),
        sources=[deployment_metrics(app[HEALTH], configured_deployments(config))],
    )


def _counter(
    name: str, help_text: str, labels: list[str], values: dict[Labels, int]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, help_text, labels=labels)
    for key, value in values.items():
        family.add_metric(list(key), value)
    return family


def metrics_handler(
    metrics: Metrics, authorize: Callable[[web.Request], None]
) -> Callable[[web.Request], Awaitable[web.Response]]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)

    async def handler(request: web.Request) -> web.Response:
        authorize(request)
        response = web.Response(body=generate_latest(registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    return handler

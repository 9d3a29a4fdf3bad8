"""The deployments' state on /metrics, read from the health board only when
/metrics is scraped: requests pay for none of it beyond what the board keeps
to decide (and a counter bumped when a cooldown starts).

- azproxy_deployment_state{endpoint, deployment, state}: 1 for the state the
  deployment is in, 0 for the others (healthy, rate_limited, cooling_errors,
  breaker_open, exhausted: relay/deployment_state.py). One series per
  state, always there, as kube-state-metrics shows a pod's phase: a series
  that came and went with the state would leave gaps, and
  `sum by (state)` or an alert on `state="breaker_open" == 1` just work.
- azproxy_cooldowns_total{endpoint, deployment, reason}: cooldowns started,
  by the state they put the deployment in.
- azproxy_deployment_remaining_requests and ..._tokens{endpoint, deployment}:
  Azure's x-ratelimit-remaining-* on the deployment's last answer that had
  them (absent until one did).

The deployments shown: every one the model map names (healthy until the
board hears of it), and up to MAX_DEPLOYMENTS more that the board learned of
otherwise (model_fallback's guesses, named by clients' models). Pass-through
tokens do not use the board: their one deployment has no siblings to prefer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from azproxy.relay.deployment_state import REASONS, STATES, Record

if TYPE_CHECKING:
    from azproxy.relay.health_board import HealthBoard
    from azproxy.settings.config import Config

__all__ = ["MAX_DEPLOYMENTS", "configured_deployments", "deployment_metrics"]

MAX_DEPLOYMENTS = 100
LABELS = ["endpoint", "deployment"]


def configured_deployments(config: Config) -> list[tuple[str, str]]:
    """(endpoint, deployment) of every route in the model map, in order."""
    found: dict[tuple[str, str], None] = {}
    for routes in config.model_map.values():
        for route in routes:
            endpoint = config.endpoint(route.endpoint)
            if endpoint is not None:
                found[(endpoint.name, route.deployment)] = None
    return list(found)


def deployment_metrics(
    board: HealthBoard, configured: Iterable[tuple[str, str]]
) -> Callable[[], Iterator[Metric]]:
    """A source of the families above, for Metrics to render on a scrape."""
    configured = list(configured)

    def collect() -> Iterator[Metric]:
        now = board.now()
        records = {(r.endpoint, r.deployment): r for r in board.records()}
        shown: list[tuple[tuple[str, str], Record | None]] = [
            (pair, records.pop(pair, None)) for pair in configured
        ]
        shown.extend(list(records.items())[:MAX_DEPLOYMENTS])
        states = GaugeMetricFamily(
            "azproxy_deployment_state",
            "1 for the state each deployment is in, 0 for the others.",
            labels=[*LABELS, "state"],
        )
        cooldowns = CounterMetricFamily(
            "azproxy_cooldowns",
            "Cooldowns started, by deployment and reason (the state entered).",
            labels=[*LABELS, "reason"],
        )
        requests = GaugeMetricFamily(
            "azproxy_deployment_remaining_requests",
            "Azure's x-ratelimit-remaining-requests on the last answer with it.",
            labels=LABELS,
        )
        tokens = GaugeMetricFamily(
            "azproxy_deployment_remaining_tokens",
            "Azure's x-ratelimit-remaining-tokens on the last answer with it.",
            labels=LABELS,
        )
        for (endpoint, deployment), record in shown:
            labels = [endpoint, deployment]
            current = record.state(now) if record is not None else STATES[0]
            for state in STATES:
                states.add_metric([*labels, state], 1.0 if state == current else 0.0)
            started = record.cooldowns if record is not None else {}
            for reason in REASONS:
                cooldowns.add_metric([*labels, reason], started.get(reason, 0))
            if record is not None and record.remaining_requests is not None:
                requests.add_metric(labels, record.remaining_requests)
            if record is not None and record.remaining_tokens is not None:
                tokens.add_metric(labels, record.remaining_tokens)
        yield states
        yield cooldowns
        yield requests
        yield tokens

    return collect

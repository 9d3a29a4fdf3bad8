"""The figures of several workers as one /metrics: snapshots and their merge.

A snapshot is what one worker's collector yields (Metrics.collect: its own
families and its sources'), as JSON: every family with its samples, already
expanded (histogram buckets are cumulative, as rendered). Snapshots travel
only between the workers of one `--workers` group (metrics_group.py), all
forked from the same parent, so they all speak the same version of it.

Merging, sample by sample (a sample is its name and its labels):
- counters and histograms (buckets, _sum, _count) are summed: the group's
  figure is the sum of its workers'. Cumulative buckets stay cumulative.
- gauges follow GAUGES: the in-flight counts are summed; the rest say how
  things stand, and the sum of "1 for up" over two workers (2) would break
  every `== 1` alert written for one process, so:
  - azproxy_shared_state_up: the minimum, 0 as soon as one worker has lost
    Redis (each worker has its own connection to it);
  - azproxy_deployment_state: the maximum, 1 for every state some worker
    has the deployment in (without redis_url each worker has its own
    board): an alert on `state="breaker_open" == 1` fires when any worker
    has the breaker open. The series and their labels stay those of one
    process, so dashboards keep working;
  - azproxy_deployment_remaining_*: the minimum, the most cautious of the
    workers' last readings of Azure's remaining counts.
  A gauge not in GAUGES is summed; tests/unit/test_metrics_merge.py fails
  when the app exposes one that is not listed, so each new gauge gets a
  choice.
A series only some workers have is merged over those that have it (a sum
counts the others as 0).

`lasting` keeps the families whose values only grow over a worker's life
(counters, histograms): what may stand in for a worker that cannot answer,
or that was replaced (metrics_group.py); its gauges say nothing then.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence

from prometheus_client.core import Metric, Sample

__all__ = ["GAUGES", "LASTING", "decode", "encode", "lasting", "merge"]

Combine = Callable[[list[float]], float]
SampleKey = tuple[str, tuple[tuple[str, str], ...]]

GAUGES: dict[str, Combine] = {
    "azproxy_requests_in_flight": sum,
    "azproxy_upstream_requests_in_flight": sum,
    "azproxy_streams_in_flight": sum,
    "azproxy_shared_state_up": min,
    "azproxy_deployment_state": max,
    "azproxy_deployment_remaining_requests": min,
    "azproxy_deployment_remaining_tokens": min,
}

LASTING = frozenset({"counter", "histogram"})


def lasting(families: Iterable[Metric]) -> list[Metric]:
    """The counters and histograms among `families`."""
    return [family for family in families if family.type in LASTING]


def encode(families: Iterable[Metric]) -> bytes:
    """One worker's families as a snapshot."""
    return json.dumps(
        [
            [
                family.name,
                family.type,
                family.documentation,
                [[s.name, s.labels, s.value] for s in family.samples],
            ]
            for family in families
        ],
        separators=(",", ":"),
    ).encode()


def decode(snapshot: bytes) -> list[Metric]:
    """A snapshot's families; ValueError when it is not one."""
    try:
        families = []
        for name, typ, documentation, samples in json.loads(snapshot):
            family = Metric(str(name), str(documentation), str(typ))
            for sample_name, labels, value in samples:
                if not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
                ):
                    raise ValueError("a label that is not text")
                family.add_sample(str(sample_name), labels, float(value))
            families.append(family)
    except (TypeError, AttributeError) as exc:  # a shape that is not ours
        raise ValueError(f"not a snapshot: {exc}") from None
    return families


def merge(snapshots: Sequence[Iterable[Metric]]) -> list[Metric]:
    """The families of every snapshot as one set of families (see above).
    Families and samples keep the order in which they were first met. A
    sample's labels come in the order the code that made them gives, the
    same in every worker (one parent's code): the key need not sort them."""
    found: dict[str, tuple[Metric, dict[SampleKey, list[float]]]] = {}
    for families in snapshots:
        for family in families:
            entry = found.get(family.name)
            if entry is None:
                entry = found[family.name] = (family, {})
            values = entry[1]
            for sample in family.samples:
                key = (sample.name, tuple(sample.labels.items()))
                seen = values.get(key)
                if seen is None:
                    values[key] = [sample.value]
                else:
                    seen.append(sample.value)
    merged = []
    for first, values in found.values():
        combine = GAUGES.get(first.name, sum) if first.type == "gauge" else sum
        family = Metric(first.name, first.documentation, first.type)
        family.samples = [
            Sample(name, dict(labels), combine(seen))
            for (name, labels), seen in values.items()
        ]
        merged.append(family)
    return merged

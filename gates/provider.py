"""Fetching: PromQL in, numbers out, with a named error for every way data can be missing.

The judge never sees an HTTP response; it sees floats or one of these errors, and every error makes
the gate `inconclusive` (never `pass`). Tests substitute `MetricsProvider` at this layer. The HTTP
client and its transport errors (unreachable, query rejected) are `infra.prometheus_api`'s, re-exported
here; the shape errors (no values, several series) belong to the helpers below.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np

from infra.prometheus_api import (
    ProviderError,
    QueryError,
    RangeSeries,
    Sample,
    UnreachableError,
)

__all__ = [
    "MetricsProvider",
    "MultipleSeriesError",
    "NoValuesError",
    "ProviderError",
    "QueryError",
    "RangeSeries",
    "Sample",
    "UnreachableError",
    "histogram_buckets",
    "per_series_range",
    "single_range",
    "single_value",
]


class NoValuesError(ProviderError):
    kind = "no_values"


class MultipleSeriesError(ProviderError):
    kind = "multiple_series"


class MetricsProvider(Protocol):
    """What gates fetch through: `infra.prometheus_api.PrometheusAPI`, or a stand-in in tests."""

    def instant(self, promql: str, at: float) -> list[Sample]: ...

    def range(self, promql: str, start: float, end: float, step_s: float) -> list[RangeSeries]: ...


# -- shape checks shared by every gate kind ---------------------------------------------------------
def single_value(provider: MetricsProvider, promql: str, at: float) -> float:
    """The one finite value of an instant query; named errors for none, NaN, or several series."""
    samples = provider.instant(promql, at)
    if not samples:
        raise NoValuesError(f"no series for {promql!r}")
    if len(samples) > 1:
        shown = ", ".join(str(dict(s.labels)) for s in samples[:3])
        raise MultipleSeriesError(f"{len(samples)} series where one was expected for {promql!r}: {shown}")
    value = samples[0].value
    if not math.isfinite(value):
        raise NoValuesError(f"{promql!r} returned {value}")
    return value


def histogram_buckets(provider: MetricsProvider, promql: str, at: float) -> tuple[list[float], list[float]]:
    """(upper bounds, cumulative counts) from a `sum by (le) (...)` query; one series per `le` expected."""
    samples = provider.instant(promql, at)
    if not samples:
        raise NoValuesError(f"no histogram buckets for {promql!r}")
    by_le: dict[float, float] = {}
    for s in samples:
        if "le" not in s.labels:
            raise MultipleSeriesError(f"{promql!r} returned a series without an 'le' label: {dict(s.labels)}")
        extra = {k: v for k, v in s.labels.items() if k != "le"}
        if extra:
            raise MultipleSeriesError(
                f"{promql!r} must aggregate to 'le' only (sum by (le)); got labels {extra}"
            )
        le = float(s.labels["le"])
        if le in by_le:
            raise MultipleSeriesError(f"{promql!r} returned bucket le={le} twice")
        if not math.isfinite(s.value):
            raise NoValuesError(f"{promql!r} bucket le={le} is {s.value}")
        by_le[le] = s.value
    bounds = sorted(by_le)
    if not math.isinf(bounds[-1]):
        raise NoValuesError(f"{promql!r} has no +Inf bucket; cannot count all requests")
    return bounds, [by_le[b] for b in bounds]


def per_series_range(
    provider: MetricsProvider, promql: str, start: float, end: float, step_s: float
) -> list[RangeSeries]:
    """Every series of a range query (one per pod or process is expected), NaNs dropped; a named error
    when there is none or none has a finite sample."""
    out = []
    for s in provider.range(promql, start, end, step_s):
        keep = np.isfinite(s.values)
        if keep.any():
            out.append(RangeSeries(s.labels, s.times[keep], s.values[keep]))
    if not out:
        raise NoValuesError(f"no series for {promql!r} between {start:.0f} and {end:.0f}")
    return out


def single_range(
    provider: MetricsProvider, promql: str, start: float, end: float, step_s: float
) -> RangeSeries:
    """The one series of a range query (NaNs dropped); named errors for none or several, never the last."""
    found = per_series_range(provider, promql, start, end, step_s)
    if len(found) > 1:
        shown = ", ".join(str(dict(s.labels)) for s in found[:3])
        raise MultipleSeriesError(f"{len(found)} series where one was expected for {promql!r}: {shown}")
    return found[0]

"""Fetching: PromQL in, numbers out, with a named error for every way data can be missing.

The judge never sees an HTTP response; it sees floats or one of these errors, and every error makes
the gate `inconclusive` (never `pass`). Tests substitute `MetricsProvider` at this layer.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np


class ProviderError(Exception):
    """Base of every fetch failure; `kind` is a short stable name used in records."""

    kind = "error"


class NoValuesError(ProviderError):
    kind = "no_values"


class MultipleSeriesError(ProviderError):
    kind = "multiple_series"


class UnreachableError(ProviderError):
    kind = "unreachable"


class QueryError(ProviderError):
    """Prometheus rejected the query (bad PromQL, timeout on its side)."""

    kind = "query_error"


@dataclass(frozen=True)
class Sample:
    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class RangeSeries:
    labels: Mapping[str, str]
    times: np.ndarray
    values: np.ndarray


class MetricsProvider(Protocol):
    def instant(self, promql: str, at: float) -> list[Sample]: ...

    def range(self, promql: str, start: float, end: float, step_s: float) -> list[RangeSeries]: ...


class PrometheusProvider:
    """Prometheus HTTP API (`/api/v1/query`, `/api/v1/query_range`)."""

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def _get(self, path: str, params: dict[str, str]) -> dict:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout_s) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            if exc.code in (400, 422):
                raise QueryError(f"Prometheus rejected {params.get('query')!r}: {detail}") from exc
            raise UnreachableError(f"Prometheus at {self.url} answered HTTP {exc.code}: {detail}") from exc
        except (OSError, ValueError) as exc:  # connection refused, timeout, garbage body
            raise UnreachableError(f"Prometheus at {self.url} unreachable: {exc}") from exc
        if body.get("status") != "success":
            raise QueryError(f"Prometheus error for {params.get('query')!r}: {body.get('error', body)}")
        return body["data"]

    def instant(self, promql: str, at: float) -> list[Sample]:
        data = self._get("/api/v1/query", {"query": promql, "time": f"{at:.3f}"})
        kind = data.get("resultType")
        if kind == "scalar":
            return [Sample({}, _float(data["result"][1]))]
        if kind != "vector":
            raise QueryError(f"expected an instant vector from {promql!r}, got {kind}")
        return [Sample(dict(r["metric"]), _float(r["value"][1])) for r in data["result"]]

    def range(self, promql: str, start: float, end: float, step_s: float) -> list[RangeSeries]:
        data = self._get(
            "/api/v1/query_range",
            {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step_s:g}"},
        )
        if data.get("resultType") != "matrix":
            raise QueryError(f"expected a range vector from {promql!r}, got {data.get('resultType')}")
        out = []
        for r in data["result"]:
            pairs = np.array([[float(t), _float(v)] for t, v in r["values"]], dtype=float).reshape(-1, 2)
            out.append(RangeSeries(dict(r["metric"]), pairs[:, 0], pairs[:, 1]))
        return out


def _float(text: str) -> float:
    return float(text)  # Prometheus encodes NaN / +Inf as strings float() understands


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


def single_range(
    provider: MetricsProvider, promql: str, start: float, end: float, step_s: float
) -> RangeSeries:
    series = provider.range(promql, start, end, step_s)
    if not series:
        raise NoValuesError(f"no series for {promql!r} between {start:.0f} and {end:.0f}")
    if len(series) > 1:
        shown = ", ".join(str(dict(s.labels)) for s in series[:3])
        raise MultipleSeriesError(f"{len(series)} series where one was expected for {promql!r}: {shown}")
    s = series[0]
    keep = np.isfinite(s.values)
    return RangeSeries(s.labels, s.times[keep], s.values[keep])

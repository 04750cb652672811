"""The one Prometheus HTTP client: gates, reports, the local stack and the server runner all call it.

A thin client of our own on the standard library, not prometheus-api-client: that package brings
requests and dateparser (pandas and matplotlib in its older releases) into the toolkit image, and
raises one `PrometheusApiClientException` for every non-200 answer, beside raw `requests` errors and
silent connection retries, so "unreachable", "query rejected" and "timed out" could only be told apart
by parsing its messages. Here every failure is a named error whose `kind` gate records keep.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from infra.net import wait_http_ok


class ProviderError(Exception):
    """Base of every failure to get numbers from Prometheus; `kind` is a short name kept in records."""

    kind = "error"


class UnreachableError(ProviderError):
    """No usable answer: connection refused, our timeout, a body not from its API, or it is unavailable."""

    kind = "unreachable"


class QueryError(ProviderError):
    """Prometheus rejected the query (bad PromQL, execution error, timeout or cancel on its side)."""

    kind = "query_error"


# Prometheus' `errorType`s that judge one query; any other error (`unavailable`, `internal`, ...) or a
# body that is not its API's JSON means the server as a whole could not answer.
_QUERY_ERROR_TYPES = frozenset({"bad_data", "execution", "timeout", "canceled"})


@dataclass(frozen=True)
class Sample:
    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class RangeSeries:
    labels: Mapping[str, str]
    times: np.ndarray
    values: np.ndarray


class PrometheusAPI:
    """Prometheus' HTTP API at `url`: instant and range queries, readiness, config reload."""

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    # -- queries ---------------------------------------------------------------------------------
    def instant(self, promql: str, at: float | None = None) -> list[Sample]:
        """One sample per series at unix time `at` (Prometheus' own now when None); a scalar is one sample."""
        params = {"query": promql} | ({"time": f"{at:.3f}"} if at is not None else {})
        data = self._query("/api/v1/query", params)
        kind = data.get("resultType")
        # float() reads Prometheus' "NaN" and "+Inf" strings
        if kind == "scalar":
            return [Sample({}, float(data["result"][1]))]
        if kind != "vector":
            raise QueryError(f"expected an instant vector from {promql!r}, got {kind}")
        return [Sample(dict(r["metric"]), float(r["value"][1])) for r in data["result"]]

    def range(self, promql: str, start: float, end: float, step_s: float) -> list[RangeSeries]:
        data = self._query(
            "/api/v1/query_range",
            {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step_s:g}"},
        )
        if data.get("resultType") != "matrix":
            raise QueryError(f"expected a range vector from {promql!r}, got {data.get('resultType')}")
        out = []
        for r in data["result"]:
            pairs = np.array([[float(t), float(v)] for t, v in r["values"]], dtype=float).reshape(-1, 2)
            out.append(RangeSeries(dict(r["metric"]), pairs[:, 0], pairs[:, 1]))
        return out

    def wait_for(
        self,
        promql: str,
        until: Callable[[list[Sample]], bool] = bool,
        timeout_s: float = 15.0,
        interval_s: float = 0.2,
        what: str = "a series",
    ) -> list[Sample]:
        """Repeat an instant query until `until(samples)` holds (default: any series); TimeoutError if not."""
        deadline = time.monotonic() + timeout_s
        while True:
            samples = self.instant(promql)
            if until(samples):
                return samples
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"Prometheus at {self.url}: {promql!r} did not return {what} in {timeout_s:.0f}s"
                )
            time.sleep(interval_s)

    # -- the server itself -----------------------------------------------------------------------
    def wait_ready(self, timeout_s: float, alive: Callable[[], bool] | None = None) -> None:
        """Block until `/-/ready` answers 2xx; TimeoutError, or RuntimeError once `alive()` is False."""
        wait_http_ok(f"{self.url}/-/ready", timeout_s, alive=alive)

    def reload(self) -> None:
        """Ask the server to reread its config file (needs `--web.enable-lifecycle`)."""
        request = urllib.request.Request(f"{self.url}/-/reload", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as resp:
                resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            raise QueryError(f"Prometheus at {self.url} rejected the reload: {detail}") from exc
        except OSError as exc:
            raise UnreachableError(f"Prometheus at {self.url} unreachable: {exc}") from exc

    # -- transport -------------------------------------------------------------------------------
    def _query(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout_s) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")
            detail = text[:300]
            if exc.code in (400, 422) or _error_type(text) in _QUERY_ERROR_TYPES:
                raise QueryError(f"Prometheus rejected {params['query']!r}: {detail}") from exc
            raise UnreachableError(f"Prometheus at {self.url} answered HTTP {exc.code}: {detail}") from exc
        except (OSError, ValueError) as exc:  # connection refused, our timeout, a body that is not JSON
            raise UnreachableError(f"Prometheus at {self.url} unreachable: {exc}") from exc
        if not isinstance(body, dict) or body.get("status") != "success":
            error = body.get("error", body) if isinstance(body, dict) else body
            raise QueryError(f"Prometheus error for {params['query']!r}: {error}")
        return dict(body["data"])


def _error_type(body: str) -> str | None:
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    return doc.get("errorType") if isinstance(doc, dict) else None

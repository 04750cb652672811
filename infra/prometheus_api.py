"""The one Prometheus HTTP client: gates, reports, the local stack and the server runner all call it.

The transport is prometheus-api-client's `PrometheusConnect`, the library the product's design names; its
0.7.2 release needs only requests and dateparser (pandas, numpy and matplotlib are its extras). Every
failure becomes a named error whose `kind` gate records keep, told apart by exception class and by the
answer's status and JSON, never by parsing a message:

- `requests.ConnectionError` (refused, reset) and `requests.Timeout` (no answer within `timeout_s`):
  `UnreachableError`, as is any other `requests` failure and a 200 whose body is not the API's JSON.
- An answer of 4xx or 5xx: `PrometheusApiClientException` carries only a message for every status, so our
  session's response hook raises `requests.HTTPError` with the response first. HTTP 400/422 or an error
  type that judges the query is a `QueryError`; Prometheus' `unavailable`/`internal` or a proxy's error
  page means no usable answer, an `UnreachableError`. The package's own exception is left for what the
  hook lets through (another non-200 answer, not the API's): `UnreachableError`.

Retries are off (`Retry(0, read=False)`, requests' own default, in place of the package's three with
backoff on 5xx): an evaluation stops asking once Prometheus is unreachable and asks again at its next
interval, so one query costs at most `timeout_s`.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import requests
from prometheus_api_client import PrometheusApiClientException
from prometheus_api_client.prometheus_connect import PrometheusConnect
from requests.adapters import Retry

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
        self._session = requests.Session()
        self._session.hooks["response"].append(_raise_for_status)
        # PrometheusConnect mounts its adapter (with these retries) on our session, so reload() shares it
        self._connect = PrometheusConnect(
            self.url,
            retry=Retry(0, read=False),
            session=self._session,
            timeout=timeout_s,  # type: ignore[arg-type]  # typed int; requests takes float seconds
        )
        weakref.finalize(self, self._session.close)  # pooled connections go with the client

    # -- queries ---------------------------------------------------------------------------------
    def instant(self, promql: str, at: float | None = None) -> list[Sample]:
        """One sample per series at unix time `at` (Prometheus' own now when None); a scalar is one sample."""
        params = {"time": f"{at:.3f}"} if at is not None else {}
        result = self._ask(promql, lambda: self._connect.custom_query(promql, params=params))
        kind = _result_type(result)
        if kind != "vector" and kind != "scalar":
            raise QueryError(f"expected an instant vector from {promql!r}, got {kind}")
        # float() reads Prometheus' "NaN" and "+Inf" strings
        if kind == "scalar":
            return [Sample({}, float(result[1]))]
        return [Sample(dict(r["metric"]), float(r["value"][1])) for r in result]

    def range(self, promql: str, start: float, end: float, step_s: float) -> list[RangeSeries]:
        # custom_query_range rounds start and end to whole seconds; `params`, merged last, send them as given
        bounds = {"start": f"{start:.3f}", "end": f"{end:.3f}"}
        result = self._ask(
            promql,
            lambda: self._connect.custom_query_range(
                promql, _utc(start), _utc(end), f"{step_s:g}", params=bounds
            ),
        )
        kind = _result_type(result)
        if kind != "matrix" and result != []:
            raise QueryError(f"expected a range vector from {promql!r}, got {kind}")
        out = []
        for r in result:
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
        try:
            self._session.post(f"{self.url}/-/reload", timeout=self.timeout_s)
        except requests.HTTPError as exc:
            detail = exc.response.text[:300]
            raise QueryError(f"Prometheus at {self.url} rejected the reload: {detail}") from exc
        except requests.RequestException as exc:
            raise UnreachableError(f"Prometheus at {self.url} unreachable: {_root_cause(exc)}") from exc

    # -- transport -------------------------------------------------------------------------------
    def _ask(self, promql: str, call: Callable[[], Any]) -> Any:
        """`data.result` of one PrometheusConnect query, every failure as a named error."""
        try:
            return call()
        except requests.HTTPError as exc:  # an answer of 4xx or 5xx (our hook), the response attached
            response = exc.response
            detail = response.text[:300]
            if response.status_code in (400, 422) or _error_type(response) in _QUERY_ERROR_TYPES:
                raise QueryError(f"Prometheus rejected {promql!r}: {detail}") from exc
            raise UnreachableError(
                f"Prometheus at {self.url} answered HTTP {response.status_code}: {detail}"
            ) from exc
        except requests.RequestException as exc:  # ConnectionError, Timeout, a body that is not JSON
            raise UnreachableError(f"Prometheus at {self.url} unreachable: {_root_cause(exc)}") from exc
        except (PrometheusApiClientException, LookupError, TypeError) as exc:
            # another non-200 answer, or JSON without the API's `data.result`: not Prometheus answering
            raise UnreachableError(f"Prometheus at {self.url} unreachable: {exc!r}") from exc


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost cause of a transport failure ("[Errno 111] Connection refused", "timed out"): what a
    record or a notice should say, not urllib3's retry wrapper spelling out the whole query URL."""
    seen: set[int] = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = (
            exc.__cause__
            or exc.__context__
            or next((a for a in exc.args if isinstance(a, BaseException)), None)
        )
        if inner is None:
            break
        exc = inner
    return exc


def _raise_for_status(response: requests.Response, **kwargs: Any) -> None:
    """Session hook: an answer of 4xx or 5xx raises `requests.HTTPError`, which keeps the response (the
    package's own exception keeps only a message). The body is read here, inside the request, so a body
    that never arrives is a `requests` error like any other."""
    _ = response.content
    response.raise_for_status()


def _result_type(result: Any) -> str:
    """Prometheus' `resultType`, which the package drops, read off `data.result`: a list of series is a
    vector (a matrix when they carry `values`), a [time, value] pair a scalar, or a string when its value
    is not a number. An empty result reads as a vector."""
    if isinstance(result, list) and all(isinstance(r, dict) for r in result):
        return "matrix" if any("values" in r for r in result) else "vector"
    try:
        float(result[1])
    except (ValueError, TypeError, LookupError):
        return "string"
    return "scalar"


def _utc(unix_s: float) -> datetime:
    return datetime.fromtimestamp(unix_s, UTC)


def _error_type(response: requests.Response) -> str | None:
    try:
        doc = response.json()
    except ValueError:
        return None
    return doc.get("errorType") if isinstance(doc, dict) else None

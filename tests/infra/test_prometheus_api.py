"""The one Prometheus client: answers as samples and series, every failure as a named error.

Transport failures a real Prometheus cannot be made to produce on demand (a proxy's HTML error page,
a slow answer, a body that is not JSON) come from a small stand-in server; everything else from a real
Prometheus holding backfilled history.
"""

import json
import math
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest

from infra.net import free_port
from infra.prometheus import PrometheusServer, backfill, openmetrics_text
from infra.prometheus_api import PrometheusAPI, ProviderError, QueryError, RangeSeries, UnreachableError

END = float(int(time.time()) // 60 * 60 - 3600 * 5)  # older than any head a live server would accept


# -- no server at all --------------------------------------------------------------------------------
def test_unreachable_url_is_an_unreachable_error_for_every_call():
    api = PrometheusAPI(f"http://127.0.0.1:{free_port()}", timeout_s=2)
    calls = [
        lambda: api.instant("up", at=END),
        lambda: api.range("up", END - 60, END, 15),
        lambda: api.wait_for("up", timeout_s=5),
        api.reload,
    ]
    for call in calls:
        with pytest.raises(UnreachableError, match=f"Prometheus at {api.url} unreachable") as info:
            call()
        assert info.value.kind == "unreachable" and isinstance(info.value, ProviderError)
        # the cause, not the transport's retry wrapper spelling out the query (records and notices show it)
        assert str(info.value).endswith("Connection refused") and "/api/v1" not in str(info.value), info.value


# -- a stand-in that answers what a real Prometheus will not ------------------------------------------
class _Answer(BaseHTTPRequestHandler):
    status = 200
    body = b""
    delay_s = 0.0  # before the answer
    body_delay_s = 0.0  # between the headers and the body
    asked: list[tuple[str, str]]  # (method, path) of each request, shared by the server's handlers

    def do_GET(self) -> None:
        self.asked.append((self.command, self.path))
        time.sleep(self.delay_s)
        self.send_response(self.status)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.flush()
        time.sleep(self.body_delay_s)
        self.wfile.write(self.body)

    do_POST = do_GET

    def log_message(self, *args: object) -> None:
        pass


class _StandIns:
    """Starts stand-ins that answer every request alike and returns a client of each; `seen()` tells what
    the last one was asked."""

    def __init__(self) -> None:
        self.servers: list[ThreadingHTTPServer] = []
        self.asked: list[list[tuple[str, str]]] = []

    def __call__(
        self, status: int, body: bytes | dict, delay_s: float = 0.0, body_delay_s: float = 0.0
    ) -> PrometheusAPI:
        payload = json.dumps(body).encode() if isinstance(body, dict) else body
        asked: list[tuple[str, str]] = []
        handler = type(
            "Handler",
            (_Answer,),
            {
                "status": status,
                "body": payload,
                "delay_s": delay_s,
                "body_delay_s": body_delay_s,
                "asked": asked,
            },
        )
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.servers.append(server)
        self.asked.append(asked)
        return PrometheusAPI(f"http://127.0.0.1:{server.server_address[1]}/", timeout_s=1)

    def seen(self) -> list[tuple[str, str, dict[str, list[str]]]]:
        """(method, last path segment, query parameters) of each request the last stand-in received."""
        parts = [(method, urlsplit(url)) for method, url in self.asked[-1]]
        return [(method, url.path.rsplit("/", 1)[-1], parse_qs(url.query)) for method, url in parts]

    def close(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()


@pytest.fixture
def answering() -> Iterator[_StandIns]:
    stand_ins = _StandIns()
    yield stand_ins
    stand_ins.close()


def test_a_proxy_error_page_is_unreachable_not_a_rejected_query(answering):
    api = answering(502, b"<html>Bad Gateway</html>")
    with pytest.raises(UnreachableError, match="answered HTTP 502: <html>Bad Gateway"):
        api.instant("up", at=END)


def test_prometheus_unavailable_is_unreachable(answering):
    api = answering(503, {"status": "error", "errorType": "unavailable", "error": "TSDB not ready"})
    with pytest.raises(UnreachableError, match="answered HTTP 503"):
        api.range("up", END - 60, END, 15)


def test_a_query_timeout_on_prometheus_side_is_a_query_error(answering):
    api = answering(
        503, {"status": "error", "errorType": "timeout", "error": "query timed out in query execution"}
    )
    with pytest.raises(QueryError, match="rejected 'up'.*timed out") as info:
        api.instant("up", at=END)
    assert info.value.kind == "query_error"


def test_no_answer_within_the_timeout_is_unreachable(answering):
    api = answering(200, {"status": "success", "data": {"resultType": "vector", "result": []}}, delay_s=3)
    started = time.monotonic()
    with pytest.raises(UnreachableError, match="unreachable: timed out$"):
        api.instant("up", at=END)
    assert time.monotonic() - started < 2.5


def test_a_body_that_is_not_prometheus_json_is_unreachable(answering):
    with pytest.raises(UnreachableError, match="unreachable"):
        answering(200, b"it works!").instant("up", at=END)


def test_a_query_prometheus_rejects_is_a_query_error_with_its_message(answering):
    api = answering(
        400,
        {"status": "error", "errorType": "bad_data", "error": "1:4: parse error: unclosed left parenthesis"},
    )
    with pytest.raises(
        QueryError, match=r"Prometheus rejected 'sum\(up': .*unclosed left parenthesis"
    ) as info:
        api.instant("sum(up", at=END)
    assert info.value.kind == "query_error"
    api = answering(422, {"status": "error", "errorType": "execution", "error": "expanding series: too many"})
    with pytest.raises(QueryError, match="rejected 'up'.*too many"):
        api.range("up", END - 60, END, 15)


def test_an_error_answer_is_asked_once(answering):
    # the package would retry 5xx three times with backoff; an evaluation must not wait for that
    for status in (500, 502, 503):
        api = answering(status, {"status": "error", "errorType": "internal", "error": "boom"})
        started = time.monotonic()
        with pytest.raises(UnreachableError, match=f"answered HTTP {status}: .*boom"):
            api.instant("up", at=END)
        assert time.monotonic() - started < 0.5 and len(answering.seen()) == 1


def test_no_answer_within_the_timeout_is_asked_once(answering):
    api = answering(200, {"status": "success", "data": {"resultType": "vector", "result": []}}, delay_s=2.5)
    with pytest.raises(UnreachableError, match="timed out") as info:
        api.range("up", END - 60, END, 15)
    assert info.value.kind == "unreachable" and len(answering.seen()) == 1


@pytest.mark.parametrize("status", [200, 400])
def test_a_body_that_stops_after_the_headers_is_unreachable_within_the_timeout(answering, status):
    api = answering(status, {"status": "error", "errorType": "bad_data", "error": "x"}, body_delay_s=3)
    started = time.monotonic()
    with pytest.raises(UnreachableError, match=f"Prometheus at {api.url} unreachable"):
        api.instant("up", at=END)
    assert time.monotonic() - started < 2.5


def test_an_answer_that_is_not_the_api_is_unreachable(answering):
    for status, body in ((204, b""), (200, {"hello": "world"}), (200, b"[1, 2]")):
        with pytest.raises(UnreachableError, match="unreachable") as info:
            answering(status, body).instant("up", at=END)
        assert info.value.kind == "unreachable"


def test_query_parameters_are_sent_as_given(answering):
    api = answering(200, {"status": "success", "data": {"resultType": "matrix", "result": []}})
    assert api.range("up", END - 60.25, END + 0.5, 0.5) == []
    assert answering.seen() == [
        (
            "GET",
            "query_range",
            {"query": ["up"], "start": [f"{END - 60.25:.3f}"], "end": [f"{END + 0.5:.3f}"], "step": ["0.5"]},
        )
    ]
    api = answering(200, {"status": "success", "data": {"resultType": "vector", "result": []}})
    assert api.instant("up", at=END + 0.125) == [] and api.instant("up") == []
    assert answering.seen() == [
        ("GET", "query", {"query": ["up"], "time": [f"{END + 0.125:.3f}"]}),
        ("GET", "query", {"query": ["up"]}),
    ]


def test_result_types_are_read_without_a_result_type(answering):
    # the package hands back `data.result` alone; its shape tells scalar, vector, matrix and string apart
    scalar = {"status": "success", "data": {"resultType": "scalar", "result": [END, "+Inf"]}}
    (sample,) = answering(200, scalar).instant("scalar(up)", at=END)
    assert sample.labels == {} and sample.value == math.inf
    string = {"status": "success", "data": {"resultType": "string", "result": [END, "hello"]}}
    with pytest.raises(QueryError, match="expected an instant vector from '\"hello\"', got string"):
        answering(200, string).instant('"hello"', at=END)
    vector = {
        "status": "success",
        "data": {"resultType": "vector", "result": [{"metric": {}, "value": [END, "1"]}]},
    }
    with pytest.raises(QueryError, match="expected a range vector from 'up', got vector"):
        answering(200, vector).range("up", END - 60, END, 15)


def test_reload_answered_with_an_error_is_rejected(answering):
    api = answering(500, b"failed to reload config: parse error")
    with pytest.raises(QueryError, match="rejected the reload: failed to reload config") as info:
        api.reload()
    assert info.value.kind == "query_error" and answering.seen() == [("POST", "reload", {})]


def test_wait_for_gives_up_naming_the_query_and_the_condition(answering):
    api = answering(200, {"status": "success", "data": {"resultType": "vector", "result": []}})
    with pytest.raises(TimeoutError, match=r"'up\{job=\"x\"\}' did not return a series in 0s"):
        api.wait_for('up{job="x"}', timeout_s=0.3, interval_s=0.05)


# -- a real Prometheus ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def prometheus(tmp_path_factory) -> Iterator[PrometheusServer]:
    data = Path(tmp_path_factory.mktemp("tsdb"))
    times = [END - 600 + 15 * i for i in range(41)]
    series = [
        ("demo_requests_total", {"arm": arm}, [(t, rate * (t - times[0])) for t in times])
        for arm, rate in (("baseline", 2.0), ("canary", 3.0))
    ]
    series.append(
        ("demo_ratio", {"arm": "canary"}, [(t, math.nan if i == 40 else 0.5) for i, t in enumerate(times)])
    )
    backfill(openmetrics_text(series), data)
    with PrometheusServer(data_dir=data) as server:
        yield server


@pytest.mark.integration
def test_instant_vector_and_scalar(prometheus):
    api = prometheus.api
    samples = sorted(api.instant("rate(demo_requests_total[5m])", at=END), key=lambda s: s.labels["arm"])
    assert [s.labels["arm"] for s in samples] == ["baseline", "canary"]
    assert [s.value for s in samples] == [pytest.approx(2.0), pytest.approx(3.0)]
    (scalar,) = api.instant("scalar(sum(rate(demo_requests_total[5m])))", at=END)
    assert scalar.labels == {} and scalar.value == pytest.approx(5.0)
    assert api.instant('demo_requests_total{arm="nobody"}', at=END) == []
    (nan,) = api.instant("demo_ratio", at=END)
    assert math.isnan(nan.value)  # NaN comes through as a float; judging it is the caller's business


@pytest.mark.integration
def test_range_series_with_times_and_values(prometheus):
    (series,) = prometheus.api.range('rate(demo_requests_total{arm="canary"}[1m])', END - 300, END - 60, 30)
    assert isinstance(series, RangeSeries) and series.labels == {"arm": "canary"}
    assert series.times.tolist() == [END - 300 + 30 * i for i in range(9)]
    assert np.allclose(series.values, 3.0)


@pytest.mark.integration
def test_range_times_keep_a_start_between_seconds(prometheus):
    (series,) = prometheus.api.range(
        'rate(demo_requests_total{arm="canary"}[1m])', END - 300.25, END - 60, 30
    )
    assert series.times.tolist() == [END - 300.25 + 30 * i for i in range(9)]
    assert np.allclose(series.values, 3.0)


@pytest.mark.integration
def test_rejected_query_is_a_query_error_naming_the_query(prometheus):
    with pytest.raises(
        QueryError, match=r"Prometheus rejected 'sum\(rate\(demo_requests_total': .*parse error"
    ):
        prometheus.api.instant("sum(rate(demo_requests_total", at=END)
    with pytest.raises(QueryError, match="rejected"):
        prometheus.api.range("sum(", END - 60, END, 15)


@pytest.mark.integration
def test_a_range_vector_where_an_instant_one_is_expected_is_a_query_error(prometheus):
    with pytest.raises(QueryError, match="expected an instant vector .* got matrix"):
        prometheus.api.instant("demo_requests_total[1m]", at=END)


@pytest.mark.integration
def test_wait_for_repeats_the_query_until_the_condition_holds(prometheus: PrometheusServer) -> None:
    seen: list[list] = []

    def third_answer(samples: list) -> bool:
        seen.append(samples)
        return len(seen) == 3

    samples = prometheus.api.wait_for("vector(2)", until=third_answer, timeout_s=10, interval_s=0.05)
    assert len(seen) == 3 and [s.value for s in samples] == [2.0]


@pytest.mark.integration
def test_reload_of_a_broken_config_is_rejected(prometheus):
    assert prometheus.workdir is not None
    config = prometheus.workdir / "prometheus.yml"
    good = config.read_text()
    try:
        config.write_text("scrape_configs: [{job_name: broken, static_configs: [{targets: 7}]}]\n")
        with pytest.raises(QueryError, match="rejected the reload"):
            prometheus.api.reload()
    finally:
        config.write_text(good)
    prometheus.api.reload()
    prometheus.api.wait_ready(5)

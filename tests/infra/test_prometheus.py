import time

import pytest
from prometheus_client import CollectorRegistry, Counter, start_http_server

from infra import prometheus as prom
from infra.net import free_port
from infra.prometheus import (
    PrometheusError,
    PrometheusServer,
    backfill,
    openmetrics_text,
    static_scrape_config,
)


def test_missing_binary_says_how_to_install(monkeypatch):
    monkeypatch.setattr(prom, "PROMETHEUS_BINARY", "prometheus-that-does-not-exist")
    with pytest.raises(PrometheusError, match="make setup"):
        PrometheusServer().start()


def test_openmetrics_text_sorts_samples_and_ends_with_eof():
    text = openmetrics_text([("m_total", {"arm": "canary"}, [(20.0, 2.0), (10.0, 1.0)])])
    assert text.splitlines() == [
        'm_total{arm="canary"} 1.0 10.000',
        'm_total{arm="canary"} 2.0 20.000',
        "# EOF",
    ]


def test_openmetrics_text_merges_triples_of_one_series():
    # Two windows of the same series given separately, later window first: promtool needs one sorted run.
    text = openmetrics_text(
        [
            ("m_total", {"arm": "canary"}, [(30.0, 3.0)]),
            ("m_total", {"arm": "baseline"}, [(5.0, 9.0)]),
            ("m_total", {"arm": "canary"}, [(10.0, 1.0)]),
        ]
    )
    assert text.splitlines() == [
        'm_total{arm="canary"} 1.0 10.000',
        'm_total{arm="canary"} 3.0 30.000',
        'm_total{arm="baseline"} 9.0 5.000',
        "# EOF",
    ]


def test_backfill_rejects_input_without_eof(tmp_path):
    with pytest.raises(PrometheusError, match="# EOF"):
        backfill('m{a="b"} 1 10\n', tmp_path)


@pytest.mark.integration
def test_early_exit_reports_the_log_tail():
    with pytest.raises(PrometheusError, match="log tail"):
        PrometheusServer(extra_args=["--storage.tsdb.retention.time=not-a-duration"]).start()


@pytest.mark.integration
def test_backfilled_history_is_queryable_at_once(tmp_path):
    end = int(time.time()) - 3600 * 5  # hours old: older than any head a live server would accept
    samples = [(end - 600 + i, float(i)) for i in range(0, 601, 5)]
    backfill(openmetrics_text([("demo_requests_total", {"arm": "canary"}, samples)]), tmp_path)
    with PrometheusServer(data_dir=tmp_path) as server:
        result = server.api.instant("increase(demo_requests_total[300s])", at=end)
        assert len(result) == 1 and result[0].value == pytest.approx(300.0, rel=0.05)
        assert result[0].labels["arm"] == "canary"
    assert (tmp_path).exists()  # a given data dir is the caller's: kept after stop


@pytest.mark.integration
def test_live_scrape_with_arm_labels_and_reload():
    registries = {arm: CollectorRegistry() for arm in ("baseline", "canary")}
    counters = {arm: Counter("demo_requests", "requests", registry=reg) for arm, reg in registries.items()}
    ports = {arm: free_port() for arm in registries}
    servers = [
        start_http_server(ports[arm], addr="127.0.0.1", registry=reg) for arm, reg in registries.items()
    ]
    try:
        for arm, counter in counters.items():
            counter.inc(5 if arm == "canary" else 1)

        def job(arm):
            return static_scrape_config(arm, [f"127.0.0.1:{ports[arm]}"], labels={"arm": arm})

        with PrometheusServer([job("baseline")], scrape_interval_s=0.5) as server:
            assert server.pid is not None and (server.workdir / "prometheus.yml").exists()
            server.wait_for_series('demo_requests_total{arm="baseline"}')
            assert server.api.instant('demo_requests_total{arm="canary"}') == []
            server.reload([job("baseline"), job("canary")])
            server.wait_for_series('demo_requests_total{arm="canary"}')
            value = server.api.instant('demo_requests_total{arm="canary"}')[0].value
            assert value == 5.0
        assert not server.running and server.pid is None and server.workdir is None
    finally:
        for http_server, thread in servers:
            http_server.shutdown()
            thread.join(timeout=5)

"""The default CPU gate on live scrapes: two in-process exporters (one per arm) and a real Prometheus."""

import threading
import time

import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from gates import evaluate, parse_gate_document
from gates.config import DEFAULT_GATE_FILE
from infra.net import free_port
from infra.prometheus import PrometheusServer, static_scrape_config

pytestmark = pytest.mark.integration
CORES = 4.0
BUSY = {"baseline": 0.30, "canary": 0.80}  # share of allotted cores each arm burns


@pytest.fixture
def exporters():
    stop = threading.Event()
    targets, servers, counters = {}, [], {}
    for arm in BUSY:
        registry = CollectorRegistry()
        counters[arm] = Counter("backend_process_cpu_seconds", "cpu", ["rank"], registry=registry)
        Gauge("backend_cpu_allotted_cores", "cores", registry=registry).set(CORES)
        port = free_port()
        servers.append(start_http_server(port, addr="127.0.0.1", registry=registry))
        targets[arm] = f"127.0.0.1:{port}"

    def burn():
        last = time.monotonic()
        while not stop.wait(0.05):
            now = time.monotonic()
            for arm, share in BUSY.items():
                counters[arm].labels(rank="0").inc(share * CORES * (now - last))
            last = now

    thread = threading.Thread(target=burn, daemon=True)
    thread.start()
    try:
        yield targets
    finally:
        stop.set()
        thread.join(timeout=5)
        for http_server, server_thread in servers:
            http_server.shutdown()
            server_thread.join(timeout=5)


def test_cpu_gate_on_live_scrapes(exporters):
    doc = yaml.safe_load(DEFAULT_GATE_FILE.read_text())
    doc["gates"] = [g for g in doc["gates"] if g["name"] == "cpu_utilisation"]
    doc["gates"][0]["arms"] = ["baseline", "canary"]
    doc["gates"][0]["consecutive_failures"] = 1
    doc["gates"][0].update(step_seconds=1, min_points=3)  # sub-windows of two 0.5 s scrapes
    config = parse_gate_document(doc, "local")
    jobs = [static_scrape_config(arm, [t], labels={"arm": arm}) for arm, t in exporters.items()]
    with PrometheusServer(jobs, scrape_interval_s=0.5) as server:
        server.wait_for_series('backend_process_cpu_seconds_total{arm="canary"}')
        time.sleep(6.0)
        end = time.time()
        ev = evaluate(
            config,
            prometheus_url=server.url,
            start=end - 5.5,
            end=end,
            weights={"baseline": 50.0, "canary": 50.0},
        )
    gate = ev.gates[0]
    assert gate.values["baseline"] == pytest.approx(0.30, abs=0.08)
    assert gate.values["canary"] == pytest.approx(0.80, abs=0.15)
    assert gate.verdict == "fail" and gate.reason.startswith("canary:") and "above max 60.0%" in gate.reason
    assert gate.ci["canary"][0] > 0.60 and gate.ci["baseline"][1] < 0.60 and gate.samples["canary"] == 5
    assert gate.queries["canary"]["value"].startswith(
        'sum(rate(backend_process_cpu_seconds_total{arm="canary"}[6s]))'
    )
    assert "[1s]" in gate.queries["canary"]["value_subwindows"]

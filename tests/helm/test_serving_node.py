"""The chart's arms as pods that serve, under a real kubelet, and the packaged `kubernetes` gates judging
what real collectors scraped from them: sglang's metrics through the chart's PodMonitor (its `arm`
relabeling as rendered), container CPU and working set from the kubelet's cAdvisor, CPU limits from
kube-state-metrics, and Traefik's per-Service counters, with Locust's load routed by the chart's
HTTPRoute at 50/50. Nothing is backfilled or renamed; the queries are the packaged ones.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from cluster_series import gate_file_for_served_pods, release_target
from serving_node import ARMS, serving_release

from gates.config import load_gate_file
from gates.evaluate import evaluate
from infra.prometheus_api import PrometheusAPI
from rollout.processes import ProcessRef, terminate

pytestmark = pytest.mark.k8s

NAMESPACE = "serving"
RATE = 6.0  # req/s through the gateway: what two one-core CPU pods serve on this 2-core machine
WINDOW_S = 150.0
SLOWDOWN_MS = 300.0  # the canary's rehearsal fault: every request this much later


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    with serving_release(
        tmp_path_factory.mktemp("serving"), NAMESPACE, "route.weights.baseline=50", "route.weights.canary=50"
    ) as running:
        yield running


def test_a_slow_canarys_pods_are_judged_from_what_the_collectors_scraped(release, tmp_path):
    release.set_faults("canary", extra_latency_ms=SLOWDOWN_MS)
    load = release.start_load("load", RATE)
    time.sleep(20)  # Locust's start and the first scrapes
    start = time.time()
    time.sleep(WINDOW_S)
    end = time.time()
    terminate(ProcessRef.from_dict(load["process"]), timeout_s=30.0)
    records = [
        json.loads(line) for line in Path(load["requests_jsonl"]).read_text().splitlines() if line.strip()
    ]

    served = {arm: sum(1 for r in records if r.get("arm") == arm and r.get("ok")) for arm in ARMS}
    assert all(n > 0.3 * RATE * WINDOW_S / 2 for n in served.values()), (served, records[-3:], release.logs())

    evaluation = evaluate(
        load_gate_file(gate_file_for_served_pods(tmp_path), profile="kubernetes"),
        prometheus_url=release.prometheus.url,
        start=start,
        end=end,
        weights={"baseline": 50.0, "canary": 50.0},
        offered_rps=RATE,
        variables=release_target(NAMESPACE).gate_variables(),
    )
    by_name = {g.name: g for g in evaluation.gates}
    summary = {name: (g.raw_verdict, g.reason) for name, g in by_name.items()}
    print(json.dumps(summary, indent=1))

    # The slowdown, seen in sglang's histograms of the pods the PodMonitor labelled by arm.
    assert by_name["latency_e2e_p99"].raw_verdict == "fail", summary
    # CPU over the container's limit: cAdvisor's usage of the canary's pods / kube-state-metrics' limit.
    canary_pods = f'namespace="{NAMESPACE}",pod=~"{release_target(NAMESPACE).pod_regex("canary")}"'
    prometheus = PrometheusAPI(release.prometheus.url, timeout_s=30)
    (used,) = prometheus.instant(
        f'sum(rate(container_cpu_usage_seconds_total{{{canary_pods},container="sglang"}}[{int(end - start)}s]))',
        end,
    )
    (limit,) = prometheus.instant(
        f'sum(kube_pod_container_resource_limits{{{canary_pods},resource="cpu"}})', end
    )
    assert limit.value == 1.0
    cpu = by_name["cpu_utilisation"]
    assert cpu.raw_verdict != "inconclusive" or "no data" not in cpu.reason, summary
    assert cpu.values["canary"] == pytest.approx(used.value, rel=0.35), (cpu.values, used)
    # The working set of every arm's pods, from cAdvisor, reached the leak gate.
    memory = by_name["memory_leak"]
    assert "no data" not in memory.reason and "no series" not in memory.reason, summary
    # Traefik's counters per arm Service: the offered share and the canary's own throughput.
    assert "no data" not in by_name["throughput"].reason, summary

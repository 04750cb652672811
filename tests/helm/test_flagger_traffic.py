"""Flagger decides on the traffic it routes: the chart's server pods serve under a real kubelet
(tests/helm/serving_node.py), Flagger's Gateway API router moves Traefik's weights, Locust sends through
the gateway, and the exported MetricTemplates read what real collectors scraped from Flagger's own
`-primary` and canary pods, at the timing `gates export --rate` sizes for that load (no shortened knob).

The chart runs its baseline Deployment only, without its own route: that Deployment is Flagger's target
(the chart's selector label app.kubernetes.io/name becomes `<name>-primary` on the primary's pods, which
the chart's PodMonitor still selects). A new revision of the target is the candidate: a good one changes
only an environment variable (the same build, restarted), a slow one also adds 300 ms to every request.
Printed per scenario: the decision, the time from the new revision to it, the failed checks, and the
weights Flagger set.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from cluster_series import FULL
from controllers import apply, flagger, flagger_canary, get, log_tail, wait_for
from serving_node import SLOW_ARGS, controller_target, exported_gates, new_revision

from rollout.processes import ProcessRef, terminate

pytestmark = [pytest.mark.k8s, pytest.mark.controllers]

NAMESPACE = "flagger-traffic"
TARGET = f"{FULL}-baseline"  # the chart's baseline Deployment, Flagger's target
RATE = 16.0  # req/s through the gateway (Poisson)


@pytest.fixture(scope="module")
def plane(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("flagger-traffic")
    with controller_target(workdir, NAMESPACE) as release:
        with flagger(release.cluster, workdir, release.prometheus.url) as log:
            yield release, log


def follow(cluster, log: Path, timeout_s: float) -> dict[str, Any]:
    """Poll the Canary until it succeeds or fails; the decision, its time, failed checks, weights seen."""
    began = time.monotonic()
    weights: list[int] = []
    phases: list[str] = []
    deadline = began + timeout_s
    while time.monotonic() < deadline:
        status = get(cluster, "canary", TARGET, NAMESPACE).get("status", {})
        phase, weight = status.get("phase", ""), status.get("canaryWeight", 0)
        if not phases or phases[-1] != phase:
            phases.append(phase)
        if weight and (not weights or weights[-1] != weight):
            weights.append(weight)
        if phase in ("Succeeded", "Failed") and len(phases) > 1:
            return {
                "decision": phase,
                "seconds": round(time.monotonic() - began),
                "failed_checks": status.get("failedChecks", 0),
                "weights": weights,
                "phases": phases,
            }
        time.sleep(2)
    raise AssertionError(
        f"no decision after {timeout_s:.0f}s (phases {phases}, weights {weights}):\n{log_tail(log)}"
    )


@pytest.mark.timeout(3000)
def test_flagger_promotes_a_good_candidate_and_rolls_back_a_slow_one(plane, tmp_path):
    release, log = plane
    cluster = release.cluster
    apply(cluster, *exported_gates(tmp_path, "flagger", release.prometheus.url, NAMESPACE, RATE))
    (block,) = exported_gates(tmp_path, "flagger-analysis", release.prometheus.url, NAMESPACE, RATE)
    apply(cluster, flagger_canary(TARGET, NAMESPACE, "canary-gateway", block["analysis"], targetPort=30000))
    interval_s = int(block["analysis"]["interval"].rstrip("s"))
    wait_for(  # Flagger acts once per interval: the primary is created at one tick, found ready at the next
        "the Canary initialized (primary serving)",
        lambda: get(cluster, "canary", TARGET, NAMESPACE).get("status", {}).get("phase") == "Initialized",
        2 * interval_s + 120,
        describe=lambda: log_tail(log),
    )
    load = release.start_load("load", RATE)
    try:
        new_revision(cluster, NAMESPACE, TARGET, "2")
        good = follow(cluster, log, timeout_s=8 * interval_s + 300)
        print("good candidate:", json.dumps(good))
        assert good["decision"] == "Succeeded" and good["weights"][:2] == [10, 50], (good, log_tail(log))
        primary = get(cluster, "deployment", f"{TARGET}-primary", NAMESPACE)
        (server,) = [c for c in primary["spec"]["template"]["spec"]["containers"] if c["name"] == "sglang"]
        assert {"name": "CANARY_REVISION", "value": "2"} in server["env"]  # promoted: the primary runs it

        new_revision(cluster, NAMESPACE, TARGET, "3", SLOW_ARGS)
        slow = follow(cluster, log, timeout_s=8 * interval_s + 300)
        print("slow candidate:", json.dumps(slow))
        assert slow["decision"] == "Failed", (slow, log_tail(log))
        halts = [line for line in log.read_text().splitlines() if "Halt advancement" in line]
        assert any("latency-" in line for line in halts[-3:]), halts[-5:]
    finally:
        terminate(ProcessRef.from_dict(load["process"]), timeout_s=30.0)

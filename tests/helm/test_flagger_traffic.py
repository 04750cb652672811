"""Flagger decides on the traffic it routes: the chart's server pods serve under a real kubelet
(tests/helm/serving_node.py), Flagger's Gateway API router moves Traefik's weights, Locust sends through
the gateway, and the exported MetricTemplates read what real collectors scraped from Flagger's own
`-primary` and canary pods, at the timing `gates export --rate` sizes for that load (no shortened knob).

The chart runs its baseline Deployment only, without its own route: that Deployment is Flagger's target
(the chart's selector label app.kubernetes.io/name becomes `<name>-primary` on the primary's pods, which
the chart's PodMonitor still selects). A new revision of the target is the candidate. The scenarios, in
order: a good one changes only an environment variable (the same build, restarted); a slow one also adds
300 ms to every request; a leaking one retains memory with every request; a vanished one is good, but
Prometheus stops once Flagger has set 10%, so every query fails. Printed per scenario: the decision, the
time from the new revision to it, the failed checks, the weights Flagger set, and how our evaluator judged
the window of each of Flagger's analyses.
"""

from __future__ import annotations

import calendar
import json
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from cluster_series import FULL, gate_file_for_served_pods
from controllers import (
    Arms,
    agreement,
    apply,
    contradictions,
    flagger,
    flagger_canary,
    gate_of,
    get,
    log_tail,
    wait_for,
)
from serving_node import chosen_scenarios, controller_target, exported_gates, new_revision

from gates.config import load_gate_file
from gates.export import duration_seconds, flagger_dialect
from rollout.processes import ProcessRef, terminate

pytestmark = [pytest.mark.k8s, pytest.mark.controllers]

NAMESPACE = "flagger-traffic"
TARGET = f"{FULL}-baseline"  # the chart's baseline Deployment, Flagger's target
RATE = 16.0  # req/s through the gateway (Poisson)
# The metric a failed check names: a value beyond its bound, no value, or a query that failed.
CHECK_FAILED = re.compile(r"(?:advancement |custom metric: |Metric query failed for )(?P<metric>[a-z0-9-]+)")


@pytest.fixture(scope="module")
def plane(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("flagger-traffic")
    with controller_target(workdir, NAMESPACE) as release:
        with flagger(release.cluster, workdir, release.prometheus.url) as log:
            yield release, log


def follow(cluster, log: Path, timeout_s: float) -> dict[str, Any]:
    """Poll the Canary until it succeeds or fails; the decision, its time, the weights and phases seen."""
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
                "weights": weights,
                "phases": phases,
            }
        time.sleep(2)
    raise AssertionError(
        f"no decision after {timeout_s:.0f}s (phases {phases}, weights {weights}):\n{log_tail(log)}"
    )


def analyses(log: Path, config, order: Sequence[str], since: float) -> list[dict[str, Any]]:
    """Flagger's analyses of the Canary logged after `since`, per gate it checked, in Argo's words:
    Successful for the gates of the metrics it passed, Failed (a value beyond its bound, or none) or Error
    (the query failed) for the gate of the metric it halted on. Flagger checks the metrics in `order` and
    stops at the first that fails; an analysis that passes them all is logged only by what follows it
    (an advance from a weight above 0, or the promotion's copy to the primary)."""
    canary = f"{TARGET}.{NAMESPACE}"
    weight = 0  # traffic on the canary: Flagger analyses only from the first step on
    out: list[dict[str, Any]] = []
    for line in log.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("canary") != canary:
            continue
        at = calendar.timegm(time.strptime(entry["ts"][:19], "%Y-%m-%dT%H:%M:%S")) + float(
            entry["ts"][19:-1] or 0
        )
        message = entry.get("msg", "")
        if at < since:
            continue
        failed = CHECK_FAILED.search(message) if message.startswith(("Halt", "Metric query failed")) else None
        advanced = re.match(r"Advance \S+ canary weight (\d+)", message)
        if failed and failed["metric"] in order:
            checked = order[: order.index(failed["metric"]) + 1]
            bad = "Error" if message.startswith("Metric query failed") else "Failed"
        elif (advanced and weight > 0) or message.startswith("Copying"):
            checked, bad = list(order), None
        else:
            checked = []
        if advanced:
            weight = int(advanced[1])
        elif message.startswith(("Copying", "Rolling back")):
            weight = 0
        by_gate: dict[str, str] = {}
        for metric in checked:
            phase = bad if bad and metric == checked[-1] else "Successful"
            gate = gate_of(config, metric)
            by_gate[gate] = phase if by_gate.get(gate, "Successful") == "Successful" else by_gate[gate]
        for gate, phase in by_gate.items():
            failed_metrics = (
                [failed["metric"]] if failed and gate == gate_of(config, failed["metric"]) else []
            )
            out.append({"at": at, "gate": gate, "phase": phase, "failed": failed_metrics, "message": message})
    return out


def primary_revision(cluster) -> str | None:
    """The revision the primary serves: its server's CANARY_REVISION (none before the first new one)."""
    primary = get(cluster, "deployment", f"{TARGET}-primary", NAMESPACE)
    (server,) = [c for c in primary["spec"]["template"]["spec"]["containers"] if c["name"] == "sglang"]
    return next((e["value"] for e in server.get("env", []) if e["name"] == "CANARY_REVISION"), None)


@pytest.mark.timeout(6 * 3600)  # about 23 ticks of 590 s (docs/helm.md)
def test_flagger_promotes_a_good_candidate_and_rolls_back_slow_leaking_and_unmeasured_ones(plane, tmp_path):
    release, log = plane
    cluster = release.cluster
    apply(cluster, *exported_gates(tmp_path, "flagger", release.prometheus.url, NAMESPACE, RATE))
    (block,) = exported_gates(tmp_path, "flagger-analysis", release.prometheus.url, NAMESPACE, RATE)
    apply(cluster, flagger_canary(TARGET, NAMESPACE, "canary-gateway", block["analysis"], targetPort=30000))
    interval_s = duration_seconds(block["analysis"]["interval"])
    window_s = duration_seconds(block["analysis"]["metrics"][0]["interval"])  # every check's query window
    order = [m["name"] for m in block["analysis"]["metrics"]]
    config = load_gate_file(gate_file_for_served_pods(tmp_path), profile="kubernetes")
    dialect = flagger_dialect(config)
    pods = {a: text.replace("{{ target }}", TARGET) for a, text in dialect.variables["pod_regex"].items()}
    arms = Arms(
        NAMESPACE, {a: text.replace("{{ target }}", TARGET) for a, text in dialect.arm.items()}, {}, pods
    )
    wait_for(  # Flagger acts once per interval: the primary is created at one tick, found ready at the next
        "the Canary initialized (primary serving)",
        lambda: get(cluster, "canary", TARGET, NAMESPACE).get("status", {}).get("phase") == "Initialized",
        2 * interval_s + 120,
        describe=lambda: log_tail(log),
    )
    load = release.start_load("load", RATE)
    results: dict[str, dict[str, Any]] = {}
    try:
        for scenario, revision, args in chosen_scenarios():
            since, before = time.time(), primary_revision(cluster)
            new_revision(cluster, NAMESPACE, TARGET, revision, args)
            if scenario == "vanished":
                wait_for(
                    "Flagger's 10% step",
                    lambda: (
                        get(cluster, "canary", TARGET, NAMESPACE).get("status", {}).get("canaryWeight") == 10
                    ),
                    2 * interval_s + 120,
                    describe=lambda: log_tail(log),
                )
                release.prometheus.stop()
            outcome = follow(cluster, log, timeout_s=8 * interval_s + 300)
            rows = agreement(
                config, release.prometheus.url, window_s, analyses(log, config, order, since), lambda _: arms
            )
            results[scenario] = outcome | {
                "revision": revision,
                "primary_before": before,
                # the failed checks themselves: the Canary's count is reset by the rollback
                "failed_checks": len({r["at"] for r in rows if r["phase"] != "Successful"}),
                "failed_metrics": sorted({m for r in rows for m in r["failed"]}),
                "primary_revision": primary_revision(cluster),
                "agreement": rows,
            }
            print(
                f"{scenario} candidate: {outcome['decision']} in {outcome['seconds']} s, weights "
                f"{outcome['weights']}, {results[scenario]['failed_checks']} failed checks "
                f"{results[scenario]['failed_metrics']}"
            )
            for r in rows:
                print(
                    f"  {r['at']:.0f} {r['gate']:18} Flagger {r['phase']:12} ours {r['ours']:12} {r['our_reason'][:110]}"
                )
    finally:
        terminate(ProcessRef.from_dict(load["process"]), timeout_s=30.0)
    (tmp_path / "flagger-traffic.json").write_text(json.dumps(results, indent=2, default=str))

    if "good" in results:
        good = results["good"]
        assert good["decision"] == "Succeeded" and good["weights"][:2] == [10, 50], (good, log_tail(log))
        assert good["primary_revision"] == good["revision"]  # promoted: the primary runs it
        assert good["agreement"] and {r["phase"] for r in good["agreement"]} == {"Successful"}, good[
            "agreement"
        ]
    for scenario, metric in (("slow", "latency-"), ("leaking", "memory-leak-")):
        if scenario not in results:
            continue
        outcome = results[scenario]
        assert outcome["decision"] == "Failed", (scenario, outcome, log_tail(log))
        assert any(m.startswith(metric) for m in outcome["failed_metrics"]), (
            scenario,
            outcome["failed_metrics"],
        )
        assert outcome["primary_revision"] == outcome["primary_before"]  # rolled back: the last promoted
        # caught at the first step: the leak check once read the traffic-free minutes before it
        assert outcome["weights"] == [10], (scenario, outcome["weights"])
    # no answer is no pass: every query failed, each a failed check, and the threshold rolled back
    if "vanished" in results:
        vanished = results["vanished"]
        assert vanished["decision"] == "Failed", (vanished, log_tail(log))
        assert vanished["primary_revision"] == vanished["primary_before"]
        assert vanished["agreement"] and {r["phase"] for r in vanished["agreement"]} == {"Error"}, vanished[
            "agreement"
        ]
    for scenario in results.values():
        assert not contradictions(scenario["agreement"]), contradictions(scenario["agreement"])

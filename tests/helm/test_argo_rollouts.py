"""The real Argo Rollouts controller runs `python -m gates export --format argo`'s step template.

Four Rollouts (basic canary on kwok pods, one namespace each) step to 50%, pause, and run the exported
AnalysisTemplate against a real Prometheus holding each scenario's series for the Rollout's own pods,
selected by pod-template hash (`podTemplateHashValue: Stable | Latest`): an A/A canary completes; a P99
regression and a memory leak abort the Rollout (Degraded) naming the metric; a namespace without series
leaves the AnalysisRun Inconclusive and the Rollout paused; the same P99 regression with the latency
gates marked `dry_run` is measured as Failed but completes; with Prometheus behind a token gateway, the
templates exported with a Secret and a tenant header complete, and with the Secret's token wrong every
measurement errs and the Rollout aborts. Every metric's phase matches what our evaluator says on the
window that measurement covered.
"""

from __future__ import annotations

import calendar
import time
from typing import Any

import pytest
import yaml
from controllers import (
    ARGO_ANALYSIS_ARGS,
    ARGO_PHASE,
    ARGO_WORST,
    AUTH_OPTIONS,
    AUTH_TOKEN,
    CONTAINER,
    Arms,
    apply,
    argo_rollouts,
    auth_secret,
    gate_of,
    get,
    get_all,
    judge_like_export,
    log_tail,
    new_candidate,
    scenario_prometheus,
    token_gateway,
    wait_for,
)
from helm_chart_render import ROOT

from gates.__main__ import main as gates_main
from gates.config import ARMS, load_gate_file
from testkit.synthetic_arms import MIB, ArmBehaviour, MemoryModel

pytestmark = pytest.mark.k8s

ROLLOUT = "sglang"
TEMPLATE = "canary-gates"
WINDOW, WINDOW_S = "10m", 600.0  # the leak gate: a 60 s warm-up, 20 points at 10 s and two collection cycles
SCENARIOS = {
    "argo-aa": ArmBehaviour(rps=20.0),
    "argo-p99": ArmBehaviour(rps=20.0, p99_factor=1.6),
    "argo-p99-dry-run": ArmBehaviour(rps=20.0, p99_factor=1.6),
    "argo-leak": ArmBehaviour(rps=20.0, memory=MemoryModel(leak_bytes_per_s=8 * MIB / 60)),
    "argo-nodata": None,  # no series at all
    "argo-leak-background": ArmBehaviour(rps=20.0, memory=MemoryModel(leak_bytes_per_s=8 * MIB / 60)),
    "argo-auth": ArmBehaviour(rps=20.0),  # Prometheus behind a token gateway, the Secret's token right
    "argo-auth-refused": ArmBehaviour(rps=20.0),  # ... and wrong
}
AUTH = {
    "argo-auth": AUTH_TOKEN,
    "argo-auth-refused": "not-the-token",
}  # the token each namespace's Secret holds
BACKGROUND = {"argo-leak-background"}  # strategy.canary.analysis with the background template
DRY_RUN = {"argo-p99-dry-run"}  # exported from a gate file whose latency gates are dry-run


def rollout(namespace: str) -> dict[str, Any]:
    # the test reads the pods and starts Prometheus at the first pause
    canary: dict[str, Any] = {"steps": [{"setWeight": 50}, {"pause": {}}]}
    if namespace in BACKGROUND:  # from step 2 on, while the canary holds at 50%
        canary["steps"].append({"pause": {}})
        canary["analysis"] = {
            "templates": [{"templateName": f"{TEMPLATE}-background"}],
            "startingStep": 2,
            "args": ARGO_ANALYSIS_ARGS,
        }
    else:
        canary["steps"] += [
            {"analysis": {"templates": [{"templateName": TEMPLATE}], "args": ARGO_ANALYSIS_ARGS}},
            {"setWeight": 100},
        ]
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": ROLLOUT, "namespace": namespace},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": ROLLOUT}},
            "template": {"metadata": {"labels": {"app": ROLLOUT}}, "spec": {"containers": [CONTAINER]}},
            "strategy": {"canary": canary},
        },
    }


def exported_templates(tmp_path, namespace: str, prometheus: str) -> list[dict[str, Any]]:
    """Both exported AnalysisTemplates (step and background), in the scenario's namespace."""
    out = tmp_path / f"argo-{namespace}.yaml"
    argv = ["export", "--format", "argo", "--profile", "kubernetes", "--prometheus-address", prometheus]
    argv += ["--window", WINDOW, "--interval", "5s", "--initial-delay", "1s", "-o", str(out)]
    if namespace in AUTH:
        argv += AUTH_OPTIONS
    if namespace in DRY_RUN:
        document = yaml.safe_load((ROOT / "gates" / "defaults.yaml").read_text())
        for gate in document["gates"]:
            gate["dry_run"] = gate["kind"] == "latency_quantile"
        gate_file = tmp_path / f"gates-{namespace}.yaml"
        gate_file.write_text(yaml.safe_dump(document))
        argv += ["--gate-file", str(gate_file)]
    assert gates_main(argv) == 0
    templates = list(yaml.safe_load_all(out.read_text()))
    assert [t["metadata"]["name"] for t in templates] == [TEMPLATE, f"{TEMPLATE}-background"]
    return [t | {"metadata": t["metadata"] | {"namespace": namespace}} for t in templates]


def paused_canary(cluster, namespace: str) -> Arms:
    """Wait for the canary to pause at 50%; its arms by pod-template hash and a pod of each."""

    def paused():
        status = get(cluster, "rollout", ROLLOUT, namespace).get("status", {})
        return status if status.get("currentStepIndex") == 1 and status.get("pauseConditions") else None

    status = wait_for(f"{namespace}: the canary paused at 50%", paused, 120)
    label = {"baseline": status["stableRS"], "canary": status["currentPodHash"]}
    assert label["baseline"] != label["canary"]
    pods = {}
    for arm, pod_hash in label.items():
        items = wait_for(
            f"{namespace}: {arm} pods",
            lambda h=pod_hash: get_all(cluster, "pods", namespace, "-l", f"rollouts-pod-template-hash={h}"),
            60,
        )
        pods[arm] = items[0]["metadata"]["name"]
    return Arms(namespace, label, pods, {a: f".*-{label[a]}-.*" for a in ARMS})


@pytest.fixture(scope="module")
def outcome(cluster, tmp_path_factory):
    """Every scenario run to its end by the real controller: namespace -> (Rollout, AnalysisRun, arms, Prometheus URL)."""
    workdir = tmp_path_factory.mktemp("argo")
    with argo_rollouts(cluster, workdir) as log:
        arms: dict[str, Arms] = {}
        for namespace in SCENARIOS:
            cluster.create_namespace(namespace)
            if namespace in AUTH:
                apply(cluster, auth_secret(namespace, AUTH[namespace]))
            apply(cluster, *exported_templates(workdir, namespace, "http://127.0.0.1:9"), rollout(namespace))
            wait_for(
                f"{namespace}: revision 1 healthy",
                lambda ns=namespace: (
                    get(cluster, "rollout", ROLLOUT, ns).get("status", {}).get("phase") == "Healthy"
                ),
                120,
            )
            new_candidate(cluster, "rollout", ROLLOUT, namespace)
        for namespace in SCENARIOS:
            arms[namespace] = paused_canary(cluster, namespace)
        with_data = {ns: (arms[ns], b) for ns, b in SCENARIOS.items() if b is not None}
        with (
            scenario_prometheus(
                with_data, workdir / "tsdb", seed=4100, past_s=WINDOW_S + 600, future_s=600
            ) as prometheus,
            token_gateway(prometheus.url) as gateway,
        ):
            for namespace in SCENARIOS:
                address = gateway.url if namespace in AUTH else prometheus.url
                apply(cluster, *exported_templates(workdir, namespace, address))
                cluster.kubectl(
                    "-n",
                    namespace,
                    "patch",
                    "rollout",
                    ROLLOUT,
                    "--subresource=status",
                    "--type=merge",
                    "-p",
                    '{"status":{"pauseConditions":null}}',
                )  # what `kubectl argo rollouts promote` does at a pause step
            results = {}
            for namespace in SCENARIOS:
                run = wait_for(
                    f"{namespace}: the AnalysisRun completed",
                    lambda ns=namespace: next(
                        (
                            r
                            for r in get_all(cluster, "analysisruns", ns)
                            if r.get("status", {}).get("phase")
                            in ("Successful", "Failed", "Inconclusive", "Error")
                        ),
                        None,
                    ),
                    180,
                )
                results[namespace] = run
            final = {
                ns: wait_for(
                    f"{ns}: the Rollout reacted to a {run['status']['phase']} analysis",
                    lambda ns=ns, run=run: reacted(get(cluster, "rollout", ROLLOUT, ns), run, arms[ns]),
                    120,
                    describe=lambda ns=ns: (
                        get(cluster, "rollout", ROLLOUT, ns)["status"],
                        log_tail(log, 15),
                    ),
                )
                for ns, run in results.items()
            }
            yield {ns: (final[ns], results[ns], arms[ns], prometheus.url) for ns in SCENARIOS}, log, gateway


def reacted(ro: dict[str, Any], run: dict[str, Any], arms: Arms) -> dict[str, Any] | None:
    """The Rollout once it has acted on the AnalysisRun's outcome: promoted, aborted or paused."""
    status = ro.get("status", {})
    done = {
        "Successful": status.get("phase") == "Healthy" and status.get("stableRS") == arms.label["canary"],
        "Failed": bool(status.get("abort")) and status.get("phase") == "Degraded",
        "Error": bool(status.get("abort")) and status.get("phase") == "Degraded",
        "Inconclusive": any(
            c.get("reason") == "InconclusiveAnalysisRun" for c in status.get("pauseConditions") or []
        ),
    }.get(run["status"]["phase"], True)
    return ro if done else None


def metric_phases(run: dict[str, Any]) -> dict[str, str]:
    return {m["name"]: m["phase"] for m in run["status"].get("metricResults", [])}


def test_aa_canary_completes(outcome):
    scenarios, log, _ = outcome
    ro, run, arms, _ = scenarios["argo-aa"]
    assert run["status"]["phase"] == "Successful", (run["status"], log_tail(log))
    assert ro["status"]["phase"] == "Healthy" and ro["status"]["stableRS"] == arms.label["canary"]
    assert set(metric_phases(run).values()) == {"Successful"}


@pytest.mark.parametrize(
    ("namespace", "failing"),
    [("argo-p99", "latency-e2e-p99-ratio"), ("argo-leak", "memory-leak-slope-vs-baseline")],
)
def test_regression_aborts_naming_the_metric(outcome, namespace, failing):
    scenarios, log, _ = outcome
    ro, run, arms, _ = scenarios[namespace]
    assert run["status"]["phase"] == "Failed", (run["status"], log_tail(log))
    phases = metric_phases(run)
    assert phases[failing] == "Failed"
    # hysteresis: the gate file's two consecutive failures, then Failed
    measured = next(m for m in run["status"]["metricResults"] if m["name"] == failing)
    assert [m["phase"] for m in measured["measurements"]] == ["Failed", "Failed"]
    status = ro["status"]
    assert status["abort"] and status["phase"] == "Degraded"
    assert any(name in status["message"] for name, phase in phases.items() if phase == "Failed"), status[
        "message"
    ]
    assert status["stableRS"] == arms.label["baseline"]  # the baseline still serves


def test_dry_run_metrics_are_measured_failing_but_the_canary_completes(outcome):
    scenarios, log, _ = outcome
    ro, run, arms, _ = scenarios["argo-p99-dry-run"]
    assert run["status"]["phase"] == "Successful", (run["status"], log_tail(log))
    results = {m["name"]: m for m in run["status"]["metricResults"]}
    ratio = results["latency-e2e-p99-ratio"]  # what aborts the same regression without dry-run
    assert ratio["phase"] == "Failed" and ratio.get("dryRun") is True, ratio
    assert run["status"]["dryRunSummary"]["failed"] >= 1, run["status"].get("dryRunSummary")
    deciding = {n: m["phase"] for n, m in results.items() if not m.get("dryRun")}
    assert deciding and set(deciding.values()) == {"Successful"}, deciding
    assert ro["status"]["phase"] == "Healthy" and ro["status"]["stableRS"] == arms.label["canary"]


def test_no_data_is_inconclusive_and_pauses(outcome):
    scenarios, log, _ = outcome
    ro, run, _, _ = scenarios["argo-nodata"]
    assert run["status"]["phase"] == "Inconclusive", (run["status"], log_tail(log))
    assert set(metric_phases(run).values()) == {"Inconclusive"}
    status = ro["status"]
    assert not status.get("abort") and status["phase"] == "Paused"
    assert any(c["reason"] == "InconclusiveAnalysisRun" for c in status["pauseConditions"])


def test_background_analysis_aborts_on_the_leak(outcome):
    """The background template: measured every interval while the canary holds at 50%; the leak's two
    failed measurements fail the run and abort the Rollout."""
    scenarios, log, _ = outcome
    ro, run, arms, _ = scenarios["argo-leak-background"]
    assert run["status"]["phase"] == "Failed", (run["status"], log_tail(log))
    leak = next(m for m in run["status"]["metricResults"] if m["name"] == "memory-leak-slope-vs-baseline")
    assert leak["phase"] == "Failed" and leak["failed"] == 2, leak
    status = ro["status"]
    assert status["abort"] and status["phase"] == "Degraded" and status["stableRS"] == arms.label["baseline"]


def test_prometheus_behind_a_token_gateway_is_read_with_the_exported_secret_and_header(outcome):
    scenarios, log, gateway = outcome
    ro, run, arms, _ = scenarios["argo-auth"]
    assert run["status"]["phase"] == "Successful", (run["status"], log_tail(log))
    assert ro["status"]["phase"] == "Healthy" and ro["status"]["stableRS"] == arms.label["canary"]
    assert gateway.accepted >= len(run["status"]["metricResults"])  # every metric read through it
    # the wrong token: each measurement errs (401), four in a row end the run as Error, which aborts
    ro, run, arms, _ = scenarios["argo-auth-refused"]
    assert run["status"]["phase"] == "Error", (run["status"], log_tail(log))
    errors = [m for r in run["status"]["metricResults"] for m in r["measurements"] if m["phase"] == "Error"]
    assert errors and all("401" in m.get("message", "") for m in errors), errors[:2]
    assert gateway.refused >= len(errors)
    assert ro["status"]["abort"] and ro["status"]["stableRS"] == arms.label["baseline"]


@pytest.mark.parametrize(
    "namespace", [ns for ns in SCENARIOS if ns not in BACKGROUND | {"argo-auth-refused"}]
)
def test_metric_phases_match_our_evaluator(outcome, namespace):
    """Per gate: the worst phase of its metrics, each at its last measurement, equals our evaluator's verdict
    on the window that measurement covered (no hysteresis on our side: the controller's last measurement
    is the one that decided)."""
    scenarios, _, _ = outcome
    _, run, arms, prometheus_url = scenarios[namespace]
    config = load_gate_file(None, profile="kubernetes")
    compared = 0
    for gate in config.gates:
        mine = [m for m in run["status"]["metricResults"] if gate_of(config, m["name"]) == gate.name]
        if not mine:
            continue
        at = max(
            calendar.timegm(time.strptime(m["measurements"][-1]["startedAt"], "%Y-%m-%dT%H:%M:%SZ"))
            for m in mine
        )
        ours = judge_like_export(config, prometheus_url, arms, float(at), WINDOW_S).gate(gate.name)
        theirs = max((m["phase"] for m in mine), key=ARGO_WORST.index)
        assert ARGO_PHASE[ours.raw_verdict.value] == theirs, (
            gate.name,
            ours.reason,
            [(m["name"], m["measurements"]) for m in mine],
        )
        compared += 1
    assert compared == len(config.gates) - 1  # every gate but throughput

"""`python -m rollout ci-gate` in cluster mode on the real control plane: as the chart's orchestrator
ServiceAccount (its real token) it splits the release's HTTPRoute 50/50, evaluates the `kubernetes` gates
once on a real Prometheus holding backfilled per-arm series named as the cluster exports them, writes
the report, and leaves the route at 100% baseline whatever the outcome (pass, fail, SIGTERM).
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest
from cluster_series import (
    RouteWatcher,
    rollout_args,
    rollout_fixtures,
    route_weights,
    run_to_end,
    wait_for_route,
)
from cluster_series import service_account_env as cluster_job_env
from helm_chart_render import ROOT

from testkit.processes import stop
from testkit.synthetic_arms import ArmBehaviour

pytestmark = pytest.mark.k8s

CANDIDATES = {
    "cigate-pass": ArmBehaviour(rps=80.0),
    "cigate-fail": ArmBehaviour(rps=80.0, cpu_utilisation=0.95),  # over the CPU gate's 0.60 of the limit
}
# A 10 s window at 80 req/s per arm: ~800 samples per arm, over the latency gates' 300.
SHORT = ("--warmup", "2", "--duration", "10", "--settle", "1")

releases, prometheus, gate_file = rollout_fixtures(CANDIDATES, seed=4000)


def service_account_env(cluster, namespace: str, tmp_path: Path) -> dict[str, str]:
    """What a CI job has: the chart's orchestrator token in KUBECONFIG, and a job summary file."""
    env = cluster_job_env(cluster, namespace, tmp_path)
    return env | {"GITHUB_STEP_SUMMARY": str(tmp_path / "step-summary.md")}


def run_gate(cluster, namespace: str, prometheus, gate_file: Path, tmp_path: Path):
    env = service_account_env(cluster, namespace, tmp_path)
    cmd = rollout_args("ci-gate", namespace, prometheus.url, gate_file, tmp_path / "reports", *SHORT)
    with RouteWatcher(cluster, namespace) as watcher:
        proc = run_to_end(cmd, env, timeout_s=150)
    run_dir = next((tmp_path / "reports").iterdir())
    return proc, watcher.seen, run_dir, Path(env["GITHUB_STEP_SUMMARY"])


def test_passing_candidate_exits_0_and_the_route_ends_at_baseline(cluster, prometheus, gate_file, tmp_path):
    namespace = "cigate-pass"
    assert route_weights(cluster, namespace) == (100, 0)
    proc, seen, run_dir, step_summary = run_gate(cluster, namespace, prometheus, gate_file, tmp_path)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert (50, 50) in seen, seen
    assert route_weights(cluster, namespace) == (100, 0)
    decision = json.loads((run_dir / "decision.json").read_text())
    assert decision["verdict"] == "pass" and decision["exit_code"] == 0, decision["reason"]
    assert decision["route_restored"] is True
    assert decision["window"]["seconds"] == 10.0
    # The release's namespace and pod regexes: the pod-based CPU gate had this release's data and passed.
    assert decision["gate_variables"]["namespace"] == namespace
    verdicts = {g["name"]: g["verdict"] for g in decision["evaluation"]["gates"]}
    assert verdicts["cpu_utilisation"] == "pass", verdicts
    assert "**PASS**" in (run_dir / "summary.md").read_text()
    assert "**PASS**" in step_summary.read_text()
    junit = (run_dir / "junit.xml").read_text()
    assert 'failures="0"' in junit and "cpu_utilisation" in junit


def test_failing_candidate_exits_1_names_the_gate_and_the_route_ends_at_baseline(
    cluster, prometheus, gate_file, tmp_path
):
    namespace = "cigate-fail"
    proc, seen, run_dir, step_summary = run_gate(cluster, namespace, prometheus, gate_file, tmp_path)
    assert proc.returncode == 1, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert (50, 50) in seen, seen
    assert route_weights(cluster, namespace) == (100, 0)
    decision = json.loads((run_dir / "decision.json").read_text())
    assert decision["verdict"] == "fail" and "cpu_utilisation" in decision["failed_gates"], decision
    summary = (run_dir / "summary.md").read_text()
    assert "**FAIL**" in summary and "Failed gate(s): cpu_utilisation" in summary, summary
    assert summary == step_summary.read_text()


def test_sigterm_mid_run_restores_the_route_and_exits_2(cluster, prometheus, gate_file, tmp_path):
    namespace = "cigate-pass"
    env = service_account_env(cluster, namespace, tmp_path)
    cmd = rollout_args(
        "ci-gate", namespace, prometheus.url, gate_file, tmp_path / "reports", "--warmup", "120"
    )
    proc = subprocess.Popen(
        cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        wait_for_route(cluster, namespace, (50, 50), proc)
        proc.send_signal(signal.SIGTERM)  # a cancelled CI job
        output = proc.communicate(timeout=60)[0]
    finally:
        stop(proc, grace_s=0)
    print(output[-3000:])
    assert proc.returncode == 2, output[-3000:]
    assert route_weights(cluster, namespace) == (100, 0)
    decision = json.loads(next((tmp_path / "reports").glob("*/decision.json")).read_text())
    assert decision["verdict"] == "inconclusive" and "KeyboardInterrupt" in decision["reason"], decision
    assert decision["route_restored"] is True

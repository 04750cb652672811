"""`python -m rollout ci-gate` in cluster mode on the real control plane: as the chart's orchestrator
ServiceAccount (its real token) it splits the release's HTTPRoute 50/50, evaluates the `kubernetes` gates
once on a real Prometheus holding backfilled per-arm series named as the cluster exports them, writes
the report, and leaves the route at 100% baseline whatever the outcome (pass, fail, SIGTERM).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cluster_series import (
    RouteWatcher,
    backfilled_prometheus,
    gate_file_without_memory_leak,
    installed_releases,
    route_weights,
)
from cluster_series import service_account_env as cluster_job_env
from helm_chart_render import CHART, RELEASE, ROOT
from helm_chart_render import helm_on as helm

from testkit.synthetic_arms import ArmBehaviour

pytestmark = pytest.mark.k8s

CANDIDATES = {
    "cigate-pass": ArmBehaviour(rps=80.0),
    "cigate-fail": ArmBehaviour(rps=80.0, cpu_utilisation=0.95),  # over the CPU gate's 0.60 of the limit
}
SCRAPE_S = 1.0
PAST_S, FUTURE_S = 30.0, 300.0  # backfilled span around the fixture's start; every run ends inside it
# A 10 s window at 80 req/s per arm: ~800 samples per arm, over the latency gates' 300.
SHORT = ("--warmup", "2", "--duration", "10", "--settle", "1")


@pytest.fixture(scope="module")
def releases(cluster):
    with installed_releases(cluster, helm, CHART, CANDIDATES) as pods:
        yield pods


@pytest.fixture(scope="module")
def prometheus(releases, tmp_path_factory):
    with backfilled_prometheus(releases, CANDIDATES, tmp_path_factory.mktemp("tsdb"), seed=4000) as server:
        yield server


@pytest.fixture(scope="module")
def gate_file(tmp_path_factory) -> Path:
    return gate_file_without_memory_leak(tmp_path_factory.mktemp("gates"))


def service_account_env(cluster, namespace: str, tmp_path: Path) -> dict[str, str]:
    """What a CI job has: the chart's orchestrator token in KUBECONFIG, and a job summary file."""
    env = cluster_job_env(cluster, namespace, tmp_path)
    return env | {"GITHUB_STEP_SUMMARY": str(tmp_path / "step-summary.md")}


def ci_gate_args(
    namespace: str, prometheus_url: str, gate_file: Path, reports: Path, *extra: str
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "rollout",
        "ci-gate",
        "--kube-namespace",
        namespace,
        "--release",
        RELEASE,
        "--prometheus-url",
        prometheus_url,
        "--gate-file",
        str(gate_file),
        "--reports-dir",
        str(reports),
        *extra,
    ]


def run_gate(cluster, namespace: str, prometheus, gate_file: Path, tmp_path: Path):
    env = service_account_env(cluster, namespace, tmp_path)
    cmd = ci_gate_args(namespace, prometheus.url, gate_file, tmp_path / "reports", *SHORT)
    with RouteWatcher(cluster, namespace) as watcher:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=150, cwd=ROOT)
    print(proc.stdout[-4000:], proc.stderr[-4000:])
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
    cmd = ci_gate_args(namespace, prometheus.url, gate_file, tmp_path / "reports", "--warmup", "120")
    proc = subprocess.Popen(
        cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while route_weights(cluster, namespace) != (50, 50):
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "ci-gate never set 50/50"
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)  # a cancelled CI job
        output = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    print(output[-3000:])
    assert proc.returncode == 2, output[-3000:]
    assert route_weights(cluster, namespace) == (100, 0)
    decision = json.loads(next((tmp_path / "reports").glob("*/decision.json")).read_text())
    assert decision["verdict"] == "inconclusive" and "KeyboardInterrupt" in decision["reason"], decision
    assert decision["route_restored"] is True

"""The orchestrator end to end on the real control plane: `python -m rollout run` as the chart's
ServiceAccount (its real token), moving the release's HTTPRoute weights, keeping state in the chart's
ConfigMap and scaling the canary, with gate verdicts from a real Prometheus holding backfilled per-arm
series named as the cluster exports them. The series cover the rollout's future window (Prometheus
serves a sample once wall time reaches its timestamp), so the orchestrator runs on wall-clock time with
a short plan given through the same options users have.
"""

from __future__ import annotations

import json
import math
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import pytest
from cluster_series import (
    FULL,
    RouteWatcher,
    release_target,
    rollout_args,
    rollout_fixtures,
    route_weights,
    run_to_end,
    service_account_env,
    wait_for_route,
)
from helm_chart_render import RELEASE, ROOT

from rollout.plan import get_profile
from rollout.state import KEPT_PER_STEP
from testkit.processes import stop
from testkit.synthetic_arms import ArmBehaviour

pytestmark = pytest.mark.k8s

# One release per scenario, each in its own namespace; the gates select by namespace and pod regex.
CANARIES = {
    "rollout-pass": ArmBehaviour(rps=80.0),
    "rollout-fail": ArmBehaviour(rps=80.0, cpu_utilisation=0.95),  # over the CPU gate's 0.60 of the limit
    "rollout-kill": ArmBehaviour(rps=80.0),
    "rollout-race": ArmBehaviour(rps=80.0),
    "rollout-manual": ArmBehaviour(rps=80.0),
}
# Through the CLI's plan options: an evaluation every 3 s, 9 s per step (windows of 1, 4, 7 s; at 80 req/s
# per arm the last holds ~560 samples, over the latency gates' 300).
SHORT_PLAN = ("--profile", "quick", "--steps", "10,50,100", "--bake", "9,9,9", "--interval", "3")

releases, prometheus, gate_file = rollout_fixtures(CANARIES, seed=3000)


def replicas(cluster, namespace: str, arm: str) -> int:
    out = cluster.kubectl(
        "get", "deployment", f"{FULL}-{arm}", "-n", namespace, "-o", "jsonpath={.spec.replicas}"
    )
    return int(out.stdout)


def stored_state(cluster, namespace: str) -> dict[str, Any]:
    cm = json.loads(
        cluster.kubectl("get", "configmap", f"{FULL}-rollout-state", "-n", namespace, "-o", "json").stdout
    )
    return json.loads(cm["data"]["state.json"])


def test_passing_verdicts_take_the_route_10_50_100(cluster, prometheus, gate_file, tmp_path):
    namespace = "rollout-pass"
    env = service_account_env(cluster, namespace, tmp_path)
    with RouteWatcher(cluster, namespace) as watcher:
        proc = run_to_end(
            rollout_args("run", namespace, prometheus.url, gate_file, tmp_path / "reports", *SHORT_PLAN), env
        )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert route_weights(cluster, namespace) == (0, 100)
    assert watcher.canary_weights[-3:] == [10, 50, 100], watcher.seen
    state = stored_state(cluster, namespace)
    assert state["outcome"] == "promoted", state["reason"]
    # The whole state lives in one ConfigMap (1 MiB at most): the default profile's longest run (every
    # evaluation up to each step's maximum bake, a step keeping at most KEPT_PER_STEP, its latest in
    # full and the others superseded) must fit with room to spare.
    size = len(json.dumps(state))
    evaluations = state["evaluations"]
    latest = [
        e
        for i, e in enumerate(evaluations)
        if i + 1 == len(evaluations) or evaluations[i + 1]["step"] != e["step"]
    ]
    full = max(len(json.dumps(e)) for e in latest)
    superseded = max(len(json.dumps(e)) for e in evaluations if e not in latest)
    rest = size - sum(len(json.dumps(e)) for e in evaluations)
    default = get_profile("default")
    kept = [min(math.ceil(b / default.interval_s), KEPT_PER_STEP) for b in default.max_bake_s]
    longest = rest + sum(full + (k - 1) * superseded for k in kept)
    print(
        f"state {size} bytes; an evaluation {full} B in full, {superseded} B superseded; longest {longest} B"
    )
    assert longest < 512 * 1024, (full, superseded, kept)
    # The gates judged this release's pods: the pod-based CPU gate had data and passed at every step.
    final = [e for e in state["evaluations"] if e.get("verdict") == "pass"]
    assert {e["step"] for e in final} == {0, 1, 2}, [
        (e.get("step"), e.get("verdict")) for e in state["evaluations"]
    ]
    assert replicas(cluster, namespace, "canary") == 1
    decision = json.loads(next((tmp_path / "reports").glob("*/decision.json")).read_text())
    assert decision["outcome"] == "promoted"


def test_failing_verdict_reverts_to_baseline_and_scales_canary_down(cluster, prometheus, gate_file, tmp_path):
    namespace = "rollout-fail"
    env = service_account_env(cluster, namespace, tmp_path)
    with RouteWatcher(cluster, namespace) as watcher:
        proc = run_to_end(
            rollout_args("run", namespace, prometheus.url, gate_file, tmp_path / "reports", *SHORT_PLAN), env
        )
    assert proc.returncode == 1, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert route_weights(cluster, namespace) == (100, 0)
    assert 10 in watcher.canary_weights and 50 not in watcher.canary_weights, watcher.seen
    assert replicas(cluster, namespace, "canary") == 0
    state = stored_state(cluster, namespace)
    assert state["outcome"] == "reverted", state["reason"]
    # Reverted by the CPU gate failing on this release's pods (not by a run of inconclusive evaluations).
    last = state["evaluations"][-1]
    assert last["verdict"] == "fail" and last["gate_verdicts"]["cpu_utilisation"] == "fail", last[
        "gate_verdicts"
    ]
    assert "gate(s) cpu_utilisation failed at 10% canary" in state["reason"], state["reason"]


def test_rollback_after_sigkill_mid_step_restores_baseline(cluster, prometheus, gate_file, tmp_path):
    namespace = "rollout-kill"
    env = service_account_env(cluster, namespace, tmp_path)
    plan = ("--profile", "quick", "--steps", "10,50,100", "--bake", "120,9,9", "--interval", "3")
    cmd = rollout_args("run", namespace, prometheus.url, gate_file, tmp_path / "reports", *plan)
    proc = subprocess.Popen(
        cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        wait_for_route(cluster, namespace, (90, 10), proc)
        time.sleep(4)  # at least one evaluation recorded inside the step
    finally:
        proc.send_signal(signal.SIGKILL)
        output = proc.communicate(timeout=30)[0]
    print(output[-3000:])
    # Killed mid-step: traffic stays at the step's weights, the state says progressing, and status says
    # nobody steers any more (the holder's process is gone) and what to run.
    assert route_weights(cluster, namespace) == (90, 10)
    assert stored_state(cluster, namespace)["phase"] == "progressing"
    status = run_to_end(
        [sys.executable, "-m", "rollout", "status", "--kube-namespace", namespace, "--release", RELEASE], env
    )
    assert status.returncode == 0, status.stderr[-3000:]
    assert f"orchestrator: GONE ({socket.gethostname()} pid {proc.pid}" in status.stdout, status.stdout
    assert "make rollback" in status.stdout and "python -m rollout run" in status.stdout

    rollback = [
        sys.executable,
        "-m",
        "rollout",
        "rollback",
        "--kube-namespace",
        namespace,
        "--release",
        RELEASE,
    ]
    for attempt in range(2):  # the second changes nothing and is recorded
        done = run_to_end([*rollback, "--reason", f"orchestrator killed ({attempt})", "--who", "e2e"], env)
        assert done.returncode == 0, done.stderr[-3000:]
        assert route_weights(cluster, namespace) == (100, 0)
        assert replicas(cluster, namespace, "canary") == 0
    state = stored_state(cluster, namespace)
    assert state["phase"] == "aborted", state["phase"]
    rollbacks = [e for e in state["events"] if e["kind"] == "rollback"]
    assert [e.get("who") for e in rollbacks] == ["e2e", "e2e"], rollbacks
    assert rollbacks[0].get("reason") == "orchestrator killed (0)", rollbacks

    # The same token may not touch what the Role does not grant.
    kubeconfig = env["KUBECONFIG"]
    refused = cluster.kubectl(
        "--kubeconfig",
        kubeconfig,
        "-n",
        namespace,
        "scale",
        f"deployment/{FULL}-baseline",
        "--replicas",
        "0",
        check=False,
    )
    assert refused.returncode != 0 and "Forbidden" in refused.stderr, refused.stderr
    assert replicas(cluster, namespace, "baseline") == 1


def test_pause_resume_and_promote_by_hand_through_the_configmap(cluster, prometheus, gate_file, tmp_path):
    """The manual commands as the chart's ServiceAccount, against a running orchestrator: pause holds the
    step past its bake, resume lets it go on, promote moves the route to 100% canary and ends the run."""
    namespace = "rollout-manual"
    env = service_account_env(cluster, namespace, tmp_path)
    plan = ("--profile", "quick", "--steps", "10,50,100", "--bake", "9,120,9", "--interval", "3")
    cmd = rollout_args("run", namespace, prometheus.url, gate_file, tmp_path / "reports", *plan)
    proc = subprocess.Popen(
        cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    target = ("--kube-namespace", namespace, "--release", RELEASE, "--who", "e2e")

    def manual(command: str, *args: str) -> None:
        done = run_to_end([sys.executable, "-m", "rollout", command, *target, *args], env)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    try:
        wait_for_route(cluster, namespace, (90, 10), proc)
        manual("pause", "--reason", "hold at 10%")
        time.sleep(9 + 4 * 3)  # the whole 9 s bake and four intervals more, every evaluation passing
        held = stored_state(cluster, namespace)
        assert route_weights(cluster, namespace) == (90, 10) and held["step_index"] == 0, held["reason"]
        assert held["paused"]["who"] == "e2e"
        assert sum(e["step"] == 0 and e["at"] > held["paused"]["at"] for e in held["evaluations"]) >= 3
        manual("resume", "--reason", "go on")
        deadline = time.monotonic() + 30
        while route_weights(cluster, namespace) != (50, 50):
            assert proc.poll() is None and time.monotonic() < deadline, "resumed step never passed"
            time.sleep(0.3)
        manual("promote", "--reason", "ship it")
        assert route_weights(cluster, namespace) == (0, 100)  # at once, by the command itself
        assert proc.wait(timeout=30) == 0  # the orchestrator saw the promotion at its next interval
    finally:
        stop(proc, grace_s=0)
        print((proc.communicate(timeout=30)[0] or "")[-3000:])
    state = stored_state(cluster, namespace)
    assert (state["outcome"], state["decided_by"]) == ("promoted", "e2e"), state["reason"]
    kinds = [e["kind"] for e in state["events"] if e["kind"] in ("pause", "resume", "promote")]
    assert kinds == ["pause", "resume", "promote"]


def test_gate_variables_name_the_releases_pods(releases):
    # The regex the orchestrator passes matches this release's real pod names, one arm each.
    import re

    target = release_target("rollout-pass")
    by_arm, _ = releases["rollout-pass"]
    for arm, regex in target.gate_variables()["pod_regex"].items():
        other = "canary" if arm == "baseline" else "baseline"
        assert re.fullmatch(regex, by_arm[arm]) and not re.fullmatch(regex, by_arm[other]), (regex, by_arm)


ROUTE_VERIFY = """
import json, sys
from rollout.routers.base import Weights
from rollout.routers.httproute import HTTPRouteRouter

ns, full, action = sys.argv[1], sys.argv[2], sys.argv[3]
router = HTTPRouteRouter(namespace=ns, route=full, services={"baseline": full + "-baseline", "canary": full + "-canary"})
if action != "verify":
    router.set_weights(Weights(*json.loads(action)))
checks = {f"{b}/{c}": router.verify_weights(Weights(baseline=b, canary=c)).check.value for b, c in ((70, 30), (60, 40))}
print(json.dumps(checks))
"""


def route_verify(env: dict[str, str], namespace: str, action: str) -> dict[str, str]:
    proc = subprocess.run(
        [sys.executable, "-c", ROUTE_VERIFY, namespace, FULL, action],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_weights_verify_through_a_gateway_controllers_route_status(cluster, releases, tmp_path):
    # No gateway controller runs here; as one would, the admin writes Accepted at the route's generation.
    namespace = "rollout-pass"
    env = service_account_env(cluster, namespace, tmp_path)
    assert route_verify(env, namespace, "[70, 30]") == {"70/30": "unknown", "60/40": "differs"}
    route = json.loads(cluster.kubectl("get", "httproute", FULL, "-n", namespace, "-o", "json").stdout)
    accepted = {
        "type": "Accepted",
        "status": "True",
        "reason": "Accepted",
        "message": "",
        "observedGeneration": route["metadata"]["generation"],
        "lastTransitionTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    resolved = {**accepted, "type": "ResolvedRefs", "reason": "ResolvedRefs"}
    status = {
        "parents": [
            {
                "parentRef": {"name": "gw"},
                "controllerName": "example.com/gw",
                "conditions": [accepted, resolved],
            }
        ]
    }
    cluster.kubectl(
        "patch",
        "httproute",
        FULL,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )
    assert route_verify(env, namespace, "verify") == {"70/30": "matches", "60/40": "differs"}
    # A new weight is a new generation: not in effect until the controller reports on it.
    assert route_verify(env, namespace, "[60, 40]") == {"70/30": "differs", "60/40": "differs"}


def test_two_orchestrators_never_steer_at_once_and_a_dead_ones_rollout_is_taken_over(
    cluster, prometheus, gate_file, tmp_path
):
    """Lease semantics on the real API server: of two orchestrators started together exactly one steers;
    a third is refused while it lives; once it is SIGKILLed a new one resumes the same rollout."""
    namespace = "rollout-race"
    env = service_account_env(cluster, namespace, tmp_path)
    plan = ("--profile", "quick", "--steps", "10,50,100", "--bake", "300,9,9", "--interval", "3")
    cmd = rollout_args("run", namespace, prometheus.url, gate_file, tmp_path / "reports", *plan)

    def start() -> subprocess.Popen:
        return subprocess.Popen(
            cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    racers = [start(), start()]
    procs = list(racers)
    try:
        deadline = time.monotonic() + 60
        while sum(p.poll() is not None for p in racers) < 1 or route_weights(cluster, namespace) != (90, 10):
            assert time.monotonic() < deadline, "no single winner within 60 s"
            time.sleep(0.5)
        time.sleep(4)  # the winner renews its lease at least once
        losers = [p for p in racers if p.poll() is not None]
        winners = [p for p in racers if p.poll() is None]
        assert len(losers) == 1 and len(winners) == 1, [p.returncode for p in racers]
        lost = losers[0].communicate(timeout=10)[0]
        assert losers[0].returncode != 0 and ("steered by" in lost or "at the same moment" in lost), lost
        winner = winners[0]
        holder = stored_state(cluster, namespace)["holder"]
        assert holder["pid"] == winner.pid and holder["host"] == socket.gethostname()

        third = run_to_end(cmd, env, timeout_s=60)  # refused: the winner is alive and renewing
        assert third.returncode != 0 and f"steered by {socket.gethostname()} pid {winner.pid}" in third.stderr

        winner.send_signal(signal.SIGKILL)
        winner.communicate(timeout=30)
        assert route_weights(cluster, namespace) == (90, 10)  # held where it was
        run_id = stored_state(cluster, namespace)["run_id"]

        successor = start()
        procs.append(successor)
        deadline = time.monotonic() + 60
        while stored_state(cluster, namespace)["holder"]["pid"] != successor.pid:
            assert successor.poll() is None, successor.stdout.read() if successor.stdout else ""
            assert time.monotonic() < deadline, "the successor never took the rollout over"
            time.sleep(0.5)
        state = stored_state(cluster, namespace)
        assert state["run_id"] == run_id and state["phase"] == "progressing"  # the same rollout, resumed
        successor.send_signal(signal.SIGTERM)  # Ctrl-C of the successor rolls back as usual
        out = successor.communicate(timeout=60)[0]
        assert f"taking over from {socket.gethostname()} pid {winner.pid} (gone)" in out, out[-3000:]
        assert route_weights(cluster, namespace) == (100, 0)
        assert stored_state(cluster, namespace)["phase"] == "aborted"
    finally:
        for p in procs:
            stop(p, grace_s=0)

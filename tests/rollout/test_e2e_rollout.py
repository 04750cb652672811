"""Whole rollouts on this machine with the real parts: embedded backends (TP=2, real gloo), the local
router, a real Prometheus, Locust, and the real gate evaluator. Quick-profile-sized.

Each test runs `python -m rollout` as a user would, with its own state and reports directories, and
stops every process the rollout started, whatever happens.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from rollout.events import Rollback, WeightsSet
from rollout.local_stack import LocalStack
from rollout.plan import Phase, get_profile
from rollout.processes import ProcessRef, is_alive, terminate
from rollout.routers import router_from_description
from rollout.routers.base import Weights
from rollout.state import FileStateStore

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]
REPO = Path(__file__).resolve().parents[2]


class RolloutCli:
    def __init__(self, tmp_path: Path) -> None:
        self.state_dir = tmp_path / "state"
        self.reports_dir = tmp_path / "reports"
        self.log = tmp_path / "rollout.log"
        self.env = {
            **os.environ,
            "ROLLOUT_STATE_DIR": str(self.state_dir),
            "ROLLOUT_REPORTS_DIR": str(self.reports_dir),
            "PYTHONUNBUFFERED": "1",
        }
        self.procs: list[subprocess.Popen] = []

    def start(self, *args: str) -> subprocess.Popen:
        handle = open(self.log, "ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "rollout", "run", *args],
            cwd=REPO,
            env=self.env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        return proc

    def run(self, *args: str, timeout: float = 360) -> int:
        proc = self.start(*args)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)  # rolls back and tears down
            proc.wait(timeout=60)
            raise AssertionError(f"rollout did not finish in {timeout}s:\n{self.output()}") from None

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "rollout", *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:] if self.log.exists() else ""

    def state(self):
        return FileStateStore(self.state_dir).load()

    def decision(self) -> dict:
        return json.loads((self.reports_dir / "latest" / "decision.json").read_text())

    def wait_for(self, predicate, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                state = self.state()
            except ValueError:
                state = None  # mid-write by another process; read again
            if state is not None and predicate(state):
                return state
            if all(p.poll() is not None for p in self.procs):
                raise AssertionError(f"rollout exited before {what}:\n{self.output()}")
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what}:\n{self.output()}")

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        try:
            state = self.state()
        except ValueError:
            state = None
        if state is None or state.stack.get("kind") != "local":
            return
        stack = LocalStack.from_dict(state.stack)
        stack.stop(("loadtest", "canary", "prometheus", "baseline"), say=lambda _: None)
        process = state.router.get("process")
        if process:
            terminate(ProcessRef.from_dict(process))


@pytest.fixture
def rollout(tmp_path):
    cli = RolloutCli(tmp_path)
    try:
        yield cli
    finally:
        cli.cleanup()


def _gate_names(decision: dict, verdict: str) -> set[str]:
    return {
        name
        for step in decision["steps"]
        for ev in step["evaluations"]
        for name, v in ev["gate_verdicts"].items()
        if v == verdict
    }


def _verdicts(decision: dict) -> str:
    """Every evaluation's gate verdicts and reasons, for assertion messages."""
    lines = [f"outcome {decision['outcome']}: {decision['reason']}"]
    for step in decision["steps"]:
        for ev in step["evaluations"]:
            lines.append(f"{step['canary_weight']}% +{ev['at'] - step['started_at']:.0f}s {ev['verdict']}")
            for gate in ev["evaluation"].get("gates", []):
                lines.append(
                    f"    {gate['name']}: {gate['raw_verdict']} -> {gate['verdict']}: {gate['reason'][:160]}"
                )
    return "\n".join(lines)


def _requests(cli: RolloutCli) -> list[dict]:
    state = cli.state()
    lines = Path(state.stack["loadtest"]["requests_jsonl"]).read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


# Both arms hold each request 200 ms before scheduling it (a sleep, no CPU): the quick profile's requests
# take ~50 ms, so at ~17 req/s a weight change found none in flight about 1 time in 3, and all three changes of
# a run none in about 1 run in 20 (seen: 0 straddling); at ~250 ms about 4 are in flight at each change.
HELD_ARMS = (
    "--baseline-args",
    "--fault-extra-latency-ms 200",
    "--canary-args",
    "--fault-extra-latency-ms 200",
)


def test_good_canary_promotes_through_all_steps_with_no_request_lost_to_a_weight_change(rollout):
    rc = rollout.run("--profile", "quick", *HELD_ARMS, timeout=900)
    decision = rollout.decision()
    assert rc == 0, rollout.output()
    assert decision["outcome"] == "promoted", _verdicts(decision)
    assert [s["canary_weight"] for s in decision["steps"]] == [25, 50, 100]
    assert all(s["result"] == "passed" for s in decision["steps"])
    for step in decision["steps"]:
        final = step["evaluations"][-1]
        assert final["verdict"] == "pass" and set(final["gate_verdicts"].values()) == {"pass"}
        # The P99 verdicts rested on >= 300 samples per arm that had traffic.
        latency = next(g for g in final["evaluation"]["gates"] if g["name"] == "latency_e2e_p99")
        assert latency["samples"]["canary"] >= 300
    # Each step passed once its gates had the evidence, before its maximum bake (no pause for a person).
    quick = get_profile("quick")
    for step, longest in zip(decision["steps"], quick.max_bake_s, strict=True):
        assert step["ended_at"] - step["started_at"] < longest, (step["canary_weight"], step["result"])
    report = rollout.reports_dir / "latest"
    assert (report / "summary.md").read_text().startswith(f"# Rollout {decision['run_id']}: **promoted**")
    assert "data:image/png;base64," in (report / "report.html").read_text()

    # Continuous load through every weight change, and not one failed request.
    records = _requests(rollout)
    failed = [r for r in records if not r["ok"] and r["error_kind"] != "cancelled"]
    assert failed == []
    changes = [e.at for e in rollout.state().events if isinstance(e, WeightsSet)]
    assert len(changes) == 3
    straddling = 0
    for at in changes:
        # Load kept arriving on both sides of every change...
        assert any(at - 1 < r["sent_at"] < at for r in records) and any(
            at < r["sent_at"] < at + 1 for r in records
        )
        # ...and requests in flight while the weights changed finished (all records are ok, above).
        straddling += sum(1 for r in records if r["sent_at"] < at < r["sent_at"] + r["e2e_ms"] / 1000)
    assert straddling >= 1
    arms = {r["arm"] for r in records}
    assert arms == {"baseline", "canary"}


def test_canary_retaining_memory_reverts_on_the_memory_leak_gate(rollout):
    rc = rollout.run("--profile", "quick", "--canary-args", "--fault-leak-kib-per-request 256", timeout=240)
    decision = rollout.decision()
    assert rc == 1, rollout.output()
    assert decision["outcome"] == "reverted"
    assert "memory_leak" in decision["failed_gates"], _verdicts(decision)
    assert "memory_leak" in decision["reason"]
    assert decision["steps"][0]["result"] == "reverted"


def test_per_rank_canary_over_its_cpu_budget_reverts_on_the_cpu_gate(rollout):
    rc = rollout.run(
        "--profile", "quick", "--canary-mode", "per_rank", "--canary-cpu-cores", "0.25", timeout=240
    )
    decision = rollout.decision()
    assert rc == 1, rollout.output()
    assert decision["outcome"] == "reverted"
    assert "cpu_utilisation" in decision["failed_gates"], _verdicts(decision)
    cpu = next(
        g
        for g in decision["steps"][-1]["evaluations"][-1]["evaluation"]["gates"]
        if g["name"] == "cpu_utilisation"
    )
    assert cpu["values"]["canary"] > 0.60


def test_prometheus_stopped_mid_run_is_inconclusive_pauses_and_never_promotes(rollout):
    proc = rollout.start(
        "--profile", "quick", "--bake", "30,20,20", "--max-bake", "40,20,20", "--interval", "5"
    )
    state = rollout.wait_for(
        lambda s: len(s.evaluations) >= 1 and s.stack.get("prometheus"),
        timeout=120,
        what="a first evaluation",
    )
    stopped_at = time.time()
    os.kill(state.stack["prometheus"]["process"]["pid"], signal.SIGKILL)
    paused = rollout.wait_for(lambda s: s.paused is not None, timeout=120, what="a pause for evidence")
    assert paused.paused["who"] == "rollout" and "maximum bake of 40s" in paused.paused["reason"]
    assert paused.step_index == 0 and not paused.phase.terminal
    # Paused, the orchestrator keeps holding the weights until a person decides.
    assert rollout.cli("rollback", "--reason", "no metrics", "--who", "tester").returncode == 0
    rc = proc.wait(timeout=120)
    decision = rollout.decision()
    assert rc != 0 and decision["outcome"] == "aborted", rollout.output()
    after = [e for s in decision["steps"] for e in s["evaluations"] if e["at"] > stopped_at + 1]
    assert after and all(e["verdict"] == "inconclusive" for e in after)
    assert not any(e["kind"] == "step-passed" for e in decision["events"])


def test_sigkill_mid_step_then_make_rollback_restores_all_traffic_to_baseline(rollout, tmp_path):
    marker = tmp_path / "rollback-hook"
    hooks = tmp_path / "hooks.yaml"
    hooks.write_text(
        json.dumps(
            {"hooks": [{"kind": "rollback", "command": ["sh", "-c", f'echo "$ROLLOUT_REASON" >> {marker}']}]}
        )
    )
    proc = rollout.start("--profile", "quick", "--hooks", str(hooks))
    state = rollout.wait_for(
        lambda s: s.step_started_at is not None and s.evaluations, timeout=120, what="step 1"
    )
    proc.kill()  # SIGKILL: no handler runs, the stack stays up at 75/25
    proc.wait(timeout=10)
    router = router_from_description(state.router)
    assert router.get_weights() == Weights(75, 25)
    status = rollout.cli("status")  # nobody steers any more, and status says so and what to run
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"orchestrator: GONE ({socket.gethostname()} pid {proc.pid}" in status.stdout, status.stdout
    assert "router (local): baseline 75% canary 25%" in status.stdout

    done = subprocess.run(
        ["make", "-s", "rollback", "REASON=on-call saw a regression"],
        cwd=REPO,
        env=rollout.env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert router.get_weights() == Weights(100, 0)
    url = state.stack["router_url"] + "/v1/models"
    for _ in range(10):
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.headers["x-canary-arm"] == "baseline"
    after = rollout.state()
    assert after.phase.value == "aborted" and after.reason == "on-call saw a regression"
    assert "@" in after.decided_by
    canary = ProcessRef.from_dict(state.stack["arms"]["canary"]["process"])
    assert not is_alive(canary)  # the canary is scaled down; the baseline keeps serving
    assert rollout.decision()["outcome"] == "aborted"
    assert marker.read_text().splitlines() == ["on-call saw a regression"]  # the run's rollback hook ran

    again = rollout.cli("rollback", "--reason", "again", "--who", "tester")
    assert again.returncode == 0, again.stdout + again.stderr
    rollbacks = [e for e in rollout.state().events if isinstance(e, Rollback)]
    assert [(e.who, e.changed) for e in rollbacks][-1] == ("tester", False)
    assert rollout.state().decided_by == after.decided_by
    assert marker.read_text().splitlines() == ["on-call saw a regression"]  # not again: nothing changed

    down = rollout.cli("down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert not is_alive(ProcessRef.from_dict(rollout.state().router["process"]))


def test_regression_injected_at_a_step_is_reverted_within_two_evaluation_intervals(rollout, tmp_path):
    hooks = tmp_path / "hooks.yaml"
    # Rehearsal: the first step's pre-step hook switches on a CPU-burn fault in the canary.
    inject = (
        "import os, urllib.request; urllib.request.urlopen(urllib.request.Request("
        "os.environ['ROLLOUT_CANARY_URL'] + '/rehearsal/faults', data=b'{\"cpu_burn_ms\": 100}', method='POST'))"
    )
    # YAML is a superset of JSON: the hooks file as data.
    hooks.write_text(
        json.dumps(
            {"hooks": [{"kind": "pre-step", "steps": [25], "command": [sys.executable, "-c", inject]}]}
        )
    )
    interval = 10.0
    rc = rollout.run(
        "--profile",
        "quick",
        "--interval",
        str(interval),
        "--canary-cpu-cores",
        "0.5",  # the burn alone (2 ranks x 100 ms x ~5 req/s) asks for twice that
        "--hooks",
        str(hooks),
        timeout=240,
    )
    decision = rollout.decision()
    assert rc == 1, rollout.output()
    hook = decision["hooks"][0]
    assert hook["ok"], hook
    assert "cpu_utilisation" in decision["failed_gates"], _verdicts(decision)
    step = decision["steps"][0]
    reverted_at = decision["rollbacks"][0]["at"]
    latency = reverted_at - step["started_at"]
    # Two evaluations (the gates need two failing ones in a row), plus the time one evaluation takes.
    assert latency <= 2 * interval + 5, f"reverted {latency:.1f}s after the step began\n{_verdicts(decision)}"


def test_rerun_after_sigkill_resumes_the_same_rollout_inside_its_step(rollout):
    first = rollout.start("--profile", "quick")
    before = rollout.wait_for(lambda s: len(s.evaluations) >= 2, timeout=120, what="two evaluations")
    first.kill()
    first.wait(timeout=10)
    second = rollout.start("--profile", "quick")
    resumed = rollout.wait_for(
        lambda s: len(s.evaluations) >= len(before.evaluations) + 2,
        timeout=60,
        what="evaluations after resuming",
    )
    assert "resuming rollout " + before.run_id in rollout.output()
    assert resumed.run_id == before.run_id
    assert resumed.step_index == before.step_index and resumed.step_started_at == before.step_started_at
    # The resumed evaluations still cover the whole step, from its original start.
    assert resumed.evaluations[-1].window[0] == before.evaluations[0].window[0]
    second.send_signal(signal.SIGINT)  # Ctrl-C: roll back, report, stop the stack
    assert second.wait(timeout=120) == 2, rollout.output()
    final = rollout.state()
    assert final.outcome is Phase.ABORTED and "interrupted" in final.reason
    assert not is_alive(ProcessRef.from_dict(final.stack["arms"]["canary"]["process"]))


def test_pause_resume_and_promote_by_hand_reach_a_running_orchestrator_within_an_interval(rollout):
    interval = 5.0
    proc = rollout.start("--profile", "quick", "--bake", "300,40,40", "--interval", str(interval))
    rollout.wait_for(lambda s: len(s.evaluations) >= 1, 150, "the first evaluation")

    asked = time.time()
    done = rollout.cli("pause", "--reason", "e2e: checking a dashboard", "--who", "alice")
    assert done.returncode == 0, done.stdout + done.stderr
    held = rollout.wait_for(
        lambda s: any(e.at > asked for e in s.evaluations), 3 * interval + 30, "an evaluation after the pause"
    )
    # the orchestrator's next interval saw it: said so, kept recording, stayed at its step
    assert "paused by alice at 25%" in rollout.output()
    assert held.step_index == 0 and held.paused["who"] == "alice"
    status = rollout.cli("status")
    assert "PAUSED by alice" in status.stdout and "e2e: checking a dashboard" in status.stdout, status.stdout

    done = rollout.cli("resume", "--reason", "e2e: fine", "--who", "alice")
    assert done.returncode == 0 and rollout.state().paused is None, done.stdout + done.stderr
    asked = time.time()
    done = rollout.cli("promote", "--reason", "e2e: ship it", "--who", "bob", "--force")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "traffic: 100% canary" in done.stdout
    assert proc.wait(timeout=3 * interval + 60) == 0, rollout.output()  # exit 0: promoted
    assert time.time() - asked < 3 * interval + 60
    decision = rollout.decision()
    assert decision["outcome"] == "promoted" and decision["decided_by"] == "bob", _verdicts(decision)
    assert decision["reason"].startswith("promoted by hand at 25%: e2e: ship it")
    kinds = [
        (e["kind"], e.get("who")) for e in decision["events"] if e["kind"] in ("pause", "resume", "promote")
    ]
    assert kinds == [("pause", "alice"), ("resume", "alice"), ("promote", "bob")]
    assert rollout.cli("pause", "--reason", "late").returncode == 1  # refused: nothing to pause

"""`canary-ci-gate` end to end on this machine: real backends, router, Prometheus, Locust.

The batched-broadcast candidate passes (exit 0) given a window its gates can decide in, an injected leak
fails (exit 1) naming the failing gate in the summary (and in the GitHub job summary file and the JUnit
XML), and a cancelled job has no verdict (exit 2).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
# 20 req/s at 50/50 for 40 s: ~400 requests per arm, over the latency gates' 300-sample P99 minimum; enough
# for a leak to fail, too little for every gate to pass (a healthy candidate is inconclusive there).
QUICK = ("--rate", "20", "--warmup", "10", "--duration", "40")
# Enough for the sharded candidate to pass: `canary-ci-gate --dry-run --rate 30 --duration 200` gives every
# gate 65 s at most for a candidate no slower than the baseline, and sharded is faster (P99 0.60x e2e, 0.86x
# TTFT measured over 40 s). The throughput gate decides last on it: over 40 s at 20 req/s its interval was
# 0.825-1.2, which at 200 s and 30 req/s excludes the 15% drop in all but about 1 window in 500.
PASSING = ("--rate", "30", "--warmup", "10", "--duration", "200")


def _ci_gate(tmp_path: Path, *args: str, load: tuple[str, ...] = QUICK) -> tuple[int, dict, Path, str]:
    reports = tmp_path / "reports"
    step_summary = tmp_path / "step-summary.md"
    env = {**os.environ, "GITHUB_STEP_SUMMARY": str(step_summary)}
    env.pop("GITHUB_OUTPUT", None)
    # Its own session, so a timeout can stop the command and its stack; run_ci_gate stops the stack itself.
    proc = subprocess.Popen(
        [sys.executable, "-m", "rollout", "ci-gate", *load, "--reports-dir", str(reports), *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    timeout_s = float(load[load.index("--warmup") + 1]) + float(load[load.index("--duration") + 1]) + 150
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 15)
        out, _ = proc.communicate(timeout=60)
        pytest.fail(f"ci-gate did not finish in {timeout_s:.0f} s:\n{out[-3000:]}")
    run_dirs = [d for d in reports.iterdir() if d.is_dir()]
    assert len(run_dirs) == 1, out[-3000:]
    decision = json.loads((run_dirs[0] / "decision.json").read_text())
    summary = step_summary.read_text() if step_summary.exists() else ""
    return proc.returncode, decision, run_dirs[0], out + "\n" + summary


def _verdicts(decision: dict) -> str:
    return ", ".join(
        f"{g['name']}={g['verdict']} ({g['reason']})" for g in decision["evaluation"].get("gates", [])
    )


# A gate no server can pass (CPU under 0.01%), as a dry run: recorded and shown, never deciding.
DRY_RUN_GATE = """
  - name: cpu_trial
    kind: threshold
    dry_run: true
    arms: [canary]
    max: 0.0001
    step_seconds: 2   # its interval from 2 s sub-windows of the 1 s scrapes, as the demo's CPU gate
    min_points: 3
    queries:
      value: >-
        sum(rate(backend_process_cpu_seconds_total{arm="${arm}"}[${window}]))
        / max(backend_cpu_allotted_cores{arm="${arm}"})
"""


def test_the_batched_broadcast_candidate_passes(tmp_path: Path) -> None:
    gate_file = tmp_path / "gates.yaml"
    gate_file.write_text((ROOT / "gates" / "defaults.yaml").read_text() + DRY_RUN_GATE)
    code, decision, run_dir, out = _ci_gate(
        tmp_path,
        "--baseline-mode",
        "per_request",
        "--candidate-mode",
        "sharded",
        "--gate-file",
        str(gate_file),
        load=PASSING,
    )
    assert (code, decision["verdict"], decision["exit_code"]) == (0, "pass", 0), (
        _verdicts(decision) + out[-3000:]
    )
    assert decision["evaluation"]["gates"], "the gates were evaluated"
    window = decision["evaluation"]["window"]
    assert window["seconds"] == pytest.approx(200.0)
    assert window["start"] >= decision["started_at"] + 10  # the warm-up is excluded
    assert decision["evaluation"]["weights"] == {"baseline": 50.0, "canary": 50.0}
    junit = ET.parse(run_dir / "junit.xml").getroot()
    failing = {c.get("name") for c in junit.iter("testcase") if c.find("failure") is not None}
    gates = decision["evaluation"]["gates"]
    not_passing = {g["name"] for g in gates if g["verdict"] != "pass" and not g["dry_run"]}
    assert failing == not_passing
    # the dry-run gate failed, was recorded and shown as such, and decided nothing
    (trial,) = [g for g in gates if g["name"] == "cpu_trial"]
    assert trial["dry_run"] and trial["verdict"] == "fail", trial
    assert "cpu_trial" not in decision["failed_gates"]
    assert "| cpu_trial | **fail (dry-run)** |" in out
    assert "Dry-run gate(s), recorded, not deciding: cpu_trial fail" in out
    skipped = [c for c in junit.iter("testcase") if c.get("name") == "cpu_trial"]
    assert skipped[0].find("skipped") is not None
    assert "Canary CI gate: **PASS**" in out  # the job summary file got it
    assert (run_dir / "report.html").exists() and (run_dir / "summary.md").exists()


def test_candidate_with_an_injected_leak_fails_naming_the_gate(tmp_path: Path) -> None:
    code, decision, run_dir, out = _ci_gate(
        tmp_path, "--candidate-mode", "sharded", "--candidate-args", "--fault-leak-kib-per-request 256"
    )
    assert code == 1, _verdicts(decision) + out[-3000:]
    assert decision["verdict"] == "fail"
    assert "memory_leak" in decision["failed_gates"], _verdicts(decision)
    summary = (run_dir / "summary.md").read_text()
    assert (
        "Failed gate(s): " in summary
        and "memory_leak" in summary.split("Failed gate(s): ")[1].splitlines()[0]
    )
    assert "| memory_leak | **fail** |" in out  # also in the GitHub job summary


def test_a_cancelled_job_stops_its_stack_and_exits_without_a_verdict(tmp_path: Path) -> None:
    import psutil

    reports = tmp_path / "reports"
    proc = subprocess.Popen(
        [sys.executable, "-m", "rollout", "ci-gate", "--warmup", "60", "--duration", "60"]
        + ["--reports-dir", str(reports)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # cancel once the stack serves and the load runs
            lines.append(line)
            if line.startswith("warm-up:"):
                proc.send_signal(15)
                break
        out, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
    text = "".join(lines) + out
    assert proc.returncode == 2, text[-3000:]
    # The arms start in parallel and may print onto one line: find them anywhere, not at line starts.
    started = [
        int(a or b)
        for a, b in re.findall(r"(?:baseline|canary|router): pid (\d+)|load: [^\n]*?pid (\d+)", text)
    ]
    assert len(started) >= 4, text  # both arms, router, load
    for pid in started:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, (pid, text)
    decision = json.loads(next(reports.glob("*/decision.json")).read_text())
    assert decision["verdict"] == "inconclusive" and "KeyboardInterrupt" in decision["reason"]

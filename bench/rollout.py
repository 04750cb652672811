"""`python -m bench.rollout` (make bench-rollout): whole rollouts on this machine, timed.

Scenarios: `good` (the canary should promote; wall time of the whole command, samples behind each
step's final verdict, failed requests, and per step and gate the time until the gate first passed next
to the time `python -m rollout plan` predicts for a healthy canary) and `regression` (a 100 ms CPU-burn fault per request and rank, switched on by
the first step's pre-step hook, canary allotted half a core; seconds from the step's start to the revert, in evaluation intervals).
Writes `<out>/bench.json` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rollout.plan import PROFILES, get_profile

INJECT = (
    "import os, urllib.request; urllib.request.urlopen(urllib.request.Request("
    "os.environ['ROLLOUT_CANARY_URL'] + '/rehearsal/faults', data=b'{\"cpu_burn_ms\": 100}', method='POST'))"
)


def _run(out: Path, name: str, args: list[str]) -> dict[str, Any]:
    work = out / name
    env = {
        **os.environ,
        "ROLLOUT_STATE_DIR": str(work / "state"),
        "ROLLOUT_REPORTS_DIR": str(work / "reports"),
    }
    started = time.monotonic()
    with open(work.with_suffix(".log"), "w") as log:
        print(f"[bench] {name}: python -m rollout run {' '.join(args)}", flush=True)
        rc = subprocess.call(
            [sys.executable, "-m", "rollout", "run", *args], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    wall = time.monotonic() - started
    decision = json.loads((work / "reports" / "latest" / "decision.json").read_text())
    requests_path = work / "reports" / decision["run_id"] / "loadtest" / "requests.jsonl"
    records = [json.loads(line) for line in requests_path.read_text().splitlines() if line.strip()]
    steps = []
    for step in decision["steps"]:
        final = step["evaluations"][-1] if step["evaluations"] else None
        samples = {}
        for gate in (final or {}).get("evaluation", {}).get("gates", []):
            samples[gate["name"]] = gate["samples"]
        steps.append(
            {
                "canary_weight": step["canary_weight"],
                "result": step["result"],
                "final_verdict": final and final["verdict"],
                "samples": samples,
                "evaluations": len(step["evaluations"]),
            }
        )
    result = {
        "scenario": name,
        "rc": rc,
        "outcome": decision["outcome"],
        "reason": decision["reason"],
        "wall_s": round(wall, 1),
        "rollout_s": decision["duration_s"],
        "requests": len(records),
        "failed_requests": sum(1 for r in records if not r["ok"] and r["error_kind"] != "cancelled"),
        "steps": steps,
    }
    result["evidence"] = evidence_times(decision)
    if decision["rollbacks"]:
        reverted_step = next(s for s in decision["steps"] if s["result"] in ("reverted", "aborted"))
        result["detection_s"] = round(decision["rollbacks"][0]["at"] - reverted_step["started_at"], 1)
        result["detection_intervals"] = round(result["detection_s"] / decision["profile"]["interval_s"], 2)
    return result


def evidence_times(decision: dict[str, Any]) -> list[dict[str, Any]]:
    """Per step and gate: seconds from the step's start to the gate's first passing evaluation, and what
    the plan predicts for the run's profile and gates (the measured defaults of its assumptions)."""
    from rollout.gating import load_gate_config
    from rollout.plan import Profile, default_assumptions, evidence_plan

    profile = Profile.from_dict(decision["profile"])
    config = load_gate_config(None, gate_profile="local", overrides=profile.gate_overrides)
    planned = evidence_plan(profile, config, default_assumptions(profile))
    rows = []
    for step, plan in zip(decision["steps"], planned, strict=False):
        for gate in plan.gates:
            passes = [
                e["at"] - step["started_at"]
                for e in step["evaluations"]
                if e["gate_verdicts"].get(gate.gate) == "pass"
            ]
            measured = passes[0] if passes else None
            rows.append(
                {
                    "canary_weight": step["canary_weight"],
                    "gate": gate.gate,
                    "measured_s": None if measured is None else round(measured, 1),
                    "planned_s": None if gate.seconds is None else round(gate.seconds, 1),
                    "modelled": gate.modelled,
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick", choices=sorted(PROFILES))
    parser.add_argument("--scenarios", default="good,regression")
    parser.add_argument(
        "--out", type=Path, default=Path("reports") / f"bench-rollout-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    args = parser.parse_args(argv)
    profile = get_profile(args.profile)
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for name in args.scenarios.split(","):
        (args.out / name).mkdir(exist_ok=True)
        if name == "good":
            results.append(_run(args.out, name, ["--profile", profile.name]))
        elif name == "regression":
            hooks = args.out / name / "hooks.yaml"
            hooks.write_text(
                json.dumps(
                    {
                        "hooks": [
                            {
                                "kind": "pre-step",
                                "steps": [profile.steps[0]],
                                "command": [sys.executable, "-c", INJECT],
                            }
                        ]
                    }
                )
            )
            # Half a core for the canary: the burn alone (2 ranks x 100 ms per request) asks for more.
            results.append(
                _run(
                    args.out,
                    name,
                    ["--profile", profile.name, "--canary-cpu-cores", "0.5", "--hooks", str(hooks)],
                )
            )
        else:
            parser.error(f"unknown scenario {name!r} (good, regression)")
    (args.out / "bench.json").write_text(
        json.dumps({"profile": profile.name, "results": results}, indent=1) + "\n"
    )
    print(
        f"\nprofile {profile.name}: steps {list(profile.steps)}, {profile.request_rate:g} req/s, interval {profile.interval_s:g}s"
    )
    print(
        f"{'scenario':<11} {'outcome':<9} {'wall s':>7} {'rollout s':>9} {'requests':>8} {'failed':>6} {'detect s':>8}  samples (e2e p99 gate, per step: baseline/canary)"
    )
    for r in results:
        samples = " ".join(
            f"{s['canary_weight']}%:{s['samples'].get('latency_e2e_p99', {}).get('baseline')}/{s['samples'].get('latency_e2e_p99', {}).get('canary')}"
            for s in r["steps"]
        )
        detect = r.get("detection_s", "-")
        print(
            f"{r['scenario']:<11} {r['outcome']:<9} {r['wall_s']:>7} {r['rollout_s']!s:>9} {r['requests']:>8} {r['failed_requests']:>6} {detect!s:>8}  {samples}"
        )
    for r in results:
        if r.get("evidence"):
            print(f"\n{r['scenario']}: first pass per gate (s since the step began) vs the plan's prediction")
            print(f"{'step':>5} {'gate':<18} {'measured':>9} {'planned':>8} {'ratio':>6}")
            for e in r["evidence"]:
                m, p = e["measured_s"], e["planned_s"]
                ratio = f"{m / p:.2f}" if m and p and e["modelled"] else "-"
                print(f"{e['canary_weight']:>4}% {e['gate']:<18} {m!s:>9} {p!s:>8} {ratio:>6}")
    print(f"\nwritten: {args.out / 'bench.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

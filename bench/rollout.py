"""`python -m bench.rollout` (make bench-rollout): whole rollouts on this machine, timed.

Scenarios: `good` (the canary should promote; wall time of the whole command, samples behind each
step's final verdict, failed requests) and `regression` (a 100 ms CPU-burn fault per request and rank, switched on by
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
    if decision["rollbacks"]:
        reverted_step = next(s for s in decision["steps"] if s["result"] in ("reverted", "aborted"))
        result["detection_s"] = round(decision["rollbacks"][0]["at"] - reverted_step["started_at"], 1)
        result["detection_intervals"] = round(result["detection_s"] / decision["profile"]["interval_s"], 2)
    return result


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
    print(f"\nwritten: {args.out / 'bench.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Every flag of `python -m rollout` (and its console scripts), defined once, and the commands they run.

Each command turns its flags into a site (the kind they ask for, from the registry in `rollout.sites`)
and a plan or options, and calls one function: `run.run`, `run.rollback`, `run.down` or `ci_gate.gate_once`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from infra.cli import UsageErrorParser
from rollout.events import Decision
from rollout.hooks import load_hooks, load_notifications
from rollout.local_stack import BASELINE_MODE
from rollout.plan import (
    MAX_BAKE_FACTOR,
    PROFILES,
    Phase,
    Profile,
    StepEvidence,
    get_profile,
    step_looks,
)
from rollout.sites import site_from_args, site_kind_for
from rollout.state import RolloutState

EXIT = {Phase.PROMOTED: 0, Phase.REVERTED: 1, Phase.ABORTED: 2}
DEFAULT_STATE_DIR = Path(".cache/rollout")
DEFAULT_REPORTS_DIR = Path("reports")


def say(line: str) -> None:
    print(line, flush=True)  # progress shows as it happens, also in CI logs


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated numbers") from None


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers") from None


# -- flag groups, each defined once ----------------------------------------------------------------
def _cluster_flags(parser: argparse.ArgumentParser, *, from_env: bool) -> None:
    """The release to act on. `rollout` commands also read ROLLOUT_*; a CI gate only takes flags, so a
    job's environment never turns a local check into a cluster one."""
    env = os.environ.get if from_env else (lambda _name: None)
    group = parser.add_argument_group("cluster (Kubernetes with the chart installed; local when not given)")
    group.add_argument(
        "--kube-namespace",
        default=env("ROLLOUT_NAMESPACE"),
        help="namespace of the release" + (" (env ROLLOUT_NAMESPACE)" if from_env else ""),
    )
    group.add_argument(
        "--release",
        default=env("ROLLOUT_RELEASE"),
        help="helm release of the chart" + (" (env ROLLOUT_RELEASE)" if from_env else ""),
    )
    group.add_argument(
        "--kube-context", default=None, help="kubeconfig context (default: in-cluster or current)"
    )
    group.add_argument(
        "--prometheus-url", default=None, help="the cluster's Prometheus (default $ROLLOUT_PROMETHEUS_URL)"
    )


def _local_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path(os.environ.get("ROLLOUT_STATE_DIR", DEFAULT_STATE_DIR)),
        help="where the local state file lives (default .cache/rollout; env ROLLOUT_STATE_DIR)",
    )
    parser.add_argument(
        "--reports-dir",
        type=Path,
        default=Path(os.environ.get("ROLLOUT_REPORTS_DIR", DEFAULT_REPORTS_DIR)),
        help="report directories go here (default reports; env ROLLOUT_REPORTS_DIR)",
    )


def _arm_flags(parser: argparse.ArgumentParser, *, canary_flag: str) -> None:
    """How each arm is served locally. The canary's flags are `--canary-*` for a rollout and
    `--candidate-*` for a CI gate (a pull request's candidate); both land on `canary_*`."""
    group = parser.add_argument_group("arms (embedded backend unless a command or URL replaces it)")
    for flag, dest, mode in (("baseline", "baseline", BASELINE_MODE), (canary_flag, "canary", None)):
        group.add_argument(
            f"--{flag}-cmd",
            dest=f"{dest}_cmd",
            help=f"command line serving the {flag}; {{port}} is filled in",
        )
        group.add_argument(
            f"--{flag}-url",
            dest=f"{dest}_url",
            help=f"an already running {flag} server (e.g. sglang on a GPU host)",
        )
        group.add_argument(
            f"--{flag}-mode",
            dest=f"{dest}_mode",
            default=mode,
            help=f"embedded backend --mm-input-mode (default {mode or 'the recommended mode'})",
        )
        group.add_argument(
            f"--{flag}-cpu-cores",
            dest=f"{dest}_cpu_cores",
            type=float,
            default=None,
            help="cores allotted, the CPU gate's denominator (default: one per TP rank)",
        )
        group.add_argument(
            f"--{flag}-args",
            dest=f"{dest}_args",
            default="",
            help="extra backend flags, e.g. rehearsal faults",
        )
    group.add_argument("--tp-size", type=int, default=2)


def _plan_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default="default", choices=sorted(PROFILES))
    parser.add_argument(
        "--gate-file", type=Path, default=None, help="gate YAML (default: the packaged defaults)"
    )
    plan = parser.add_argument_group("plan overrides")
    plan.add_argument("--steps", type=_ints, help="canary percent per step, e.g. 10,50,100")
    plan.add_argument("--bake", type=_floats, help="bake seconds per step, e.g. 90,30,20")
    plan.add_argument("--interval", type=float, help="seconds between gate evaluations")
    plan.add_argument(
        "--rate", type=float, help="offered requests per second (cluster: the rate reaching the Gateway)"
    )
    plan.add_argument(
        "--max-bake",
        type=_floats,
        help="longest wait per step for the gates to decide, e.g. 600,180,180; then the rollout pauses "
        f"(default: {MAX_BAKE_FACTOR:g}x each bake)",
    )
    plan.add_argument("--seed", type=int)


def _profile(args: argparse.Namespace) -> Profile:
    return get_profile(args.profile).with_overrides(
        steps=args.steps,
        bake_s=args.bake,
        interval_s=args.interval,
        request_rate=args.rate,
        max_bake_s=args.max_bake,
        seed=args.seed,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = UsageErrorParser(prog="python -m rollout", description="Canary rollout for SGLang VLM serving.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=UsageErrorParser)

    run = sub.add_parser("run", help="start a rollout, or resume the one in the state directory")
    _cluster_flags(run, from_env=True)
    _local_flags(run)
    run.add_argument(
        "--hooks",
        type=Path,
        default=os.environ.get("ROLLOUT_HOOKS_CONFIG") or None,
        help="hooks YAML: hooks (pre-step, post-step, promotion, rollback) and notifications "
        "(env ROLLOUT_HOOKS_CONFIG)",
    )
    _plan_flags(run)
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="print the evidence plan (`rollout plan`) for these settings and start nothing",
    )
    _arm_flags(run, canary_flag="canary")
    run.add_argument(
        "--keep-stack", action="store_true", help="leave the local stack running after the decision"
    )

    plan = sub.add_parser(
        "plan", help="how long each step needs for every gate to be able to pass a healthy canary"
    )
    _plan_flags(plan)
    plan.add_argument(
        "--gate-profile",
        choices=["local", "kubernetes"],
        default="local",
        help="the gate file's query profile (local: the embedded stack, with the run profile's sizing)",
    )
    plan.add_argument(
        "--tail-scale",
        type=float,
        help="log latency's sparsity at the P99; at most its mean excess over the P90 (measure yours)",
    )
    plan.add_argument("--memory-noise-mib", type=float, help="a pod's memory noise around its trend, MiB")
    plan.add_argument("--pods-per-arm", type=int, help="pods (locally: processes) per arm")
    plan.add_argument("--json", action="store_true")

    status = sub.add_parser("status", help="show the rollout state")
    _cluster_flags(status, from_env=True)
    _local_flags(status)
    status.add_argument("--json", action="store_true")

    for name, text in (
        ("rollback", "restore 100%% baseline from any state (idempotent)"),
        ("abort", "the same as rollback (Argo's word): 100%% baseline, recorded as aborted"),
        ("pause", "hold at the current weights; gates keep being recorded, a failing gate still reverts"),
        ("resume", "let a paused rollout go on from its step"),
        ("promote", "skip the remaining steps: 100%% canary now (refused while a gate fails)"),
    ):
        manual = sub.add_parser(name, help=text)
        _cluster_flags(manual, from_env=True)
        _local_flags(manual)
        manual.add_argument("--reason", required=True, help="recorded with the command, and in the report")
        manual.add_argument("--who", default=None, help="recorded as the person acting (default user@host)")
        if name == "promote":
            manual.add_argument(
                "--force", action="store_true", help="promote past failing gates (recorded with who and why)"
            )

    down = sub.add_parser("down", help="stop the local stack processes a finished or rolled-back run left")
    _local_flags(down)

    ci_gate = sub.add_parser("ci-gate", help="baseline vs candidate at a fixed split, gates once: a CI check")
    add_ci_gate_flags(ci_gate)
    return parser


def add_ci_gate_flags(parser: argparse.ArgumentParser) -> None:
    from rollout.ci_gate import LOCAL_RATE

    env = os.environ.get
    # String defaults go through `type`, so a bad environment value is reported like a bad flag.
    parser.add_argument(
        "--rate",
        type=float,
        default=env("CI_GATE_RATE") or None,  # empty (a template's unset input) is no rate
        help=f"offered req/s (local: Locust's rate, default {LOCAL_RATE:g}; cluster: the rate reaching the "
        "Gateway if known, for the throughput gate, default none)",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=env("CI_GATE_DURATION", "120"),
        help="measurement window in seconds (default 120: at 20 req/s 50/50 a healthy candidate has the "
        "evidence to pass the demo's gates in about 100 s; `python -m rollout plan --steps 50 --rate R`)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=env("CI_GATE_WARMUP", "10"),
        help="seconds of load left out (default 10)",
    )
    parser.add_argument("--candidate-weight", type=int, default=50, help="candidate's percent of traffic")
    parser.add_argument("--gate-file", type=Path, default=None, help="gate YAML (default: the packaged one)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--allow-inconclusive", action="store_true", help="exit 0 on an inconclusive verdict (default: 2)"
    )
    parser.add_argument(
        "--reports-dir",
        type=Path,
        default=env("CI_GATE_REPORTS_DIR", "reports/ci-gate"),
        help="report directories go here (default reports/ci-gate)",
    )
    parser.add_argument(
        "--junit", type=Path, default=None, help="JUnit XML path (default <report dir>/junit.xml)"
    )
    _arm_flags(parser, canary_flag="candidate")
    _cluster_flags(parser, from_env=False)
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print when each gate can pass a healthy candidate at this rate and split, against the window, "
        "and start nothing (exit 1: the window is too short)",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=env("CI_GATE_SETTLE") or None,
        help="seconds after the window before evaluating, so its last scrape lands "
        "(default: 15 on a cluster, 2 locally)",
    )


# -- flags -> site, plan, options ------------------------------------------------------------------
def _gate_file(args: argparse.Namespace) -> Path | None:
    if args.gate_file is not None:
        return args.gate_file
    env = os.environ.get("ROLLOUT_GATES_CONFIG")
    return Path(env) if env else None


# -- commands ----------------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    from rollout.run import RunPlan, run

    if args.dry_run:
        args.gate_profile = site_kind_for(args).gate_profile
        return cmd_plan(args)
    site = site_from_args(args, needs_prometheus=True)
    profile = _profile(args)
    plan = RunPlan(
        profile=profile,
        reports_dir=args.reports_dir,
        gate_file=_gate_file(args),
        hooks=load_hooks(args.hooks),
        notifications=load_notifications(args.hooks),
        offered_rps=args.rate,
    )
    state = run(site, plan, say=say)
    return 2 if state.outcome is None else EXIT[state.outcome]


def cmd_plan(args: argparse.Namespace) -> int:
    """Per step, when each gate can pass a healthy canary; exit 1 when a step cannot within its max bake."""
    from dataclasses import replace

    from rollout.gating import load_gate_config
    from rollout.plan import default_assumptions, evidence_plan

    profile = _profile(args)
    overrides = profile.gate_overrides if args.gate_profile == "local" else None
    config = load_gate_config(_gate_file(args), gate_profile=args.gate_profile, overrides=overrides)
    assumptions = default_assumptions(profile, args.gate_profile)
    given = {
        "tail_scale": getattr(args, "tail_scale", None),
        "memory_noise_mib": getattr(args, "memory_noise_mib", None),
        "pods_per_arm": getattr(args, "pods_per_arm", None),
    }
    assumptions = replace(assumptions, **{k: v for k, v in given.items() if v is not None})
    steps = evidence_plan(profile, config, assumptions)
    if getattr(args, "json", False):
        print(json.dumps(plan_json(profile, config.source, assumptions, steps), indent=2))
    else:
        for line in plan_lines(profile, config.source, assumptions, steps):
            say(line)
    return 0 if all(s.reachable for s in steps) else 1


def _seconds(value: float | None) -> str:
    if value is None:
        return "never (within a day)"
    return f"{value:.0f}s" if value < 120 else f"{value / 60:.1f} min"


def _gate_lines(step: StepEvidence) -> list[str]:
    return [
        f"  {gate.gate:<22} can pass after {'first evaluation' if not gate.modelled else _seconds(gate.seconds)}"
        for gate in step.gates
    ]


def plan_lines(profile: Profile, source: str, assumptions: Any, steps: list[StepEvidence]) -> list[str]:
    lines = [
        f"plan: profile {profile.name}, {profile.request_rate:g} req/s offered, steps "
        f"{'/'.join(str(s) for s in profile.steps)}% canary, gates: {source}",
        f"assumes a healthy canary: no errors, each arm serving its share, latency (from "
        f"{'load-test samples' if assumptions.latency_samples else 'histograms, buckets fine enough'}) tail scale "
        f"{assumptions.tail_scale:g}, memory noise {assumptions.memory_noise_mib:g} MiB per pod, "
        f"{assumptions.pods_per_arm} pods per arm (docs/gates.md: measuring yours)",
    ]
    shape = asdict(profile)
    for step in steps:
        rate = profile.request_rate * step.canary_weight / 100
        looks = step_looks(shape, step.index).count
        lines.append(
            f"step {step.index + 1}: {step.canary_weight}% canary ({rate:.3g} req/s), bake "
            f"{step.bake_s:.0f}s, max bake {step.max_bake_s:.0f}s ({looks} looks: a pass holds across them)"
        )
        lines += _gate_lines(step)
        after = step.pass_after_s
        if not step.reachable:
            lines.append(
                f"  WARNING: {step.slowest} needs {_seconds(after)}, past the maximum bake of "
                f"{step.max_bake_s:.0f}s: the step will pause for a person, not promote"
            )
        elif after is not None and after > step.bake_s:
            lines.append(f"  every gate can pass after {_seconds(after)} ({step.slowest}): past the bake")
        else:
            lines.append(f"  every gate can pass after {_seconds(after)}: within the bake")
    return lines


def plan_json(profile: Profile, source: str, assumptions: Any, steps: list[StepEvidence]) -> dict[str, Any]:
    return {
        "profile": profile.name,
        "rate_rps": profile.request_rate,
        "gates": source,
        "assumptions": asdict(assumptions),
        "steps": [
            {
                "canary_weight": s.canary_weight,
                "bake_s": s.bake_s,
                "max_bake_s": s.max_bake_s,
                "pass_after_s": s.pass_after_s,
                "slowest": s.slowest,
                "reachable": s.reachable,
                "gates": {g.gate: g.seconds for g in s.gates},
            }
            for s in steps
        ],
    }


def cmd_status(args: argparse.Namespace) -> int:
    from rollout.processes import ProcessRef, is_alive
    from rollout.routers import router_from_description
    from rollout.run import last_verdicts

    store = site_from_args(args, needs_prometheus=False).require_state().store
    state = store.load()
    if state is None:
        print(f"no rollout recorded in {store.describe()}")
        return 0
    steering = orchestrator_status(state, time.time())
    if args.json:
        print(json.dumps({**state.to_dict(), "orchestrator": steering}, indent=1, default=str))
        return 0
    print(f"rollout {state.run_id}: {state.phase.value}" + (f" ({state.reason})" if state.reason else ""))
    if not state.phase.terminal and state.step_started_at is not None:
        print(
            f"  step {state.step_index + 1}/{len(state.steps)} at {state.current_canary_weight}% canary, "
            f"for {time.time() - state.step_started_at:.0f}s"
        )
    if steering is not None:
        print(f"  orchestrator: {steering['text']}")
    kind = state.router.get("kind")
    process = state.router.get("process")
    if process and not is_alive(ProcessRef.from_dict(process)):
        print(f"  router ({kind}): not running (the run's local stack is stopped)")
    else:
        try:
            weights = router_from_description(state.router).get_weights()
            print(f"  router ({kind}): baseline {weights.baseline}% canary {weights.canary}%")
        except Exception as exc:  # status must work with the router down too
            print(f"  router ({kind}): unreachable ({exc})")
    if state.paused is not None and not state.phase.terminal:
        held = time.time() - state.paused["at"]
        print(
            f"  PAUSED by {state.paused['who']} {held:.0f}s ago: {state.paused['reason']} (`rollout resume`)"
        )
    if state.evaluations:
        last = state.evaluations[-1]
        print(f"  last evaluation at {last.canary_weight}%: {last.verdict} {last_verdicts(state)}")
    for event in state.events:
        if isinstance(event, Decision):
            print(f"  {event.KIND} by {event.who}: {event.reason}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from rollout.run import rollback, whoami

    site = site_from_args(args, needs_prometheus=False)
    rollback(site, reports_dir=args.reports_dir, who=args.who or whoami(), reason=args.reason, say=say)
    return 0


def cmd_pause(args: argparse.Namespace) -> int:
    from rollout.run import pause, whoami

    pause(site_from_args(args, needs_prometheus=False), who=args.who or whoami(), reason=args.reason, say=say)
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from rollout.run import resume, whoami

    resume(
        site_from_args(args, needs_prometheus=False), who=args.who or whoami(), reason=args.reason, say=say
    )
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from rollout.run import promote, whoami

    site = site_from_args(args, needs_prometheus=False)
    who = args.who or whoami()
    promote(site, reports_dir=args.reports_dir, who=who, reason=args.reason, force=args.force, say=say)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from rollout.run import down

    down(site_from_args(args, needs_prometheus=False), say=say)
    return 0


def cmd_ci_gate(args: argparse.Namespace) -> int:
    """The check's exit code; a bad option or gate file is a usage error, a stack that never served
    (or a cancelled job) no verdict."""
    from infra.cli import EXIT_USAGE
    from rollout.ci_gate import NO_VERDICT, GateOnceOptions, gate_once

    if args.dry_run:
        return cmd_ci_gate_plan(args)
    try:
        site = site_from_args(args, needs_prometheus=True, canary_flag="candidate")
        summary, output = os.environ.get("GITHUB_STEP_SUMMARY"), os.environ.get("GITHUB_OUTPUT")
        options = GateOnceOptions(
            duration_s=args.duration,
            warmup_s=args.warmup,
            reports_dir=args.reports_dir,
            canary_weight=args.candidate_weight,
            gate_file=args.gate_file,
            offered_rps=args.rate,
            seed=args.seed,
            settle_s=args.settle,
            allow_inconclusive=args.allow_inconclusive,
            junit_path=args.junit,
            step_summary=Path(summary) if summary else None,
            github_output=Path(output) if output else None,
        )
        outcome = gate_once(site, options, say=say)
    except ValueError as exc:  # GateConfigError is one: bad key or value, named
        print(f"ci-gate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        print(f"ci-gate: cancelled ({exc or 'SIGINT'}): no verdict", file=sys.stderr)
        return NO_VERDICT
    except Exception as exc:  # an error of the gate job itself is no verdict, never a regression (exit 1)
        import traceback

        traceback.print_exc()
        print(f"ci-gate: no verdict: {type(exc).__name__}: {exc}", file=sys.stderr)
        return NO_VERDICT
    return outcome.exit_code


def cmd_ci_gate_plan(args: argparse.Namespace) -> int:
    """The CI gate's evidence plan: its one window as a single step at the candidate's weight."""
    from infra.cli import EXIT_USAGE
    from rollout.ci_gate import LOCAL_RATE, SIZING_PROFILE, single_shot_config
    from rollout.gating import load_gate_config
    from rollout.plan import default_assumptions, evidence_plan

    gate_profile = site_kind_for(args).gate_profile
    local = gate_profile == "local"  # the embedded stack: its load at LOCAL_RATE, the quick profile's sizing
    rate = args.rate or (LOCAL_RATE if local else None)
    if rate is None:
        print("ci-gate: --dry-run on a cluster needs --rate, the requests per second reaching the Gateway",
              file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    profile = get_profile(SIZING_PROFILE).with_overrides(
        steps=(args.candidate_weight,),
        bake_s=(args.duration,),
        max_bake_s=(args.duration,),
        settle_s=0.0,  # the window opens after the warm-up
        request_rate=rate,
    )
    try:
        # The same gates as the check: the quick profile's sizing locally, the shipped bounds on a cluster.
        overrides = profile.gate_overrides if local else None
        config = single_shot_config(
            load_gate_config(args.gate_file, gate_profile=gate_profile, overrides=overrides)
        )
    except ValueError as exc:
        print(f"ci-gate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    assumptions = default_assumptions(profile, gate_profile)
    (step,) = evidence_plan(profile, config, assumptions)
    header, assumed = plan_lines(profile, config.source, assumptions, [step])[:2]
    say(f"ci-gate plan: {rate:g} req/s offered, candidate {args.candidate_weight}% "
        f"({rate * args.candidate_weight / 100:.3g} req/s), a {args.duration:g}s window after a "
        f"{args.warmup:g}s warm-up, gates: {config.source}")  # fmt: skip
    say(assumed)
    for line in _gate_lines(step):
        say(line)
    after = step.pass_after_s
    if step.reachable:
        say(f"  every gate can pass after {_seconds(after)} ({step.slowest}): within the window")
        return 0
    say(f"  WARNING: {step.slowest} needs {_seconds(after)}, past the {args.duration:g}s window: a healthy "
        "candidate's check will be inconclusive (exit 2); give it a longer --duration or more --rate")  # fmt: skip
    return 1


def orchestrator_status(state: RolloutState, now: float) -> dict[str, Any] | None:
    """Who steers an unfinished rollout, and whether anyone still does (None once it is finished)."""
    if state.phase.terminal:
        return None
    holder = state.holder
    what_now = (
        "traffic is held at the current weights; run `make rollback` (100% baseline) "
        "or `python -m rollout run` (resume)"
    )
    if holder is None:
        return {"gone": True, "holder": None, "text": f"none holds this rollout; {what_now}"}
    age = holder.age(now)
    gone = holder.gone(now)
    text = (
        f"GONE ({holder.describe()}, last heartbeat {age:.0f}s ago); {what_now}"
        if gone
        else f"{holder.describe()}, last heartbeat {age:.0f}s ago (lease {holder.lease_s:.0f}s)"
    )
    return {"gone": gone, "holder": holder.describe(), "heartbeat_age_s": round(age, 1), "text": text}


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run,
    "plan": cmd_plan,
    "status": cmd_status,
    "rollback": cmd_rollback,
    "abort": cmd_rollback,
    "pause": cmd_pause,
    "resume": cmd_resume,
    "promote": cmd_promote,
    "down": cmd_down,
    "ci-gate": cmd_ci_gate,
}

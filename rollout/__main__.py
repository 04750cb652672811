"""`python -m rollout run|status|rollback|down` (console scripts: canary-rollout, canary-status, canary-rollback).

Exit codes of `run`: 0 promoted, 1 reverted, 2 aborted (rolled back by a person or an error),
3 usage or configuration error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from infra.cli import EXIT_USAGE, UsageErrorParser
from rollout.hooks import load_hooks
from rollout.local_stack import BASELINE_MODE, ArmSpec, canary_default_mode
from rollout.plan import PROFILES, get_profile

EXIT = {"promoted": 0, "reverted": 1, "aborted": 2}
USAGE = EXIT_USAGE
DEFAULT_STATE_DIR = Path(".cache/rollout")
DEFAULT_REPORTS_DIR = Path("reports")


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


def _common(parser: argparse.ArgumentParser) -> None:
    cluster = parser.add_argument_group("cluster (Kubernetes with the chart installed; local when not given)")
    cluster.add_argument(
        "--kube-namespace",
        default=os.environ.get("ROLLOUT_NAMESPACE"),
        help="namespace of the release (env ROLLOUT_NAMESPACE)",
    )
    cluster.add_argument(
        "--release",
        default=os.environ.get("ROLLOUT_RELEASE"),
        help="helm release of the chart (env ROLLOUT_RELEASE)",
    )
    cluster.add_argument(
        "--kube-context", default=None, help="kubeconfig context (default: in-cluster or current)"
    )
    cluster.add_argument(
        "--prometheus-url", default=None, help="the cluster's Prometheus (env ROLLOUT_PROMETHEUS_URL)"
    )
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


def build_parser() -> argparse.ArgumentParser:
    parser = UsageErrorParser(prog="python -m rollout", description="Canary rollout for SGLang VLM serving.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=UsageErrorParser)

    run = sub.add_parser("run", help="start a rollout, or resume the one in the state directory")
    _common(run)
    run.add_argument("--profile", default="default", choices=sorted(PROFILES))
    run.add_argument(
        "--gate-file", type=Path, default=None, help="gate YAML (default: the packaged defaults)"
    )
    run.add_argument(
        "--hooks", type=Path, default=None, help="hooks YAML (pre-step, post-step, promotion, rollback)"
    )
    plan = run.add_argument_group("plan overrides")
    plan.add_argument("--steps", type=_ints, help="canary percent per step, e.g. 10,50,100")
    plan.add_argument("--bake", type=_floats, help="bake seconds per step, e.g. 90,30,20")
    plan.add_argument("--interval", type=float, help="seconds between gate evaluations")
    plan.add_argument("--rate", type=float, help="offered requests per second")
    plan.add_argument(
        "--max-inconclusive", type=int, help="inconclusive evaluations past the bake that revert"
    )
    plan.add_argument("--seed", type=int)
    arms = run.add_argument_group("arms (embedded backend unless a command or URL replaces it)")
    for arm, mode in (("baseline", BASELINE_MODE), ("canary", None)):
        arms.add_argument(f"--{arm}-cmd", help=f"command line serving the {arm} arm; {{port}} is filled in")
        arms.add_argument(f"--{arm}-url", help=f"an already running {arm} server (e.g. sglang on a GPU host)")
        arms.add_argument(
            f"--{arm}-mode",
            default=mode,
            help=f"embedded backend --mm-input-mode (default {mode or 'the recommended mode'})",
        )
        arms.add_argument(
            f"--{arm}-cpu-cores",
            type=float,
            default=None,
            help="cores allotted, the CPU gate's denominator (default: one per TP rank)",
        )
        arms.add_argument(f"--{arm}-args", default="", help="extra backend flags, e.g. rehearsal faults")
    arms.add_argument("--tp-size", type=int, default=2)
    run.add_argument(
        "--keep-stack", action="store_true", help="leave the local stack running after the decision"
    )

    status = sub.add_parser("status", help="show the rollout state")
    _common(status)
    status.add_argument("--json", action="store_true")

    rollback = sub.add_parser("rollback", help="restore 100%% baseline from any state (idempotent)")
    _common(rollback)
    rollback.add_argument("--reason", required=True)
    rollback.add_argument(
        "--who", default=None, help="recorded as the person rolling back (default user@host)"
    )

    down = sub.add_parser("down", help="stop the local stack processes a finished or rolled-back run left")
    _common(down)

    from rollout.ci_gate import add_arguments as ci_gate_arguments

    ci_gate = sub.add_parser("ci-gate", help="baseline vs candidate at a fixed split, gates once: a CI check")
    ci_gate_arguments(ci_gate, baseline_mode=BASELINE_MODE)
    return parser


def _arm_spec(args: argparse.Namespace, arm: str) -> ArmSpec:
    import shlex

    mode = getattr(args, f"{arm}_mode") or canary_default_mode()
    return ArmSpec(
        arm=arm,
        mm_input_mode=mode,
        tp_size=args.tp_size,
        cpu_cores=getattr(args, f"{arm}_cpu_cores"),
        extra_args=tuple(shlex.split(getattr(args, f"{arm}_args"))),
        command=getattr(args, f"{arm}_cmd"),
        url=getattr(args, f"{arm}_url"),
    )


def _cluster_target(args: argparse.Namespace):
    """The cluster to act on, or None for the local stack."""
    if not args.release and not args.kube_namespace:
        return None
    if not (args.release and args.kube_namespace):
        raise ValueError("a cluster rollout needs both --kube-namespace and --release")
    from rollout.cluster import ClusterTarget

    return ClusterTarget.resolve(
        namespace=args.kube_namespace,
        release=args.release,
        context=args.kube_context,
        prometheus_url=args.prometheus_url,
    )


def cmd_run(args: argparse.Namespace) -> int:
    from rollout.runner import ClusterRunOptions, LocalRunOptions, run_cluster, run_local

    target = _cluster_target(args)
    gate_file = args.gate_file or (
        Path(os.environ["ROLLOUT_GATES_CONFIG"]) if os.environ.get("ROLLOUT_GATES_CONFIG") else None
    )
    if target is not None:
        profile = get_profile(args.profile).with_overrides(
            steps=args.steps,
            bake_s=args.bake,
            interval_s=args.interval,
            request_rate=args.rate,
            max_inconclusive=args.max_inconclusive,
            seed=args.seed,
        )
        cluster_state = run_cluster(
            ClusterRunOptions(
                profile=profile,
                target=target,
                reports_dir=args.reports_dir,
                gate_file=gate_file,
                hooks=load_hooks(args.hooks),
                offered_rps=args.rate,
            ),
            say=lambda line: print(line, flush=True),
        )
        return EXIT.get(cluster_state.outcome or "", 2)
    profile = get_profile(args.profile).with_overrides(
        steps=args.steps,
        bake_s=args.bake,
        interval_s=args.interval,
        request_rate=args.rate,
        max_inconclusive=args.max_inconclusive,
        seed=args.seed,
    )
    options = LocalRunOptions(
        profile=profile,
        state_dir=args.state_dir,
        reports_dir=args.reports_dir,
        arms={arm: _arm_spec(args, arm) for arm in ("baseline", "canary")},
        gate_file=gate_file,
        hooks=load_hooks(args.hooks),
        keep_stack=args.keep_stack,
    )
    state = run_local(options, say=lambda line: print(line, flush=True))
    return EXIT.get(state.outcome or "", 2)


def _store(args: argparse.Namespace):
    from rollout.state import ConfigMapStateStore, FileStateStore

    target = _cluster_target(args)
    if target is None:
        return FileStateStore(args.state_dir), None
    return ConfigMapStateStore(
        namespace=target.namespace, name=target.state_configmap, context=target.context
    ), target


def cmd_status(args: argparse.Namespace) -> int:
    store, _ = _store(args)
    state = store.load()
    if state is None:
        print(f"no rollout recorded in {store.describe()}")
        return 0
    if args.json:
        print(json.dumps(state.to_dict(), indent=1, default=str))
        return 0
    print(f"rollout {state.run_id}: {state.phase.value}" + (f" ({state.reason})" if state.reason else ""))
    if not state.phase.terminal and state.step_started_at is not None:
        print(
            f"  step {state.step_index + 1}/{len(state.steps)} at {state.current_canary_weight}% canary, "
            f"for {time.time() - state.step_started_at:.0f}s"
        )
    try:
        from rollout.processes import ProcessRef, is_alive
        from rollout.routers import router_from_description

        process = state.router.get("process")
        if process and not is_alive(ProcessRef.from_dict(process)):
            print(f"  router ({state.router.get('kind')}): not running (the run's local stack is stopped)")
            raise LookupError
        weights = router_from_description(state.router).get_weights()
        print(f"  router ({state.router.get('kind')}): baseline {weights.baseline}% canary {weights.canary}%")
    except LookupError:
        pass
    except Exception as exc:  # status must work with the router down too
        print(f"  router ({state.router.get('kind')}): unreachable ({exc})")
    if state.evaluations:
        last = state.evaluations[-1]
        gates = " ".join(f"{n}={v}" for n, v in last["gate_verdicts"].items())
        print(f"  last evaluation at {last['canary_weight']}%: {last['verdict']} {gates}")
    for event in state.events:
        if event["kind"] == "rollback":
            print(f"  rollback by {event['who']}: {event['reason']}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from rollout.runner import cluster_rollback_command, rollback_command, whoami

    store, target = _store(args)
    if target is not None:
        cluster_rollback_command(
            store=store,
            target=target,
            who=args.who or whoami(),
            reason=args.reason,
            say=lambda line: print(line, flush=True),
        )
        return 0
    rollback_command(
        state_dir=args.state_dir,
        reports_dir=args.reports_dir,
        who=args.who or whoami(),
        reason=args.reason,
        say=lambda line: print(line, flush=True),
    )
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from rollout.runner import down_command

    down_command(state_dir=args.state_dir, say=lambda line: print(line, flush=True))
    return 0


def cmd_ci_gate(args: argparse.Namespace) -> int:
    from rollout.ci_gate import run_from_args

    return run_from_args(args, {arm: _arm_spec(args, arm) for arm in ("baseline", "canary")})


COMMANDS = {
    "run": cmd_run,
    "status": cmd_status,
    "rollback": cmd_rollback,
    "down": cmd_down,
    "ci-gate": cmd_ci_gate,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"rollout {args.command}: {exc}", file=sys.stderr)
        return USAGE if isinstance(exc, ValueError) else 1 if args.command != "run" else 2


def rollback_main() -> int:
    return main(["rollback", *sys.argv[1:]])


def status_main() -> int:
    return main(["status", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())

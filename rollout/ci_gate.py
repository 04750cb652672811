"""`python -m rollout ci-gate` (console script `canary-ci-gate`): the gates as a pull-request check.

Two modes share the single evaluation, the outputs and the exit codes. Local (default): starts both arms
on this machine (the local stack of `rollout run`: embedded backends, commands or URLs,
the weighted router, a real Prometheus, Locust), fixes the traffic split (50/50 by default, so both arms
get equal samples), drives the load for a warm-up and then the measurement window, evaluates the gates
once over that window (warm-up excluded) and writes the Markdown summary (also to
`$GITHUB_STEP_SUMMARY` when set), the report directory and JUnit XML. Cluster (`--kube-namespace` and
`--release`): the chart's release already runs both images; sets its HTTPRoute to the split, waits the
warm-up and the window while the chart's Locust or other traffic reaches the Gateway, evaluates once with
the `kubernetes` gate profile on the cluster's Prometheus, and always puts the route back to 100%
baseline.

Exit codes: 0 pass, 1 fail, 2 inconclusive (0 with `--allow-inconclusive`) or no verdict at all (the
stack did not start), 3 usage or configuration error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.cli import EXIT_USAGE, UsageErrorParser
from rollout.cluster import ClusterTarget, cluster_gate_variables
from rollout.gating import GateResult, PrometheusGates, load_gate_config
from rollout.local_stack import ArmSpec, LoadSpec, LocalStack, start_local_stack, wait_for_first_samples
from rollout.plan import get_profile
from rollout.processes import terminate
from rollout.report import collect_timeline, loadtest_table, plot_timeline, report_html
from rollout.routers.base import Weights
from rollout.routers.local_proxy import LocalProxyRouter

SCHEMA = "ci-gate-decision/v1"
EXIT_CODES = {"pass": 0, "fail": 1, "inconclusive": 2}
NO_VERDICT = 2  # the stack did not start or the evaluation could not run: missing data never passes
USAGE = EXIT_USAGE
# Gate parameters and demo load of the quick rollout profile: sized for CPU-only backends on a small
# CI runner (widened absolute latency bounds, memory-leak sampling that fits a minute-long window).
SIZING_PROFILE = "quick"
Say = Callable[[str], None]


def _say(line: str) -> None:
    print(line, flush=True)  # CI logs show progress as it happens


def _check_split(canary_weight: int) -> None:
    """Both modes measure the two arms side by side, so each must get some of the traffic."""
    if not 0 < canary_weight < 100:
        raise ValueError(f"canary_weight={canary_weight!r} must be in 1..99 (both arms need samples)")


@dataclass(frozen=True)
class CiGateOptions:
    arms: dict[str, ArmSpec]  # "baseline" and "canary" (the candidate)
    rate: float  # offered requests per second, Poisson arrivals, through the router
    duration_s: float  # the measurement window the gates judge
    warmup_s: float  # load before the window, left out of it
    reports_dir: Path
    canary_weight: int = 50
    gate_file: Path | None = None
    seed: int = 1
    allow_inconclusive: bool = False
    junit_path: Path | None = None  # default: <report dir>/junit.xml
    step_summary: Path | None = None  # GitHub's $GITHUB_STEP_SUMMARY: the summary is appended there
    github_output: Path | None = None  # GitHub's $GITHUB_OUTPUT: verdict and report paths for later steps

    def __post_init__(self) -> None:
        if set(self.arms) != {"baseline", "canary"}:
            raise ValueError(f"arms must be baseline and canary, got {sorted(self.arms)}")
        for key in ("rate", "duration_s"):
            if not getattr(self, key) > 0:
                raise ValueError(f"{key}={getattr(self, key)!r} must be > 0")
        if self.warmup_s < 0:
            raise ValueError(f"warmup_s={self.warmup_s!r} must be >= 0")
        _check_split(self.canary_weight)


@dataclass(frozen=True)
class ClusterGateOptions:
    """Cluster mode: the arms are the release's Deployments; the load is whatever reaches its Gateway."""

    target: ClusterTarget  # namespace, release, context and the chart's names; prometheus_url required
    duration_s: float
    warmup_s: float
    reports_dir: Path
    canary_weight: int = 50
    gate_file: Path | None = None
    offered_rps: float | None = None  # the rate reaching the Gateway, when known (throughput gate)
    settle_s: float = 15.0  # after the window: the cluster's last scrape of it lands (15 s scrape interval)
    allow_inconclusive: bool = False
    junit_path: Path | None = None
    step_summary: Path | None = None
    github_output: Path | None = None

    def __post_init__(self) -> None:
        self.target.require_prometheus()
        if not self.duration_s > 0:
            raise ValueError(f"duration_s={self.duration_s!r} must be > 0")
        for key in ("warmup_s", "settle_s"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key}={getattr(self, key)!r} must be >= 0")
        if self.offered_rps is not None and not self.offered_rps > 0:
            raise ValueError(f"offered_rps={self.offered_rps!r} must be > 0")
        _check_split(self.canary_weight)


@dataclass(frozen=True)
class CiGateOutcome:
    verdict: str  # pass | fail | inconclusive
    exit_code: int
    reason: str
    failed_gates: tuple[str, ...]
    inconclusive_gates: tuple[str, ...]
    report_dir: Path
    junit_path: Path


def single_shot_config(gate_file: Path | None, *, gate_profile: str = "local") -> Any:
    """The gate file, every gate deciding on this one evaluation; locally with the sizing profile's overrides
    (CPU-only backends on a runner), on a cluster as shipped (the orchestrator's bounds for real servers).

    A rollout needs `consecutive_failures` failing evaluations in a row; the CI gate evaluates exactly
    once, so a failing gate fails the check there (otherwise a regression could only ever be
    inconclusive).
    """
    config = load_gate_config(gate_file, gate_profile=gate_profile)  # validates the file
    if gate_profile == "local":
        names = {g.name for g in config.gates}
        sizing = {n: p for n, p in get_profile(SIZING_PROFILE).gate_overrides.items() if n in names}
        config = load_gate_config(gate_file, gate_profile=gate_profile, overrides=sizing or None)
    gates = tuple(dataclasses.replace(g, consecutive_failures=1) for g in config.gates)
    return dataclasses.replace(config, gates=gates)


def exit_code_for(verdict: str, *, allow_inconclusive: bool) -> int:
    if verdict == "inconclusive" and allow_inconclusive:
        return 0
    return EXIT_CODES[verdict]


def _sleep_with_progress(
    until: float, label: str, say: Say, stack: LocalStack | None = None, every_s: float = 10.0
) -> None:
    while (left := until - time.time()) > 0:
        time.sleep(min(every_s, left))
        dead = stack.dead_parts() if stack is not None else []
        note = f" (no longer running: {', '.join(dead)})" if dead else ""
        say(f"{label}: {max(0.0, until - time.time()):4.0f}s left{note}")


def _local_load_text(rate: float) -> str:
    return f"{rate:g} req/s offered (Poisson)"


def _gate_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    return [g for g in record.get("gates", []) if isinstance(g, dict)]


def summary_markdown(decision: dict[str, Any]) -> str:
    verdict = decision["verdict"]
    icon = {"pass": "PASS", "fail": "FAIL", "inconclusive": "INCONCLUSIVE"}.get(verdict, verdict.upper())
    window = decision["window"]
    lines = [
        f"# Canary CI gate: **{icon}**",
        "",
        f"- Reason: {decision['reason']}",
        f"- Exit code: {decision['exit_code']}",
        f"- Baseline: {decision['arms']['baseline']}",
        f"- Candidate: {decision['arms']['canary']}",
        f"- Load: {decision.get('load') or _local_load_text(decision['rate'])}, split "
        f"{100 - decision['canary_weight']}/{decision['canary_weight']} baseline/candidate; "
        f"warm-up {decision['warmup_s']:g} s excluded; window {window['seconds']:.0f} s",
    ]
    if decision.get("route_restore_error"):
        lines.append(f"- **Route NOT restored to 100% baseline**: {decision['route_restore_error']}")
    if decision["failed_gates"]:
        lines.append(f"- Failed gate(s): {', '.join(decision['failed_gates'])}")
    if decision["inconclusive_gates"]:
        lines.append(f"- Inconclusive gate(s): {', '.join(decision['inconclusive_gates'])}")
    rows = _gate_rows(decision.get("evaluation") or {})
    if rows:
        lines += ["", "| gate | verdict | samples (baseline/candidate) | reason |", "|---|---|---|---|"]
        for g in rows:
            samples = g.get("samples") or {}
            counts = "/".join(
                "-" if samples.get(arm) is None else f"{float(samples[arm]):.0f}"
                for arm in ("baseline", "canary")
            )
            reason = str(g.get("reason", "")).replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {g.get('name')} | **{g.get('verdict')}** | {counts} | {reason} |")
    lines += loadtest_table(decision.get("loadtest_summary"), "## Client-side load (Locust, whole run)")
    lines += ["", "Every gate's queries, values per arm, thresholds and intervals: `decision.json`."]
    return "\n".join(lines) + "\n"


def junit_xml(decision: dict[str, Any]) -> bytes:
    """One test case per gate: fail is a failure; inconclusive a failure too unless allowed (then skipped)."""
    rows = _gate_rows(decision.get("evaluation") or {})
    suite = ET.Element("testsuite", name="canary-ci-gate", tests=str(max(1, len(rows))))
    failures = skipped = 0
    if not rows:  # no evaluation at all: one failing case that says why
        case = ET.SubElement(suite, "testcase", classname="canary-ci-gate", name="evaluation")
        ET.SubElement(case, "failure", message=str(decision["reason"]))
        failures = 1
    for g in rows:
        case = ET.SubElement(suite, "testcase", classname="canary-ci-gate", name=str(g.get("name")))
        verdict, reason = str(g.get("verdict")), str(g.get("reason", ""))
        if verdict == "fail" or (verdict == "inconclusive" and not decision["allow_inconclusive"]):
            ET.SubElement(case, "failure", message=f"{verdict}: {reason}", type=verdict).text = json.dumps(
                {k: g.get(k) for k in ("values", "threshold", "confidence_interval", "samples")}, default=str
            )
            failures += 1
        elif verdict == "inconclusive":
            ET.SubElement(case, "skipped", message=f"inconclusive: {reason}")
            skipped += 1
    suite.set("failures", str(failures))
    suite.set("skipped", str(skipped))
    suite.set("errors", "0")
    return ET.tostring(suite, encoding="utf-8", xml_declaration=True)


def _arm_text(spec: ArmSpec) -> str:
    if spec.url is not None:
        return f"server at {spec.url}"
    if spec.command is not None:
        return f"command `{spec.command}`"
    extra = f" {' '.join(spec.extra_args)}" if spec.extra_args else ""
    return f"embedded backend, mm-input mode `{spec.mm_input_mode}`, TP={spec.tp_size}{extra}"


def write_outputs(
    decision: dict[str, Any],
    run_dir: Path,
    options: CiGateOptions | ClusterGateOptions,
    timeline: dict[str, Any] | None,
    panels: tuple[Any, ...] | None = None,
) -> Path:
    """decision.json, summary.md, junit.xml, report.html (+ timeline.png); the summary also to GitHub's."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "decision.json").write_text(json.dumps(decision, indent=1, default=str) + "\n")
    summary = summary_markdown(decision)
    (run_dir / "summary.md").write_text(summary)
    junit_path = options.junit_path or run_dir / "junit.xml"
    junit_path.parent.mkdir(parents=True, exist_ok=True)
    junit_path.write_bytes(junit_xml(decision))
    # The rollout report's plot and page, with the run as one step at the fixed split.
    page = {
        "run_id": decision["run_id"],
        "outcome": decision["verdict"],
        "reason": decision["reason"],
        "started_at": decision["started_at"],
        "finished_at": decision["finished_at"],
        "steps": [{"started_at": decision["window"]["start"], "canary_weight": decision["canary_weight"]}],
    }
    png = plot_timeline(page, timeline or {}, panels or _panels())
    (run_dir / "timeline.png").write_bytes(png)
    (run_dir / "report.html").write_text(report_html(page, summary, png))
    if options.step_summary is not None:
        with options.step_summary.open("a") as out:
            out.write(summary)
    if options.github_output is not None:
        with options.github_output.open("a") as out:
            out.write(f"verdict={decision['verdict']}\nreport-dir={run_dir}\njunit={junit_path}\n")
    return junit_path


def _panels():
    from rollout.report import LOCAL_PANELS

    return LOCAL_PANELS


def evaluate_once(
    gates: PrometheusGates, *, start: float, end: float, weights: Weights, say: Say
) -> tuple[dict[str, Any], str, str]:
    """The one evaluation a CI gate makes (no earlier evaluations: no hysteresis); prints each gate's verdict."""
    result: GateResult = gates.evaluate(start=start, end=end, weights=weights, previous=[])
    for name, verdict in result.gate_verdicts:
        say(f"  {name}: {verdict}")
    return result.record, result.verdict, str(result.record.get("reason") or result.verdict)


def _teardown(stack: LocalStack, router: LocalProxyRouter, say: Say) -> None:
    stack.stop(("prometheus", "canary", "baseline"), say=say)
    if router.process is not None:
        say(f"stopping router (pid {router.process.pid})")
        terminate(router.process)


def _interrupt_on_sigterm(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_ci_gate(options: CiGateOptions, *, say: Say = _say) -> CiGateOutcome:
    """Start, split, warm up, measure, evaluate once, report, stop everything (also on errors).

    A cancelled CI job gets SIGTERM: it is turned into KeyboardInterrupt so the stack, whose processes
    run in sessions of their own, is stopped and the report written before the job goes.
    """
    return _sigterm_as_interrupt(lambda: _run_ci_gate(options, say=say))


def _sigterm_as_interrupt(run: Callable[[], CiGateOutcome]) -> CiGateOutcome:
    if threading.current_thread() is not threading.main_thread():
        return run()
    previous = signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    try:
        return run()
    finally:
        signal.signal(signal.SIGTERM, previous)


def _ignore_sigterm() -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the teardown short


def _run_ci_gate(options: CiGateOptions, *, say: Say) -> CiGateOutcome:
    from rollout.runner import new_run_id

    config = single_shot_config(options.gate_file)  # a bad gate file is a usage error before anything runs
    profile = get_profile(SIZING_PROFILE)
    run_id = new_run_id()
    run_dir = options.reports_dir / run_id
    started_at = time.time()
    say(
        f"ci-gate {run_id}: {options.rate:g} req/s, split {100 - options.canary_weight}/{options.canary_weight}, "
        f"warm-up {options.warmup_s:g} s, window {options.duration_s:g} s"
    )
    stack, router = start_local_stack(
        run_dir=run_dir,
        arms=options.arms,
        load=LoadSpec(rate=options.rate, seed=options.seed, extra_args=profile.loadtest_args),
        say=say,
    )
    weights = Weights.for_canary(options.canary_weight)
    record: dict[str, Any] = {}
    verdict, reason = "inconclusive", "no evaluation"
    window = {"start": started_at, "end": started_at, "seconds": 0.0}
    try:
        router.set_weights(weights.baseline, weights.canary)
        wait_for_first_samples(stack)
        start = time.time() + options.warmup_s
        end = start + options.duration_s
        window = {"start": start, "end": end, "seconds": options.duration_s}
        _sleep_with_progress(start, "warm-up", say, stack)
        _sleep_with_progress(end, "measuring", say, stack)
        time.sleep(2.0)  # the last scrape of the window lands (scrape interval 1 s)
        gates = PrometheusGates(
            config=config,
            prometheus_url=stack.prometheus_url,
            offered_rps=options.rate,
            loadtest_samples=stack.requests_jsonl,
        )
        record, verdict, reason = evaluate_once(gates, start=start, end=end, weights=weights, say=say)
    except BaseException as exc:  # the report still says what happened; missing data never passes
        reason = f"evaluation did not complete: {type(exc).__name__}: {exc}"
        say(reason)
        raise
    finally:
        _ignore_sigterm()
        stack.stop(("loadtest",), say=say)
        summary_path = Path(stack.loadtest.get("summary_json", ""))
        loadtest_summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
        finished_at = time.time()
        timeline = collect_timeline(stack.prometheus_url, started_at, finished_at)
        decision = build_decision(
            run_id=run_id,
            verdict=verdict,
            reason=reason,
            record=record,
            allow_inconclusive=options.allow_inconclusive,
            arms={arm: _arm_text(spec) for arm, spec in options.arms.items()},
            load=_local_load_text(options.rate),
            canary_weight=options.canary_weight,
            warmup_s=options.warmup_s,
            window=window,
            started_at=started_at,
            finished_at=finished_at,
            rate=options.rate,
            loadtest_summary=loadtest_summary,
        )
        junit_path = write_outputs(decision, run_dir, options, timeline)
        _teardown(stack, router, say)
        say(f"{verdict}: {reason}")
        say(f"report: {run_dir}/summary.md, junit: {junit_path}")
    return outcome_of(decision, run_dir, junit_path)


def build_decision(
    *,
    run_id: str,
    verdict: str,
    reason: str,
    record: dict[str, Any],
    allow_inconclusive: bool,
    arms: dict[str, str],
    load: str,
    canary_weight: int,
    warmup_s: float,
    window: dict[str, float],
    started_at: float,
    finished_at: float,
    **extra: Any,
) -> dict[str, Any]:
    """`decision.json` of either mode: the verdict, its exit code and the gates behind it."""
    gate_verdicts = [(str(g.get("name")), str(g.get("verdict"))) for g in _gate_rows(record)]
    return {
        "schema": SCHEMA,
        "run_id": run_id,
        "verdict": verdict,
        "exit_code": exit_code_for(verdict, allow_inconclusive=allow_inconclusive),
        "reason": reason,
        "failed_gates": [n for n, v in gate_verdicts if v == "fail"],
        "inconclusive_gates": [n for n, v in gate_verdicts if v == "inconclusive"],
        "allow_inconclusive": allow_inconclusive,
        "arms": arms,
        "load": load,
        "canary_weight": canary_weight,
        "warmup_s": warmup_s,
        "window": window,
        "started_at": started_at,
        "finished_at": finished_at,
        "evaluation": record,
        **extra,
    }


def outcome_of(decision: dict[str, Any], run_dir: Path, junit_path: Path) -> CiGateOutcome:
    return CiGateOutcome(
        verdict=decision["verdict"],
        exit_code=decision["exit_code"],
        reason=decision["reason"],
        failed_gates=tuple(decision["failed_gates"]),
        inconclusive_gates=tuple(decision["inconclusive_gates"]),
        report_dir=run_dir,
        junit_path=junit_path,
    )


def add_arguments(parser: argparse.ArgumentParser, *, baseline_mode: str) -> None:
    """The ci-gate options. Candidate options land on the `canary_*` names the stack's ArmSpec uses."""
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
        default=env("CI_GATE_DURATION", "60"),
        help="measurement window in seconds (default 60; at 20 req/s 50/50 about 600 samples per arm)",
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
    for flag, dest, default in (("baseline", "baseline", baseline_mode), ("candidate", "canary", None)):
        parser.add_argument(
            f"--{flag}-cmd", dest=f"{dest}_cmd", help="command line serving it; {port} filled in"
        )
        parser.add_argument(f"--{flag}-url", dest=f"{dest}_url", help="an already running server")
        parser.add_argument(
            f"--{flag}-mode",
            dest=f"{dest}_mode",
            default=default,
            help=f"embedded backend --mm-input-mode (default {default or 'the recommended mode'})",
        )
        parser.add_argument(f"--{flag}-cpu-cores", dest=f"{dest}_cpu_cores", type=float, default=None)
        parser.add_argument(
            f"--{flag}-args",
            dest=f"{dest}_args",
            default="",
            help="extra backend flags, e.g. rehearsal faults",
        )
    parser.add_argument("--tp-size", type=int, default=2)
    cluster = parser.add_argument_group("cluster mode (the chart's release already runs both images)")
    cluster.add_argument("--kube-namespace", default=None, help="the release's namespace")
    cluster.add_argument("--release", default=None, help="the chart's Helm release name")
    cluster.add_argument("--kube-context", default=None, help="kubeconfig context (default: current)")
    cluster.add_argument(
        "--prometheus-url", default=None, help="the cluster's Prometheus (default $ROLLOUT_PROMETHEUS_URL)"
    )
    cluster.add_argument(
        "--settle",
        type=float,
        default=env("CI_GATE_SETTLE", "15"),
        help="seconds after the window before evaluating, so its last scrape lands (default 15)",
    )


LOCAL_RATE = 20.0
LOCAL_ONLY_FLAGS = (
    "baseline_cmd",
    "baseline_url",
    "baseline_args",
    "canary_cmd",
    "canary_url",
    "canary_args",
)


def _github_files() -> dict[str, Path | None]:
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    output = os.environ.get("GITHUB_OUTPUT")
    return {
        "step_summary": Path(summary) if summary else None,
        "github_output": Path(output) if output else None,
    }


def cluster_options_from_args(args: argparse.Namespace) -> ClusterGateOptions | None:
    """Cluster mode when --kube-namespace or --release is given (both are needed), else None."""
    if not args.kube_namespace and not args.release:
        return None
    if not (args.kube_namespace and args.release):
        raise ValueError("cluster mode needs both --kube-namespace and --release")
    local = [f"--{name.replace('canary', 'candidate').replace('_', '-')}" for name in LOCAL_ONLY_FLAGS]
    given = [flag for name, flag in zip(LOCAL_ONLY_FLAGS, local, strict=True) if getattr(args, name)]
    if given:
        raise ValueError(
            f"{', '.join(given)}: local-mode options; in cluster mode the arms are the release's"
        )
    target = ClusterTarget.resolve(
        namespace=args.kube_namespace,
        release=args.release,
        context=args.kube_context,
        prometheus_url=args.prometheus_url,
    )
    return ClusterGateOptions(
        target=target,
        duration_s=args.duration,
        warmup_s=args.warmup,
        reports_dir=args.reports_dir,
        canary_weight=args.candidate_weight,
        gate_file=args.gate_file,
        offered_rps=args.rate,
        settle_s=args.settle,
        allow_inconclusive=args.allow_inconclusive,
        junit_path=args.junit,
        **_github_files(),
    )


def options_from_args(args: argparse.Namespace, arms: dict[str, ArmSpec]) -> CiGateOptions:
    return CiGateOptions(
        arms=arms,
        rate=LOCAL_RATE if args.rate is None else args.rate,
        duration_s=args.duration,
        warmup_s=args.warmup,
        reports_dir=args.reports_dir,
        canary_weight=args.candidate_weight,
        gate_file=args.gate_file,
        seed=args.seed,
        allow_inconclusive=args.allow_inconclusive,
        junit_path=args.junit,
        **_github_files(),
    )


def run_from_args(args: argparse.Namespace, arms: dict[str, ArmSpec], *, say: Say = _say) -> int:
    """The command's exit code; a bad option or gate file is USAGE, a stack that never served NO_VERDICT."""
    try:
        cluster = cluster_options_from_args(args)
        if cluster is not None:
            outcome = run_cluster_ci_gate(cluster, say=say)
        else:
            outcome = run_ci_gate(options_from_args(args, arms), say=say)
    except ValueError as exc:  # GateConfigError is one: bad key or value, named
        print(f"ci-gate: {exc}", file=sys.stderr)
        return USAGE
    except KeyboardInterrupt as exc:
        print(f"ci-gate: cancelled ({exc or 'SIGINT'}): no verdict", file=sys.stderr)
        return NO_VERDICT
    except Exception as exc:  # an error of the gate job itself is no verdict, never a regression (exit 1)
        import traceback

        traceback.print_exc()
        print(f"ci-gate: no verdict: {type(exc).__name__}: {exc}", file=sys.stderr)
        return NO_VERDICT
    return outcome.exit_code


def console_main(argv: list[str] | None = None) -> int:
    """`canary-ci-gate`: the same as `python -m rollout ci-gate`, with usage errors exiting 3."""
    from rollout.__main__ import _arm_spec
    from rollout.local_stack import BASELINE_MODE

    parser = UsageErrorParser(prog="canary-ci-gate", description=__doc__.split("\n\n")[0])
    add_arguments(parser, baseline_mode=BASELINE_MODE)
    args = parser.parse_args(argv)
    return run_from_args(args, {arm: _arm_spec(args, arm) for arm in ("baseline", "canary")})


RESTORE_ATTEMPTS = 3
RESTORE_PAUSE_S = 2.0


def restore_baseline(router: Any, say: Say) -> str | None:
    """Route 100% to the baseline, retried; None when done, else the last error (reported, never hidden)."""
    error = None
    for attempt in range(1, RESTORE_ATTEMPTS + 1):
        try:
            router.set_weights(100, 0)
            say(f"route restored: 100% baseline ({router.describe().get('route')})")
            return None
        except Exception as exc:  # the API server may blip; a restore is worth a retry
            error = f"{type(exc).__name__}: {exc}"
            say(f"restoring the route (attempt {attempt}/{RESTORE_ATTEMPTS}) failed: {error}")
            if attempt < RESTORE_ATTEMPTS:
                time.sleep(RESTORE_PAUSE_S)
    return error


def run_cluster_ci_gate(options: ClusterGateOptions, *, say: Say = _say, router: Any = None) -> CiGateOutcome:
    """Split the release's HTTPRoute, warm up, measure, evaluate once, report; the route always ends at
    100% baseline (pass, fail, error, SIGTERM). `router` defaults to the release's HTTPRouteRouter."""
    return _sigterm_as_interrupt(lambda: _run_cluster_ci_gate(options, say=say, router=router))


def _run_cluster_ci_gate(options: ClusterGateOptions, *, say: Say, router: Any) -> CiGateOutcome:
    from gates.config import load_gate_file
    from rollout.report import kubernetes_panels
    from rollout.routers.httproute import HTTPRouteRouter
    from rollout.runner import new_run_id

    target = options.target
    prometheus_url = target.require_prometheus()
    # The orchestrator's gates and variables (release namespace, per-arm pod regex), evaluated once.
    config = single_shot_config(options.gate_file, gate_profile="kubernetes")
    variables = cluster_gate_variables(
        target,
        file_variables=config.variables,
        packaged_variables=load_gate_file(None, profile="kubernetes").variables,
    )
    if router is None:
        router = HTTPRouteRouter(
            namespace=target.namespace,
            route=target.route,
            services={"baseline": target.baseline_service, "canary": target.canary_service},
            context=target.context,
        )
    run_id = new_run_id()
    run_dir = options.reports_dir / run_id
    started_at = time.time()
    weights = Weights.for_canary(options.canary_weight)
    say(
        f"ci-gate {run_id} on HTTPRoute {target.namespace}/{target.route}: split "
        f"{weights.baseline}/{weights.canary}, warm-up {options.warmup_s:g} s, window {options.duration_s:g} s"
    )
    say(f"gate variables: {variables}")
    record: dict[str, Any] = {}
    verdict, reason = "inconclusive", "no evaluation"
    window = {"start": started_at, "end": started_at, "seconds": 0.0}
    restore_error: str | None = None
    try:
        router.set_weights(weights.baseline, weights.canary)
        start = time.time() + options.warmup_s
        end = start + options.duration_s
        window = {"start": start, "end": end, "seconds": options.duration_s}
        _sleep_with_progress(start, "warm-up", say)
        _sleep_with_progress(end, "measuring", say)
        _sleep_with_progress(end + options.settle_s, "last scrape", say)
        gates = PrometheusGates(
            config=config, prometheus_url=prometheus_url, offered_rps=options.offered_rps, variables=variables
        )
        record, verdict, reason = evaluate_once(gates, start=start, end=end, weights=weights, say=say)
    except BaseException as exc:  # the report still says what happened; missing data never passes
        reason = f"evaluation did not complete: {type(exc).__name__}: {exc}"
        say(reason)
        raise
    finally:
        _ignore_sigterm()
        restore_error = restore_baseline(router, say)
        if restore_error is not None and verdict != "fail":
            # Traffic left on the candidate is no pass: the job reports an error (2), a fail stays 1.
            verdict, reason = (
                "inconclusive",
                f"{reason}; route not restored to 100% baseline: {restore_error}",
            )
        finished_at = time.time()
        panels = kubernetes_panels(variables)  # this release's pods only
        timeline = collect_timeline(prometheus_url, started_at, finished_at, panels)
        decision = build_decision(
            run_id=run_id,
            verdict=verdict,
            reason=reason,
            record=record,
            allow_inconclusive=options.allow_inconclusive and restore_error is None,
            arms={
                "baseline": f"Deployment {target.namespace}/{target.baseline_deployment}",
                "canary": f"Deployment {target.namespace}/{target.canary_deployment}",
            },
            load=(
                f"traffic reaching the Gateway ({options.offered_rps:g} req/s offered)"
                if options.offered_rps
                else "traffic reaching the Gateway (rate not given: throughput compared per unit of traffic)"
            ),
            canary_weight=options.canary_weight,
            warmup_s=options.warmup_s,
            window=window,
            started_at=started_at,
            finished_at=finished_at,
            cluster={
                "namespace": target.namespace,
                "release": target.release,
                "context": target.context,
                "route": target.route,
                "prometheus_url": prometheus_url,
                "gate_variables": variables,
            },
            route_restored=restore_error is None,
            route_restore_error=restore_error,
        )
        junit_path = write_outputs(decision, run_dir, options, timeline, panels)
        say(f"{decision['verdict']}: {decision['reason']}")
        say(f"report: {run_dir}/summary.md, junit: {junit_path}")
    return outcome_of(decision, run_dir, junit_path)

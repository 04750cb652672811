"""`python -m rollout ci-gate` (console script `canary-ci-gate`): the gates as a pull-request check.

One function over a site (`gate_once`). Local (default): starts both arms on this machine (the local
stack of `rollout run`: embedded backends, commands or URLs, the weighted router, a real Prometheus,
Locust at the offered rate). Cluster (`--kube-namespace` and `--release`): the chart's release already
runs both images and the load is whatever reaches its Gateway. Either way: fix the traffic split (50/50
by default, so both arms get equal samples), wait the warm-up and the measurement window, evaluate the
gates once over that window (warm-up excluded, every gate deciding at once), put the route back to
100% baseline, and write the Markdown summary (also to `$GITHUB_STEP_SUMMARY` when set), the report
directory and JUnit XML.

Exit codes: 0 pass, 1 fail, 2 inconclusive (0 with `--allow-inconclusive`) or no verdict at all (the
stack did not start), 3 usage or configuration error.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gates.config import GateConfig
from gates.record import Evaluation, Verdict
from gates.report import gate_table, to_junit
from rollout.plan import get_profile
from rollout.report import (
    PanelData,
    RunOutline,
    collect_timeline,
    loadtest_table,
    plot_timeline,
    report_html,
)
from rollout.routers.base import RouterUnavailable, TrafficRouter, WeightCheck, Weights
from rollout.run import new_run_id
from rollout.sites.base import Site
from rollout.traffic import BASELINE_ONLY, move_traffic

SCHEMA = "ci-gate-decision/v1"
NO_VERDICT = 2  # the stack did not start or the evaluation could not run: missing data never passes
# Gate parameters and demo load of the quick rollout profile: sized for CPU-only backends on a small
# CI runner (widened absolute latency bounds, memory-leak sampling that fits a minute-long window).
SIZING_PROFILE = "quick"
LOCAL_RATE = 20.0  # req/s the local stack offers when no rate is given
RESTORE_ATTEMPTS = 3
RESTORE_PAUSE_S = 2.0
Say = Callable[[str], None]


@dataclass(frozen=True)
class GateOnceOptions:
    duration_s: float  # the measurement window the gates judge
    warmup_s: float  # load before the window, left out of it
    reports_dir: Path
    canary_weight: int = 50
    gate_file: Path | None = None
    # Requests per second offered: the local stack's Locust rate; on a cluster the rate reaching the
    # Gateway when known (else the throughput gate compares the arms per unit of traffic only).
    offered_rps: float | None = None
    seed: int = 1
    settle_s: float | None = None  # after the window, before evaluating (default: the site's)
    allow_inconclusive: bool = False
    junit_path: Path | None = None  # default: <report dir>/junit.xml
    step_summary: Path | None = None  # GitHub's $GITHUB_STEP_SUMMARY: the summary is appended there
    github_output: Path | None = None  # GitHub's $GITHUB_OUTPUT: verdict and report paths for later steps

    def __post_init__(self) -> None:
        if not self.duration_s > 0:
            raise ValueError(f"duration_s={self.duration_s!r} must be > 0")
        for key in ("warmup_s", "settle_s"):
            value = getattr(self, key)
            if value is not None and value < 0:
                raise ValueError(f"{key}={value!r} must be >= 0")
        if self.offered_rps is not None and not self.offered_rps > 0:
            raise ValueError(f"offered_rps={self.offered_rps!r} must be > 0")
        # Both arms are measured side by side, so each must get some of the traffic.
        if not 0 < self.canary_weight < 100:
            raise ValueError(
                f"canary_weight={self.canary_weight!r} must be in 1..99 (both arms need samples)"
            )


@dataclass(frozen=True)
class CiGateDecision:
    """What `decision.json` holds: the verdict, its exit code and the one evaluation behind it."""

    run_id: str
    verdict: Verdict
    reason: str
    evaluation: Evaluation
    allow_inconclusive: bool
    arms: dict[str, str]
    load: str
    canary_weight: int
    warmup_s: float
    window: tuple[float, float]
    started_at: float
    finished_at: float
    site: dict[str, Any]
    gate_variables: dict[str, Any]
    route_restore_error: str | None = None
    loadtest_summary: dict[str, Any] | None = None

    @property
    def exit_code(self) -> int:
        if self.verdict is Verdict.INCONCLUSIVE and self.allow_inconclusive:
            return 0
        return self.verdict.exit_code

    def to_dict(self) -> dict[str, Any]:
        start, end = self.window
        return {
            "schema": SCHEMA,
            "run_id": self.run_id,
            "verdict": self.verdict.value,
            "exit_code": self.exit_code,
            "reason": self.reason,
            "failed_gates": list(self.evaluation.gates_with(Verdict.FAIL)),
            "inconclusive_gates": list(self.evaluation.gates_with(Verdict.INCONCLUSIVE)),
            "allow_inconclusive": self.allow_inconclusive,
            "arms": self.arms,
            "load": self.load,
            "canary_weight": self.canary_weight,
            "warmup_s": self.warmup_s,
            "window": {"start": start, "end": end, "seconds": end - start},
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "site": self.site,
            "gate_variables": self.gate_variables,
            "route_restored": self.route_restore_error is None,
            "route_restore_error": self.route_restore_error,
            "evaluation": self.evaluation.to_dict(),
            "loadtest_summary": self.loadtest_summary,
        }


@dataclass(frozen=True)
class CiGateOutcome:
    verdict: Verdict
    exit_code: int
    reason: str
    failed_gates: tuple[str, ...]
    inconclusive_gates: tuple[str, ...]
    report_dir: Path
    junit_path: Path


def single_shot_config(config: GateConfig) -> GateConfig:
    """Every gate deciding on this one evaluation.

    A rollout needs `consecutive_failures` failing evaluations in a row; the CI gate evaluates exactly
    once, so a failing gate fails the check there (otherwise a regression could only ever be
    inconclusive).
    """
    gates = tuple(dataclasses.replace(g, consecutive_failures=1) for g in config.gates)
    return dataclasses.replace(config, gates=gates)


def ci_gate_config(site: Site, gate_file: Path | None) -> GateConfig:
    """The gate file on this site, sized like the quick profile where the site applies sizing."""
    observability = site.observability
    names = {g.name for g in observability.gate_config(gate_file, None).gates}  # validates the file first
    sizing = {n: p for n, p in get_profile(SIZING_PROFILE).gate_overrides.items() if n in names}
    return single_shot_config(observability.gate_config(gate_file, sizing))


def summary_markdown(decision: CiGateDecision) -> str:
    """The job summary: the check's header, then the gates' own per-gate table and the client load."""
    start, end = decision.window
    lines = [
        f"# Canary CI gate: **{decision.verdict.mark}**",
        "",
        f"- Reason: {decision.reason}",
        f"- Exit code: {decision.exit_code}",
        f"- Baseline: {decision.arms['baseline']}",
        f"- Candidate: {decision.arms['canary']}",
        f"- Load: {decision.load}, split {100 - decision.canary_weight}/{decision.canary_weight} "
        f"baseline/candidate; warm-up {decision.warmup_s:g} s excluded; window {end - start:.0f} s",
    ]
    if decision.route_restore_error:
        lines.append(f"- **Route NOT restored to 100% baseline**: {decision.route_restore_error}")
    failed = decision.evaluation.gates_with(Verdict.FAIL)
    inconclusive = decision.evaluation.gates_with(Verdict.INCONCLUSIVE)
    if failed:
        lines.append(f"- Failed gate(s): {', '.join(failed)}")
    if inconclusive:
        lines.append(f"- Inconclusive gate(s): {', '.join(inconclusive)}")
    dry = decision.evaluation.dry_run_gates()
    if dry:
        shown = ", ".join(f"{g.name} {g.verdict}" for g in dry)
        lines.append(f"- Dry-run gate(s), recorded, not deciding: {shown}")
    if decision.evaluation.gates:
        lines += ["", *gate_table(decision.evaluation.gates)]
    lines += loadtest_table(decision.loadtest_summary, "## Client-side load (Locust, whole run)")
    lines += ["", "Every gate's queries, values per arm, thresholds and intervals: `decision.json`."]
    return "\n".join(lines) + "\n"


def junit_xml(decision: CiGateDecision) -> str:
    """One test case per gate: fail is a failure; inconclusive a failure too unless allowed (then skipped)."""
    evaluation = decision.evaluation
    if not evaluation.gates:  # no evaluation at all: the one failing case says why
        evaluation = dataclasses.replace(evaluation, reason=decision.reason)
    return to_junit(
        evaluation, suite_name="canary-ci-gate", inconclusive_fails=not decision.allow_inconclusive
    )


def write_outputs(
    decision: CiGateDecision,
    run_dir: Path,
    options: GateOnceOptions,
    timeline: Sequence[PanelData] | None,
    weights: tuple[tuple[float, Weights], ...] = (),
) -> Path:
    """decision.json, summary.md, junit.xml, report.html (+ timeline.png); the summary also to GitHub's.
    `weights`: when the split was set and the route restored, drawn under the gates' panels."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "decision.json").write_text(json.dumps(decision.to_dict(), indent=1, default=str) + "\n")
    summary = summary_markdown(decision)
    (run_dir / "summary.md").write_text(summary)
    junit_path = options.junit_path or run_dir / "junit.xml"
    junit_path.parent.mkdir(parents=True, exist_ok=True)
    junit_path.write_text(junit_xml(decision))
    # The rollout report's plot and page, with the run as one step at the fixed split.
    outline = RunOutline(
        run_id=decision.run_id,
        outcome=decision.verdict.value,
        reason=decision.reason,
        started_at=decision.started_at,
        finished_at=decision.finished_at,
        steps=((decision.window[0], decision.canary_weight),),
        weights=weights,
    )
    png = plot_timeline(outline, timeline or ())
    (run_dir / "timeline.png").write_bytes(png)
    (run_dir / "report.html").write_text(report_html(outline, summary, png))
    if options.step_summary is not None:
        with options.step_summary.open("a") as out:
            out.write(summary)
    if options.github_output is not None:
        with options.github_output.open("a") as out:
            out.write(f"verdict={decision.verdict}\nreport-dir={run_dir}\njunit={junit_path}\n")
    return junit_path


def _sleep_with_progress(until: float, label: str, say: Say, site: Site, every_s: float = 10.0) -> None:
    while (left := until - time.time()) > 0:
        time.sleep(min(every_s, left))
        dead = site.serving.dead_parts()
        note = f" (no longer running: {', '.join(dead)})" if dead else ""
        say(f"{label}: {max(0.0, until - time.time()):4.0f}s left{note}")


def restore_baseline(router: TrafficRouter, say: Say) -> str | None:
    """Route 100% to the baseline, retried; None when done, else the last error (reported, never hidden)."""
    error = None
    for attempt in range(1, RESTORE_ATTEMPTS + 1):
        try:
            check = move_traffic(router, BASELINE_ONLY, "restoring the route")
            say(f"route restored: 100% baseline ({check.as_text()})")
            return None
        except Exception as exc:  # the API server may blip; a restore is worth a retry
            error = f"{type(exc).__name__}: {exc}"
            say(f"restoring the route (attempt {attempt}/{RESTORE_ATTEMPTS}) failed: {error}")
            if attempt < RESTORE_ATTEMPTS:
                time.sleep(RESTORE_PAUSE_S)
    return error


def _load_text(site: Site, offered_rps: float | None) -> str:
    if site.load is not None:
        return f"{offered_rps:g} req/s offered (Poisson)"
    if offered_rps:
        return f"traffic reaching the Gateway ({offered_rps:g} req/s offered)"
    return "traffic reaching the Gateway (rate not given: throughput compared per unit of traffic)"


def gate_once(site: Site, options: GateOnceOptions, *, say: Say = print) -> CiGateOutcome:
    """Start, split, warm up, measure, evaluate once, restore 100% baseline, report, stop (also on errors).

    A cancelled CI job gets SIGTERM: it is turned into KeyboardInterrupt so the site is put back and
    stopped (the local stack's processes run in sessions of their own) and the report written.
    """
    if threading.current_thread() is not threading.main_thread():
        return _gate_once(site, options, say)
    previous = signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    try:
        return _gate_once(site, options, say)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt_on_sigterm(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _ignore_sigterm() -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the teardown short


def _gate_once(site: Site, options: GateOnceOptions, say: Say) -> CiGateOutcome:
    config = ci_gate_config(site, options.gate_file)  # a bad gate file is a usage error before anything runs
    offered_rps = options.offered_rps
    if site.load is not None and offered_rps is None:
        offered_rps = LOCAL_RATE
    run_id = new_run_id()
    run_dir = options.reports_dir / run_id
    started_at = time.time()
    weights = Weights.for_canary(options.canary_weight)
    settle_s = site.observability.settle_s if options.settle_s is None else options.settle_s
    say(
        f"ci-gate {run_id} ({site.kind}): {_load_text(site, offered_rps)}, split "
        f"{weights.baseline}/{weights.canary}, warm-up {options.warmup_s:g} s, window {options.duration_s:g} s"
    )
    site.start(
        run_dir,
        rate=offered_rps,
        seed=options.seed,
        loadtest_args=get_profile(SIZING_PROFILE).loadtest_args,
        say=say,
    )
    gates = site.gates(config, offered_rps=offered_rps)  # the site's Prometheus: started just now locally
    if gates.variables:
        say(f"gate variables: {gates.variables}")
    window = (started_at, started_at)
    evaluation = Evaluation.unavailable(
        "not evaluated", start=started_at, end=started_at, weights=weights.as_dict(), at=started_at
    )
    reason = evaluation.reason
    moved: list[tuple[float, Weights]] = []  # the traffic weights as this run set them, for the plot
    try:
        # The measurement starts only once the split is in effect (a gateway applies a patch a moment later).
        check = move_traffic(site.router, weights, "the gate's split")
        moved.append((time.time(), weights))
        say(f"split {weights.baseline}/{weights.canary}: {check.as_text()}")
        if check.check is WeightCheck.DIFFERS:
            raise RouterUnavailable(f"split {weights.as_dict()} not in effect after 10 s: {check.reason}")
        site.observability.wait_for_data()
        start = time.time() + options.warmup_s
        end = start + options.duration_s
        window = (start, end)
        _sleep_with_progress(start, "warm-up", say, site)
        _sleep_with_progress(end, "measuring", say, site)
        _sleep_with_progress(end + settle_s, "last scrape", say, site)
        evaluation = gates.evaluate(start=start, end=end, weights=weights, streaks={})
        reason = evaluation.reason
        for g in evaluation.gates:
            say(f"  {g.name}: {g.verdict_text}")
    except BaseException as exc:  # the report still says what happened; missing data never passes
        reason = f"evaluation did not complete: {type(exc).__name__}: {exc}"
        say(reason)
        raise
    finally:
        _ignore_sigterm()
        restore_error = restore_baseline(site.router, say)
        if restore_error is None and moved:
            moved.append((time.time(), BASELINE_ONLY))
        verdict = evaluation.verdict  # the placeholder (inconclusive) when the evaluation did not complete
        if restore_error is not None and verdict is not Verdict.FAIL:
            # Traffic left on the candidate is no pass: the job reports an error (2), a fail stays 1.
            verdict, reason = (
                Verdict.INCONCLUSIVE,
                f"{reason}; route not restored to 100% baseline: {restore_error}",
            )
        loadtest_summary = None if site.load is None else site.load.stop(say)
        finished_at = time.time()
        prometheus_url = site.observability.prometheus_url
        timeline = collect_timeline(prometheus_url, config, gates.variables, started_at, finished_at)
        decision = CiGateDecision(
            run_id=run_id,
            verdict=verdict,
            reason=reason,
            evaluation=evaluation,
            allow_inconclusive=options.allow_inconclusive and restore_error is None,
            arms=site.serving.arms(),
            load=_load_text(site, offered_rps),
            canary_weight=options.canary_weight,
            warmup_s=options.warmup_s,
            window=window,
            started_at=started_at,
            finished_at=finished_at,
            site=site.serving.describe(),
            gate_variables=dict(gates.variables),
            route_restore_error=restore_error,
            loadtest_summary=loadtest_summary,
        )
        junit_path = write_outputs(decision, run_dir, options, timeline, tuple(moved))
        site.serving.teardown(say)
        say(f"{decision.verdict}: {decision.reason}")
        say(f"report: {run_dir}/summary.md, junit: {junit_path}")
    return CiGateOutcome(
        verdict=decision.verdict,
        exit_code=decision.exit_code,
        reason=decision.reason,
        failed_gates=decision.evaluation.gates_with(Verdict.FAIL),
        inconclusive_gates=decision.evaluation.gates_with(Verdict.INCONCLUSIVE),
        report_dir=run_dir,
        junit_path=junit_path,
    )

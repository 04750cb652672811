"""`rollout run`: start (or resume) a rollout, drive `advance()` once per interval, report, tear down.

Local (no cluster configured): starts the embedded stack and owns its lifetime. A resumed run (state
not terminal, run lock free because the previous orchestrator died) reattaches to the recorded stack.
"""

from __future__ import annotations

import getpass
import json
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rollout.controller import RolloutController, new_state, rollback_locked
from rollout.gating import GateEvaluator, PrometheusGates, load_gate_config
from rollout.hooks import Hook, parse_hooks
from rollout.local_stack import ArmSpec, LoadSpec, LocalStack, start_local_stack, wait_for_first_samples
from rollout.plan import Phase, Profile
from rollout.report import collect_timeline, write_report
from rollout.routers import router_from_description
from rollout.routers.base import RouterUnavailable, TrafficRouter
from rollout.state import FileStateStore, RolloutState, single_runner


def whoami() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


class TerminalProgress:
    """One line per event, plus a status line per interval: step, weight, each gate's latest verdict."""

    def __init__(self, out: Callable[[str], None] = print) -> None:
        self.out = out
        self.t0: float | None = None

    def stamp(self, state: RolloutState) -> str:
        self.t0 = self.t0 or state.started_at
        return f"[{time.time() - self.t0:6.0f}s]"

    def event(self, state: RolloutState, message: str) -> None:
        self.out(f"{self.stamp(state)} {message}")

    def status(self, state: RolloutState) -> None:
        if state.phase.terminal:
            return
        step = f"step {state.step_index + 1}/{len(state.steps)} {state.current_canary_weight:3d}% canary"
        baked = 0.0 if state.step_started_at is None else time.time() - state.step_started_at
        bake = state.profile["bake_s"][state.step_index]
        latest = state.evaluations[-1] if state.evaluations else None
        gates = (
            " ".join(f"{n}={v}" for n, v in latest["gate_verdicts"].items())
            if latest and latest["step"] == state.step_index
            else "no evaluation yet"
        )
        self.out(f"{self.stamp(state)} {step} | baked {baked:4.0f}/{bake:.0f}s | {gates}")


@dataclass(frozen=True)
class LocalRunOptions:
    profile: Profile
    state_dir: Path
    reports_dir: Path
    arms: dict[str, ArmSpec]
    gate_file: Path | None = None
    hooks: tuple[Hook, ...] = ()
    keep_stack: bool = False  # leave the stack running after the decision (for inspection)


class _Interrupted(Exception):
    pass


def _interruptible_sleep(stop: threading.Event, seconds: float) -> None:
    if stop.wait(max(0.0, seconds)):
        raise _Interrupted


ROUTER_RETRIES = 3  # intervals in a row the router may be unreachable before the orchestrator gives up


def drive(controller: RolloutController, progress: TerminalProgress, stop: threading.Event) -> RolloutState:
    """Call `advance()` at the step start plus whole intervals until the rollout is terminal.

    A router that cannot be reached holds the rollout (nothing is decided without it) for up to
    ROUTER_RETRIES intervals; then the error propagates and the caller rolls back.
    """
    state = controller.load()
    failures = 0
    first = True
    while first or not state.phase.terminal:
        if not first:
            interval = float(state.profile["interval_s"])
            anchor = state.step_started_at or time.time()
            # Next tick on the step's own grid, so evaluations land at step start + k intervals.
            ticks = max(1, int((time.time() - anchor) / interval) + 1)
            _interruptible_sleep(stop, anchor + ticks * interval - time.time())
        first = False
        try:
            state = controller.advance()
            failures = 0
        except RouterUnavailable as exc:
            failures += 1
            progress.event(state, f"router unavailable ({failures}/{ROUTER_RETRIES}), holding: {exc}")
            if failures >= ROUTER_RETRIES:
                raise
            continue
        progress.status(state)
    return state


def _stop_event_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, _frame: Any) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)
    return stop


def finish_local(
    state: RolloutState, stack: LocalStack, reports_dir: Path, *, say: Callable[[str], None], keep_stack: bool
) -> Path:
    """Stop the load (so its summary is written), take the plots, write the report, stop the rest."""
    stack.stop(("loadtest",), say=say)
    summary_path = Path(stack.loadtest.get("summary_json", ""))
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    timeline = collect_timeline(stack.prometheus_url, state.started_at, state.finished_at or time.time())
    run_dir = write_report(state, reports_dir, timeline=timeline, loadtest_summary=summary)
    if not keep_stack:
        stack.stop(("prometheus", "canary", "baseline"), say=say)
        router = router_from_description(state.router)
        process = getattr(router, "process", None)
        if process is not None:
            from rollout.processes import terminate

            say(f"stopping router (pid {process.pid})")
            terminate(process)
    return run_dir


def run_local(options: LocalRunOptions, *, say: Callable[[str], None] = print) -> RolloutState:
    store = FileStateStore(options.state_dir)
    progress = TerminalProgress(say)
    stop = _stop_event_on_signals()
    with single_runner(options.state_dir):
        existing = store.load()
        if existing is not None and not existing.phase.terminal:
            stack = LocalStack.from_dict(existing.stack)
            dead = stack.dead_parts()
            if dead:
                raise RuntimeError(
                    f"cannot resume rollout {existing.run_id}: {', '.join(dead)} no longer running; "
                    "run `python -m rollout rollback` to restore 100% baseline"
                )
            router: TrafficRouter = router_from_description(existing.router)
            say(
                f"resuming rollout {existing.run_id} at step {existing.step_index + 1} ({existing.phase.value})"
            )
            state = existing
        else:
            run_id = new_run_id()
            profile = options.profile
            say(
                f"rollout {run_id}: profile {profile.name}, steps {list(profile.steps)}% canary, {profile.request_rate:g} req/s"
            )
            stack, router = start_local_stack(
                run_dir=options.reports_dir / run_id,
                arms=options.arms,
                load=LoadSpec(rate=profile.request_rate, seed=profile.seed, extra_args=profile.loadtest_args),
                say=say,
            )
            state = new_state(
                run_id=run_id,
                profile=profile,
                router=router,
                stack=stack.as_dict(),
                now=time.time(),
                hooks=options.hooks,
            )
            store.save(state)
        profile_dict = state.profile
        config = load_gate_config(
            options.gate_file, gate_profile="local", overrides=profile_dict.get("gate_overrides") or None
        )
        gates: GateEvaluator = PrometheusGates(
            config=config,
            prometheus_url=stack.prometheus_url,
            offered_rps=float(profile_dict["request_rate"]),
            loadtest_samples=stack.requests_jsonl,
        )
        controller = RolloutController(
            store=store,
            router=router,
            gates=gates,
            hooks=parse_hooks({"hooks": list(state.hooks)}),  # as recorded when the run began
            progress=progress.event,
            hook_context={
                "baseline_url": stack.arms["baseline"]["url"],
                "canary_url": stack.arms["canary"]["url"],
                "router_url": stack.router_url,
                "prometheus_url": stack.prometheus_url,
            },
        )
        try:
            if state.phase is Phase.INITIALIZING:
                wait_for_first_samples(stack)  # no evaluation before Prometheus has scraped every target
            state = drive(controller, progress, stop)
        except _Interrupted:
            state = (
                controller.rollback(who=whoami(), reason="orchestrator interrupted (SIGINT/SIGTERM)") or state
            )
        except BaseException as exc:
            # Any failure of the orchestrator itself restores baseline before it gives up.
            say(f"orchestrator error: {type(exc).__name__}: {exc}; rolling back")
            state = controller.rollback(who="rollout", reason=f"orchestrator error: {exc}") or state
            finish_local(state, stack, options.reports_dir, say=say, keep_stack=options.keep_stack)
            raise
        run_dir = finish_local(state, stack, options.reports_dir, say=say, keep_stack=options.keep_stack)
        say(f"{state.outcome}: {state.reason}")
        say(f"report: {run_dir}/report.html")
        return state


def rollback_command(
    *, state_dir: Path, reports_dir: Path, who: str, reason: str, say: Callable[[str], None] = print
) -> RolloutState | None:
    """`rollout rollback`: 100% baseline from any state; idempotent; records who and why.

    Locally, when no orchestrator holds the run lock (it died, e.g. SIGKILL), the rollback also finishes
    its job: stops the load and the canary ("scale the canary down"), writes the report, stops Prometheus.
    The router and the baseline keep serving; `rollout down` stops them.
    """
    store = FileStateStore(state_dir)
    with store.locked():
        state = store.load()
        if state is None:
            raise RuntimeError(f"no rollout state at {store.describe()}: nothing to roll back")
        router = router_from_description(state.router)
        context = {}
        if state.stack.get("kind") == "local":
            stack = LocalStack.from_dict(state.stack)
            if state.phase.terminal and not stack.serving():
                # A finished run whose stack was stopped: no traffic to move, and restarting its router
                # in front of stopped arms would serve nothing. Record the request only.
                state = state.with_event(
                    time.time(),
                    "rollback",
                    who=who,
                    reason=reason,
                    weights_before="stack stopped",
                    verified="unknown",
                    changed=False,
                )
                store.save(state)
                say(
                    f"rollout {state.run_id} is {state.phase.value} and its local stack is stopped: nothing to move"
                )
                return state
            context = {
                "baseline_url": stack.arms["baseline"]["url"],
                "canary_url": stack.arms["canary"]["url"],
            }
        state = rollback_locked(
            state,
            router=router,
            hooks=parse_hooks({"hooks": list(state.hooks)}),
            who=who,
            reason=reason,
            outcome=Phase.ABORTED,
            now=time.time(),
            context=context,
        )
        assert state is not None
        store.save(state)
    say(f"traffic: 100% baseline (router {router.name}, verified: {state.events[-1].get('verified')})")
    if state.stack.get("kind") == "local" and _run_lock_free(state_dir):
        stack = LocalStack.from_dict(state.stack)
        stack.stop(("loadtest", "canary"), say=say)
        if not (reports_dir / state.run_id / "decision.json").exists() or state.events[-1].get("changed"):
            summary_path = Path(stack.loadtest.get("summary_json", ""))
            summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
            timeline = collect_timeline(
                stack.prometheus_url, state.started_at, state.finished_at or time.time()
            )
            run_dir = write_report(state, reports_dir, timeline=timeline, loadtest_summary=summary)
            say(f"report: {run_dir}/report.html")
        stack.stop(("prometheus",), say=say)
        say("router and baseline keep serving; `python -m rollout down` stops them")
    return state


def _run_lock_free(state_dir: Path) -> bool:
    try:
        with single_runner(state_dir):
            return True
    except RuntimeError:
        return False


def down_command(*, state_dir: Path, say: Callable[[str], None] = print) -> None:
    """Stop every local process the recorded rollout started (after a rollback or `--keep-stack`)."""
    store = FileStateStore(state_dir)
    state = store.load()
    if state is None or state.stack.get("kind") != "local":
        say("no local stack recorded")
        return
    if not _run_lock_free(state_dir):
        raise RuntimeError(
            "a rollout is running on this state; stop it (Ctrl-C rolls back) or run `rollback` first"
        )
    if not state.phase.terminal:
        raise RuntimeError(f"rollout {state.run_id} is {state.phase.value}; run `rollback` before `down`")
    stack = LocalStack.from_dict(state.stack)
    stack.stop(("loadtest", "canary", "prometheus", "baseline"), say=say)
    process = getattr(router_from_description(state.router), "process", None)
    if process is not None:
        from rollout.processes import terminate

        say(f"stopping router (pid {process.pid})")
        terminate(process)


@dataclass(frozen=True)
class ClusterRunOptions:
    profile: Profile
    target: Any  # rollout.cluster.ClusterTarget
    reports_dir: Path
    gate_file: Path | None = None
    hooks: tuple[Hook, ...] = ()
    # The rate offered to the Gateway, when the caller knows it (`--rate`); None: the throughput gate
    # compares the arms per unit of traffic only (a cluster's traffic is not the profile's load test).
    offered_rps: float | None = None


def run_cluster(options: ClusterRunOptions, *, say: Callable[[str], None] = print) -> RolloutState:
    """The same plan against a cluster: HTTPRoute weights, state in the chart's ConfigMap, the cluster's
    Prometheus. Resumes when the ConfigMap holds a rollout that is not finished (e.g. the Job's pod was
    replaced). On revert or abort the canary Deployment is scaled to zero."""
    from gates.config import load_gate_file
    from rollout import kube
    from rollout.cluster import cluster_gate_variables
    from rollout.report import kubernetes_panels
    from rollout.routers.httproute import HTTPRouteRouter
    from rollout.state import ConfigMapStateStore

    target = options.target
    prometheus_url = target.require_prometheus()
    store = ConfigMapStateStore(
        namespace=target.namespace, name=target.state_configmap, context=target.context
    )
    router = HTTPRouteRouter(
        namespace=target.namespace,
        route=target.route,
        services={"baseline": target.baseline_service, "canary": target.canary_service},
        context=target.context,
    )
    progress = TerminalProgress(say)
    stop = _stop_event_on_signals()
    existing = store.load()
    if existing is not None and not existing.phase.terminal:
        say(f"resuming rollout {existing.run_id} at step {existing.step_index + 1}")
        state = existing
    else:
        run_id = new_run_id()
        state = new_state(
            run_id=run_id,
            profile=options.profile,
            router=router,
            stack={"kind": "kubernetes", "namespace": target.namespace, "release": target.release},
            now=time.time(),
            hooks=options.hooks,
        )
        store.save(state)
        say(
            f"rollout {run_id} on {target.namespace}/{target.route}: steps {list(options.profile.steps)}% canary"
        )
    # The packaged gates as they are (the local profiles' gate overrides size the gates to two CPU-only
    # backends on one machine; a cluster's GPU servers are judged by the real bounds), with the release's
    # namespace and per-arm pod regex unless the gate file names its own.
    config = load_gate_config(options.gate_file, gate_profile="kubernetes")
    variables = cluster_gate_variables(
        target,
        file_variables=config.variables,
        packaged_variables=load_gate_file(None, profile="kubernetes").variables,
    )
    say(f"gate variables: {variables}")
    gates = PrometheusGates(
        config=config,
        prometheus_url=prometheus_url,
        offered_rps=options.offered_rps,
        variables=variables,
    )
    controller = RolloutController(
        store=store, router=router, gates=gates, hooks=options.hooks, progress=progress.event
    )
    try:
        state = drive(controller, progress, stop)
    except _Interrupted:
        state = controller.rollback(who=whoami(), reason="orchestrator interrupted (SIGINT/SIGTERM)") or state
    except BaseException as exc:
        say(f"orchestrator error: {type(exc).__name__}: {exc}; rolling back")
        controller.rollback(who="rollout", reason=f"orchestrator error: {exc}")
        raise
    if state.outcome in ("reverted", "aborted"):
        kube.scale_deployment(
            context=target.context, namespace=target.namespace, name=target.canary_deployment, replicas=0
        )
        say(f"scaled {target.canary_deployment} to 0")
    panels = kubernetes_panels(variables)
    timeline = collect_timeline(prometheus_url, state.started_at, state.finished_at or time.time(), panels)
    run_dir = write_report(state, options.reports_dir, timeline=timeline, panels=panels)
    say(f"{state.outcome}: {state.reason}\nreport: {run_dir}/report.html")
    return state


def cluster_rollback_command(
    *, store: Any, target: Any, who: str, reason: str, say: Callable[[str], None] = print
) -> RolloutState | None:
    """`rollout rollback` against a cluster: route 100% to baseline, record who and why, scale the canary to 0."""
    from rollout import kube

    state = store.load()
    if state is None:
        raise RuntimeError(f"no rollout state in {store.describe()}: nothing to roll back")
    router = router_from_description(state.router)
    state = rollback_locked(
        state,
        router=router,
        hooks=parse_hooks({"hooks": list(state.hooks)}),
        who=who,
        reason=reason,
        outcome=Phase.ABORTED,
        now=time.time(),
    )
    assert state is not None
    store.save(state)
    kube.scale_deployment(
        context=target.context, namespace=target.namespace, name=target.canary_deployment, replicas=0
    )
    say(
        f"traffic: 100% baseline on HTTPRoute {target.namespace}/{target.route}; {target.canary_deployment} scaled to 0"
    )
    return state

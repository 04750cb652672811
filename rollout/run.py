"""`rollout run`: start (or resume) a rollout on a site, drive `advance()` once per interval, report,
tear down; and the commands that act on a recorded rollout (`rollback`, `pause`, `resume`, `promote`,
`down`).

One function per command over a `Site` (the local stack or a cluster's release): the site starts or
reattaches to what serves the arms, and a resumed run (state not terminal, no orchestrator holding it)
carries on from the recorded step.
"""

from __future__ import annotations

import getpass
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from gates.config import GateConfig
from rollout.controller import (
    LeaseLost,
    Refused,
    RolloutController,
    new_state,
    pause_locked,
    promote_locked,
    resume_locked,
    rollback_locked,
    unfinished,
)
from rollout.events import Promotion, Rollback
from rollout.hooks import Hook, parse_hooks
from rollout.notify.delivery import Notifier, announce
from rollout.notify.notices import took_over
from rollout.notify.targets import NotifyTarget
from rollout.plan import Phase, Profile
from rollout.report import collect_timeline, write_report
from rollout.routers.base import RouterUnavailable
from rollout.sites.base import Site
from rollout.state import Holder, RolloutState, StateConflict, StateStore

Say = Callable[[str], None]


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
            last_verdicts(state)
            if latest is not None and latest.step == state.step_index
            else "no evaluation yet"
        )
        self.out(f"{self.stamp(state)} {step} | baked {baked:4.0f}/{bake:.0f}s | {gates}")


@dataclass(frozen=True)
class RunPlan:
    profile: Profile
    reports_dir: Path
    gate_file: Path | None = None
    hooks: tuple[Hook, ...] = ()
    notifications: tuple[NotifyTarget, ...] = ()  # chat and webhook targets (the hooks file's section)
    # The rate offered to a site that does not drive the load itself (a cluster's Gateway), when the
    # caller knows it (`--rate`); None: the throughput gate compares the arms per unit of traffic only.
    offered_rps: float | None = None


class _Interrupted(Exception):
    pass


def _interruptible_sleep(stop: threading.Event, seconds: float) -> None:
    if stop.wait(max(0.0, seconds)):
        raise _Interrupted


MANUAL_RETRIES = 5  # a ConfigMap written by the orchestrator between our read and write: read again
STACK_STOPPED = "stack stopped"  # a rollback's weights_before when there was no traffic to move
ROUTER_RETRIES = 3  # intervals in a row the router may be unreachable before the orchestrator gives up


def lease_s(interval_s: float) -> float:
    """How long a silent orchestrator still holds its rollout: several intervals (an evaluation against a
    slow Prometheus can take a while), at least a minute."""
    return max(4.0 * interval_s, 60.0)


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
        except StateConflict as exc:  # e.g. a rollback from elsewhere: the next advance reads the newer state
            progress.event(state, f"state changed by another writer, re-reading: {exc}")
            continue
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


def run(site: Site, plan: RunPlan, *, say: Say = print) -> RolloutState:
    """The rollout on `site`: start or resume, one `advance()` per interval until a decision, report.

    Any failure of the orchestrator itself restores 100% baseline before it gives up; SIGINT/SIGTERM
    roll back. After a revert or an abort the site retires the canary.
    """
    site_state = site.require_state()
    store = site_state.store
    progress = TerminalProgress(say)
    stop = _stop_event_on_signals()
    with site_state.exclusive():
        existing = store.load()
        resuming = existing is not None and not existing.phase.terminal
        interval_s = (
            float(existing.profile["interval_s"]) if resuming and existing else plan.profile.interval_s
        )
        holder = Holder.this_process(lease_s=lease_s(interval_s), now=time.time())
        if resuming and existing is not None:
            current = existing.holder
            if current is not None and not current.gone():
                raise RuntimeError(
                    f"rollout {existing.run_id} is steered by {current.describe()} (heartbeat "
                    f"{current.age(time.time()):.0f}s ago, lease {current.lease_s:.0f}s); not taking it over"
                )
            site.serving.attach(existing.stack, existing.router)
            dead = site.serving.dead_parts()
            if dead:
                raise RuntimeError(
                    f"cannot resume rollout {existing.run_id}: {', '.join(dead)} no longer running; "
                    "run `python -m rollout rollback` to restore 100% baseline"
                )
            taken = "" if current is None else f", taking over from {current.describe()} (gone)"
            say(
                f"resuming rollout {existing.run_id} at step {existing.step_index + 1} "
                f"({existing.phase.value}){taken}"
            )
            state = replace(existing, holder=holder)
            if current is not None:  # announced at the first interval: the orchestrator it replaces is lost
                state = took_over(state, previous=current, holder=holder, now=time.time())
            _save_or_refuse(store, state)
        else:
            run_id = new_run_id()
            profile = plan.profile
            say(
                f"rollout {run_id} ({site.kind}): profile {profile.name}, steps {list(profile.steps)}% canary"
                + (f", {profile.request_rate:g} req/s" if site.load is not None else "")
            )
            site.start(
                plan.reports_dir / run_id,
                rate=profile.request_rate,
                seed=profile.seed,
                loadtest_args=profile.loadtest_args,
                say=say,
            )
            state = new_state(
                run_id=run_id,
                profile=profile,
                router=site.router,
                stack=site.serving.describe(),
                now=time.time(),
                hooks=plan.hooks,
            )
            state = replace(state, notifications=tuple(t.as_dict() for t in plan.notifications))
            _save_or_refuse(store, replace(state, holder=holder))
        config = site.observability.gate_config(plan.gate_file, state.profile.get("gate_overrides"))
        # A site that drives the load offers the profile's rate; elsewhere the caller may know the rate.
        offered = float(state.profile["request_rate"]) if site.load is not None else plan.offered_rps
        gates = site.gates(config, offered_rps=offered)
        if gates.variables:
            say(f"gate variables: {gates.variables}")
        controller = RolloutController(
            store=store,
            router=site.router,
            gates=gates,
            hooks=parse_hooks({"hooks": list(state.hooks)}),  # as recorded when the run began
            progress=progress.event,
            hook_context=site.serving.hook_context(),
            holder=holder,
            notifier=Notifier.recorded(state),
            announced=existing if resuming and existing is not None else state,
        )
        for problem in controller.notifier.problems():
            say(f"notifications: {problem} (each delivery is tried and recorded all the same)")
        try:
            if state.phase is Phase.INITIALIZING:
                site.observability.wait_for_data()  # no evaluation before Prometheus has scraped every target
            state = drive(controller, progress, stop)
        except _Interrupted:
            state = (
                controller.rollback(who=whoami(), reason="orchestrator interrupted (SIGINT/SIGTERM)") or state
            )
        except LeaseLost as exc:  # another orchestrator steers now: leave traffic and the site to it
            say(str(exc))
            return state
        except BaseException as exc:
            say(f"orchestrator error: {type(exc).__name__}: {exc}; rolling back")
            state = controller.rollback(who="rollout", reason=f"orchestrator error: {exc}") or state
            _finish(site, state, plan.reports_dir, config, say)
            raise
        state = controller.release() or state
        run_dir = _finish(site, state, plan.reports_dir, config, say)
        say(f"{state.phase.value}: {state.reason}")
        say(f"report: {run_dir}/report.html")
        return state


def _save_or_refuse(store: StateStore, state: RolloutState) -> None:
    """Take the rollout: a second orchestrator writing at the same moment loses on the store's version."""
    try:
        store.save(state)
    except StateConflict as exc:
        raise RuntimeError(
            f"another orchestrator took rollout {state.run_id} at the same moment: {exc}"
        ) from exc


def _finish(site: Site, state: RolloutState, reports_dir: Path, config: GateConfig, say: Say) -> Path:
    """Stop the load (so its summary is written), retire a reverted canary, report, take the site down."""
    summary = _stop_load(site, say)
    if state.outcome in (Phase.REVERTED, Phase.ABORTED):
        site.serving.retire_canary(say)
    run_dir = _report(site, state, reports_dir, config, summary)
    site.serving.teardown(say)
    return run_dir


def _stop_load(site: Site, say: Say) -> dict[str, Any] | None:
    """The load's summary, once it has stopped; None where the site drives no load."""
    return None if site.load is None else site.load.stop(say)


def _report(
    site: Site, state: RolloutState, reports_dir: Path, config: GateConfig, summary: dict[str, Any] | None
) -> Path:
    """The report with each gate's panel, its queries over this site's variables (a release's pods)."""
    observability = site.observability
    end = state.finished_at or time.time()
    timeline = collect_timeline(
        observability.prometheus_url, config, observability.variables(config), state.started_at, end
    )
    return write_report(state, reports_dir, timeline=timeline, loadtest_summary=summary)


def rollback(site: Site, *, reports_dir: Path, who: str, reason: str, say: Say = print) -> RolloutState:
    """`rollout rollback`: 100% baseline from any state; idempotent; records who and why.

    When no orchestrator holds the run (it died, e.g. SIGKILL), the rollback also finishes its job:
    stops the load, retires the canary (locally: stops it; on a cluster: scales it to zero) and writes
    the report. Locally the router and the baseline keep serving; `rollout down` stops them.
    """

    def change(state: RolloutState, now: float) -> RolloutState:
        site.serving.attach(state.stack, state.router)
        if state.phase.terminal and "baseline" in site.serving.dead_parts():
            # A finished run whose stack was stopped: no traffic to move, and restarting its router
            # in front of stopped arms would serve nothing. Record the request only.
            return state.with_event(
                Rollback(
                    now,
                    who=who,
                    reason=reason,
                    weights_before=STACK_STOPPED,
                    verified="unknown",
                    changed=False,
                )
            )
        rolled = rollback_locked(
            state,
            router=site.router,
            hooks=parse_hooks({"hooks": list(state.hooks)}),
            who=who,
            reason=reason,
            outcome=Phase.ABORTED,
            now=now,
            context=site.serving.hook_context(),
        )
        assert rolled is not None
        return rolled

    state = _apply(site, "roll back", change)
    done = state.last_event(Rollback)  # rollback hooks record their own events after it
    assert done is not None
    if done.weights_before == STACK_STOPPED:
        say(f"rollout {state.run_id} is {state.phase.value} and its local stack is stopped: nothing to move")
        return state
    say(f"traffic: 100% baseline (router {site.router.name}, verified: {done.verified})")
    _finish_unattended(site, state, reports_dir, say, report=done.changed)
    return state


def _finish_unattended(site: Site, state: RolloutState, reports_dir: Path, say: Say, *, report: bool) -> None:
    """When a command decided a rollout that no orchestrator holds (it died, e.g. SIGKILL), do what the
    orchestrator would have: stop the load, retire a rolled-back canary (locally: stop it; on a cluster:
    scale it to zero) and write the report (again only when something changed or none exists). Locally
    the router and the serving arms keep serving; `rollout down` stops them."""
    if not site.require_state().orchestrator_gone():
        return  # the orchestrator sees the decision at its next interval and finishes the run itself
    summary = _stop_load(site, say)
    if state.outcome in (Phase.REVERTED, Phase.ABORTED):
        site.serving.retire_canary(say)
    # Only a site that drives its load writes the report here: a cluster's command may run without its
    # Prometheus (`rollback` and `promote` do not need one).
    if site.load is not None and (report or not (reports_dir / state.run_id / "decision.json").exists()):
        config = site.observability.gate_config(None, None)
        run_dir = _report(site, state, reports_dir, config, summary)
        say(f"report: {run_dir}/report.html")
    site.serving.teardown(say, keep_serving=True)


def _apply(site: Site, command: str, change: Callable[[RolloutState, float], RolloutState]) -> RolloutState:
    """Read, change and save the recorded rollout under the store's lock. A ConfigMap store has no lock:
    a concurrent write (the orchestrator's interval) refuses our save, and the change applies again to
    what is recorded then, so neither write is lost."""
    store = site.require_state().store
    for _ in range(MANUAL_RETRIES):
        with store.locked():
            recorded = store.load()
            if recorded is None:
                raise Refused(f"no rollout recorded in {store.describe()}: nothing to {command}")
            state = change(recorded, time.time())
            try:
                store.save(state)
            except StateConflict:
                continue
        return _announce_by_hand(store, recorded, state)  # after the lock: a webhook may be slow
    raise RuntimeError(f"{store.describe()} kept changing under {MANUAL_RETRIES} attempts; try again")


def _announce_by_hand(store: StateStore, before: RolloutState, after: RolloutState) -> RolloutState:
    """Notify what a command did, unless an orchestrator holds the rollout: that one announces it at its
    next interval, with the targets' secrets in its own environment (a laptop may have none)."""
    holder = after.holder
    if holder is not None and not holder.gone():
        return after
    state, _ = announce(
        store,
        Notifier.recorded(after),
        before,
        after,
        now=time.time(),
        say=lambda line: print(line, file=sys.stderr, flush=True),
    )
    return state


def pause(site: Site, *, who: str, reason: str, say: Say = print) -> RolloutState:
    """`rollout pause`: hold at the current weights from the orchestrator's next interval on."""
    state = _apply(site, "pause", lambda state, now: pause_locked(state, who=who, reason=reason, now=now))
    say(f"rollout {state.run_id}: paused at {state.current_canary_weight}% canary by {who}: {reason}")
    return state


def resume(site: Site, *, who: str, reason: str, say: Say = print) -> RolloutState:
    """`rollout resume`: a paused rollout goes on from its step at the orchestrator's next interval."""
    state = _apply(site, "resume", lambda state, now: resume_locked(state, who=who, reason=reason, now=now))
    say(f"rollout {state.run_id}: resumed at {state.current_canary_weight}% canary by {who}: {reason}")
    if site.require_state().orchestrator_gone():
        say("no orchestrator holds it: run `python -m rollout run` (or `make canary`) to carry on")
    return state


def promote(
    site: Site, *, reports_dir: Path, who: str, reason: str, force: bool = False, say: Say = print
) -> RolloutState:
    """`rollout promote`: skip the remaining steps, 100% canary now; refused while a gate fails unless
    `force`. A running orchestrator sees the decision at its next interval and reports; else we do."""

    def change(state: RolloutState, now: float) -> RolloutState:
        unfinished(state, "promote")  # before attaching: a finished local run's stack may be stopped
        site.serving.attach(state.stack, state.router)
        return promote_locked(
            state,
            router=site.router,
            hooks=parse_hooks({"hooks": list(state.hooks)}),
            who=who,
            reason=reason,
            force=force,
            now=now,
            context=site.serving.hook_context(),
        )

    state = _apply(site, "promote", change)
    done = state.last_event(Promotion)
    assert done is not None
    say(f"traffic: 100% canary (router {site.router.name}, verified: {done.verified})")
    say(f"rollout {state.run_id}: {state.reason}")
    _finish_unattended(site, state, reports_dir, say, report=True)
    return state


def down(site: Site, *, say: Say = print) -> None:
    """Stop every local process the recorded rollout started (after a rollback or `--keep-stack`)."""
    site_state = site.require_state()
    state = site_state.store.load()
    if state is None or state.stack.get("kind") != site.kind or site.load is None:
        say("no local stack recorded")
        return
    if not site_state.orchestrator_gone():
        raise RuntimeError(
            "a rollout is running on this state; stop it (Ctrl-C rolls back) or run `rollback` first"
        )
    if not state.phase.terminal:
        raise RuntimeError(f"rollout {state.run_id} is {state.phase.value}; run `rollback` before `down`")
    site.serving.attach(state.stack, state.router)
    _stop_load(site, say)
    site.serving.teardown(say)


def last_verdicts(state: RolloutState) -> str:
    """`gate=verdict ...` of the latest evaluation, for status lines."""
    if not state.evaluations:
        return "no evaluation yet"
    latest = state.evaluations[-1]
    gates = latest.gates_line()
    return gates or f"{latest.verdict} ({latest.evaluation.reason})"

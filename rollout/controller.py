"""The rollout state machine: one `advance()` per interval, one `rollback()`.

Every call re-derives what to do from the persisted state (Argo's reconcile shape), so an orchestrator
killed at any point and started again converges: the intent (step, start time) is saved before the
router is touched, and the router is re-checked against the intent on every call.
Only a failed gate (or a failed hook) reverts; nothing but a pass promotes. An inconclusive evaluation
holds the step while its window grows, up to the step's maximum bake; then the rollout pauses and asks a
person (Argo's semantics for an inconclusive analysis): it keeps judging, a failure still reverts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from gates.evaluate import describe_wait
from gates.record import Evaluation, Verdict
from rollout.events import (
    HookRun,
    HooksDone,
    Pause,
    Promotion,
    Resume,
    Rollback,
    StepPassed,
    StepStarted,
    WeightsSet,
)
from rollout.gating import GateEvaluator
from rollout.hooks import Hook, HookResult, run_hooks
from rollout.notify.delivery import Notifier, announce
from rollout.notify.notices import took_over
from rollout.plan import Phase, Profile, max_bake, step_looks
from rollout.routers.base import RouterUnavailable, TrafficRouter, Verification, WeightCheck, Weights
from rollout.state import EvaluationEntry, Holder, RolloutState, StateConflict, StateStore
from rollout.traffic import BASELINE_ONLY, move_traffic

Progress = Callable[[RolloutState, str], None]


def _quiet(_state: RolloutState, _message: str) -> None:
    pass


class LeaseLost(RuntimeError):
    """Another orchestrator holds the rollout now (this one's lease ran out): stop steering, touch nothing."""


class Refused(RuntimeError):
    """A manual command that cannot apply to the rollout as it stands (finished, or failing gates)."""


def new_state(
    *,
    run_id: str,
    profile: Profile,
    router: TrafficRouter,
    stack: dict[str, Any],
    now: float,
    hooks: tuple[Hook, ...] = (),
) -> RolloutState:
    from dataclasses import asdict

    return RolloutState(
        hooks=tuple(h.as_dict() for h in hooks),
        run_id=run_id,
        profile=asdict(profile),
        phase=Phase.INITIALIZING,
        step_index=0,
        started_at=now,
        router=router.describe(),
        stack=stack,
    )


def rollback_locked(
    state: RolloutState | None,
    *,
    router: TrafficRouter,
    hooks: tuple[Hook, ...],
    who: str,
    reason: str,
    outcome: Phase,
    now: float,
    context: dict[str, Any] | None = None,
) -> RolloutState | None:
    """Restore 100% baseline and record who and why. The caller holds the store's lock and saves.

    Idempotent: a second call finds the router already at 100/0, records the request, runs no hooks.
    Raises RouterUnavailable (after nothing was recorded as done) when traffic could not be restored.
    """
    before: Weights | str
    try:
        before = router.get_weights()
    except RouterUnavailable as exc:
        before = f"unknown ({exc})"
    check = move_traffic(router, BASELINE_ONLY, "rollback")
    if state is None:
        return None
    changed = before != BASELINE_ONLY or not state.phase.terminal
    state = replace(state, router=router.describe()).with_event(
        Rollback(
            now, who=who, reason=reason, weights_before=before, verified=check.as_text(), changed=changed
        )
    )
    if not state.phase.terminal:
        state = replace(state, phase=outcome, reason=reason, decided_by=who, finished_at=now)
    if changed:
        results = run_hooks(hooks, "rollback", _hook_context(state, reason=reason, **(context or {})))
        state = _with_hooks(state, results, now)
    return state


def unfinished(state: RolloutState | None, command: str) -> RolloutState:
    if state is None:
        raise Refused(f"no rollout recorded: nothing to {command}")
    if state.phase.terminal:
        raise Refused(f"rollout {state.run_id} is {state.phase.value}: nothing to {command}")
    return state


def pause_locked(state: RolloutState | None, *, who: str, reason: str, now: float) -> RolloutState:
    """Hold at the current weights: the orchestrator keeps evaluating and recording (a failing gate still
    reverts) but neither promotes a step nor counts inconclusive evaluations. Idempotent."""
    state = unfinished(state, "pause")
    event = state.with_event(Pause(now, who=who, reason=reason, changed=state.paused is None))
    if state.paused is not None:
        return event
    return replace(event, paused={"who": who, "reason": reason, "at": now})


def resume_locked(state: RolloutState | None, *, who: str, reason: str, now: float) -> RolloutState:
    """Let a paused rollout go on from its step (the bake counts from the step's start). Idempotent."""
    state = unfinished(state, "resume")
    return replace(state, paused=None).with_event(
        Resume(now, who=who, reason=reason, changed=state.paused is not None)
    )


def failing_gates(state: RolloutState) -> tuple[str, ...]:
    """Deciding gates whose latest evaluation at the current step failed, hysteresis not yet counted."""
    latest = state.evaluations[-1] if state.evaluations else None
    if latest is None or latest.step != state.step_index:
        return ()
    return tuple(
        g.name
        for g in latest.evaluation.gates
        if not g.dry_run and Verdict.FAIL in (g.verdict, g.raw_verdict)
    )


def promote_locked(
    state: RolloutState | None,
    *,
    router: TrafficRouter,
    hooks: tuple[Hook, ...],
    who: str,
    reason: str,
    force: bool,
    now: float,
    context: dict[str, Any] | None = None,
) -> RolloutState:
    """Skip the remaining steps: 100% canary, promotion hooks, promoted by `who`. Refused while a gate of
    the latest evaluation fails, unless forced (the record names the gates forced past). The caller holds
    the store's lock and saves; raises RouterUnavailable (nothing recorded) when traffic could not move."""
    state = unfinished(state, "promote")
    failing = failing_gates(state)
    if failing and not force:
        raise Refused(
            f"rollout {state.run_id}: the latest evaluation at {state.current_canary_weight}% has failing "
            f"gate(s) {', '.join(failing)}; pass --force to promote anyway (recorded with who and why)"
        )
    check = move_traffic(router, Weights.for_canary(100), "promote")
    decided = f"promoted by hand at {state.current_canary_weight}%: {reason}"
    if failing:
        decided += f" (forced past failing gate(s) {', '.join(failing)})"
    state = replace(state, router=router.describe(), paused=None).with_event(
        Promotion(now, who=who, reason=reason, forced=failing, verified=check.as_text())
    )
    results = run_hooks(hooks, "promotion", _hook_context(state, reason=reason, **(context or {})))
    state = _with_hooks(state, results, now)
    return replace(state, phase=Phase.PROMOTED, reason=decided, decided_by=who, finished_at=now)


def baking_since(state: RolloutState) -> float:
    """When the current step's wait for a decision began: its start, or the latest resume since then."""
    assert state.step_started_at is not None
    resumed = [e.at for e in state.events if isinstance(e, Resume) and e.at >= state.step_started_at]
    return max([state.step_started_at, *resumed])


def wait_text(result: Evaluation) -> str:
    """The longest wait the undecided gates estimate for themselves, as a clause ('' when unknown)."""
    waits = [g.more_s for g in result.gates if g.more_s is not None and not g.dry_run]
    return f"; the gates estimate {describe_wait(max(waits))}" if waits else ""


def _with_hooks(state: RolloutState, results: list[HookResult], now: float) -> RolloutState:
    """The hooks' results recorded, at the current step."""
    for r in results:
        state = state.with_event(
            HookRun(now, step=state.step_index, hook=r.kind, target=r.target, ok=r.ok, detail=r.detail)
        )
    return state


def _hook_context(state: RolloutState, **extra: Any) -> dict[str, Any]:
    return {
        "run_id": state.run_id,
        "phase": state.phase.value,
        "step": state.step_index,
        "canary_weight": state.current_canary_weight,
        **extra,
    }


class RolloutController:
    def __init__(
        self,
        *,
        store: StateStore,
        router: TrafficRouter,
        gates: GateEvaluator,
        hooks: tuple[Hook, ...] = (),
        clock: Callable[[], float] = time.time,
        progress: Progress = _quiet,
        hook_context: dict[str, Any] | None = None,
        holder: Holder | None = None,
        notifier: Notifier | None = None,
        announced: RolloutState | None = None,
        in_effect_timeout_s: float = 10.0,
    ) -> None:
        self.store = store
        self.router = router
        self.gates = gates
        self.hooks = hooks
        self.clock = clock
        self.progress = progress
        self.hook_context = dict(hook_context or {})  # e.g. the arms' URLs, for rehearsal hooks
        self.holder = holder  # this orchestrator's lease, renewed at every advance (None: no lease kept)
        self.notifier = notifier or Notifier()  # no targets: announces nothing
        # The state up to which what happened has been announced (None: the one the first call reads); a
        # resumed run passes the state it found, so the takeover it recorded is announced.
        self._announced = announced
        # How long a weight change may take to be reported in effect before the evaluation holds instead.
        self.in_effect_timeout_s = in_effect_timeout_s

    def load(self) -> RolloutState:
        state = self.store.load()
        if state is None:
            raise RuntimeError(f"no rollout state at {self.store.describe()}; start one with `rollout run`")
        return state

    def advance(self) -> RolloutState:
        with self.store.locked():
            state = self.load()
            announced = self._announced or state
            if not state.phase.terminal:  # a decision by hand since the last interval is announced below
                state = self._advance(self._renew_lease(state))
                try:
                    self.store.save(state)
                except StateConflict:
                    self._keep_their_decision()
                    raise
        # Decided and saved; notified outside the lock (a rollback by hand never waits on a webhook).
        return self._announce(announced, state)

    def _announce(self, before: RolloutState, after: RolloutState) -> RolloutState:
        """Send what happened since `before`, record the deliveries; never raises, decides nothing."""
        state, self._announced = announce(
            self.store,
            self.notifier,
            before,
            after,
            now=self.clock(),
            say=lambda message: self.progress(after, message),
        )
        return state

    def _keep_their_decision(self) -> None:
        """Our save lost to someone else's write (the ConfigMap store has no lock). If that write decided
        the rollout (a rollback or promotion by hand), this interval may have put the step's weights back
        after it moved the traffic: restore the decision's weights before anything else reads the state."""
        current = self.store.load()
        if current is None or not current.phase.terminal:
            return
        final = Weights.for_canary(100) if current.phase is Phase.PROMOTED else BASELINE_ONLY
        move_traffic(
            self.router,
            final,
            f"restoring the {current.phase.value} decision",
            timeout_s=self.in_effect_timeout_s,
        )

    def release(self) -> RolloutState | None:
        """Give the lease back (the run is over): `status` then shows nobody steering."""
        with self.store.locked():
            state = self.store.load()
            if (
                state is None
                or self.holder is None
                or state.holder is None
                or state.holder.id != self.holder.id
            ):
                return state
            state = replace(state, holder=None)
            self.store.save(state)
            return state

    def _renew_lease(self, state: RolloutState) -> RolloutState:
        if self.holder is None:
            return state
        now = self.clock()
        current = state.holder
        if current is not None and current.id != self.holder.id and not current.gone(now):
            raise LeaseLost(
                f"rollout {state.run_id} is now steered by {current.describe()} "
                f"(heartbeat {current.age(now):.0f}s ago); this orchestrator stops without touching traffic"
            )
        self.holder = self.holder.renewed(now)
        renewed = replace(state, holder=self.holder)
        if current is not None and current.id != self.holder.id:  # its heartbeat lapsed: taken over
            renewed = took_over(renewed, previous=current, holder=self.holder, now=now)
        return renewed

    def rollback(self, *, who: str, reason: str, outcome: Phase = Phase.ABORTED) -> RolloutState | None:
        with self.store.locked():
            state = self.store.load()
            announced = self._announced or state
            state = rollback_locked(
                state,
                router=self.router,
                hooks=self.hooks,
                who=who,
                reason=reason,
                outcome=outcome,
                now=self.clock(),
            )
            if state is not None:
                self.store.save(state)
                self.progress(state, f"rolled back to 100% baseline by {who}: {reason}")
        if state is None or announced is None:
            return state
        return self._announce(announced, state)

    # -- one interval -------------------------------------------------------------------------------
    def _advance(self, state: RolloutState) -> RolloutState:
        now = self.clock()
        if state.phase is Phase.INITIALIZING:
            return self._enter_step(state, 0, now)
        state, in_effect = self._converge(state, now)
        if state.phase.terminal:
            return state
        profile = state.profile
        assert state.step_started_at is not None
        elapsed = now - state.step_started_at
        if elapsed < profile["settle_s"]:
            return state
        result = self._evaluate(state, now, in_effect)
        state = self._record(state, result, now)
        weight = state.current_canary_weight
        if result.verdict is Verdict.FAIL:
            failed = ", ".join(result.gates_with(Verdict.FAIL)) or "unnamed gate"
            return self._revert(state, f"gate(s) {failed} failed at {weight}% canary", now)
        if state.paused is not None:  # held by hand: recorded above, nothing decided but a failure
            self.progress(
                state, f"paused by {state.paused['who']} at {weight}%: holding ({state.paused['reason']})"
            )
            return state
        bake_s = profile["bake_s"][state.step_index]
        if result.verdict is Verdict.INCONCLUSIVE:
            if elapsed < bake_s:
                self.progress(state, f"inconclusive at {weight}% during the bake: holding")
                return state
            state = replace(state, inconclusive_count=state.inconclusive_count + 1)
            unsure = ", ".join(result.gates_with(Verdict.INCONCLUSIVE)) or "evaluation"
            waited, longest = now - baking_since(state), max_bake(profile, state.step_index)
            if waited >= longest:
                reason = (
                    f"no decision at {weight}% within the maximum bake of {longest:.0f}s ({unsure} "
                    "inconclusive); `rollout resume` bakes longer, `rollout promote` or `rollout rollback` decide"
                )
                self.progress(state, f"paused: {reason}")
                return pause_locked(state, who="rollout", reason=reason, now=now)
            self.progress(
                state,
                f"inconclusive at {weight}% ({unsure}): holding for evidence, {waited:.0f}/{longest:.0f}s"
                f"{wait_text(result)}",
            )
            return state
        state = replace(state, inconclusive_count=0)
        if elapsed < bake_s:
            return state
        return self._promote_step(state, now)

    def _converge(self, state: RolloutState, now: float) -> tuple[RolloutState, Verification]:
        """Make the world match the intent: pre-step hooks done, router at this step's weights. Returns
        what the router says is in effect (a gateway controller applies a patch a moment later)."""
        pending = not any(
            isinstance(e, HooksDone) and e.hook == "pre-step" and e.step == state.step_index
            for e in state.events
        )
        if pending:
            state = self._run_step_hooks(state, "pre-step", now)
            if state.phase.terminal:
                return state, Verification(WeightCheck.UNKNOWN, "step ended by its hook")
        want = Weights.for_canary(state.current_canary_weight)
        check = self.router.verify_weights(want)
        if self._needs_setting(check, want):
            # Configured otherwise (a restart found another value) or unknown (the router restarted): set.
            before = check
            check = move_traffic(
                self.router, want, f"step {state.step_index + 1}", timeout_s=self.in_effect_timeout_s
            )
            state = replace(state, router=self.router.describe()).with_event(
                WeightsSet(
                    now,
                    step=state.step_index,
                    weights=want,
                    after_check=before.check,
                    reason=before.reason,
                    verified=check.as_text(),
                )
            )
        elif check.check is WeightCheck.DIFFERS:
            # Configured but not in effect yet (or refused): say so; the evaluation holds.
            self.progress(state, f"weights {want.as_dict()} not in effect: {check.reason}")
        return state, check

    def _needs_setting(self, check: Verification, want: Weights) -> bool:
        if check.check is WeightCheck.UNKNOWN:
            return True
        if check.check is WeightCheck.MATCHES:
            return False
        try:  # DIFFERS: configured otherwise, or configured and not applied yet (then setting is no use)
            return self.router.get_weights() != want
        except RouterUnavailable:
            return True

    def _enter_step(self, state: RolloutState, index: int, now: float) -> RolloutState:
        state = replace(
            state,
            phase=Phase.PROGRESSING,
            step_index=index,
            step_started_at=now,
            inconclusive_count=0,
            gate_streaks={},  # hysteresis counts failures within one step
        )
        state = state.with_event(StepStarted(now, step=index, canary_weight=state.steps[index]))
        self.store.save(state)  # intent first: a crash from here on resumes into this step
        state, _ = self._converge(state, now)
        if not state.phase.terminal:
            self.progress(
                state, f"step {index + 1}/{len(state.steps)}: {state.current_canary_weight}% canary"
            )
        return state

    def _run_step_hooks(self, state: RolloutState, kind: str, now: float) -> RolloutState:
        results = run_hooks(self.hooks, kind, _hook_context(state, **self.hook_context))
        state = _with_hooks(state, results, now).with_event(HooksDone(now, hook=kind, step=state.step_index))
        failed = [r for r in results if not r.ok]
        if failed:
            return self._revert(state, f"{kind} hook {failed[0].target} failed: {failed[0].detail}", now)
        return state

    def _promote_step(self, state: RolloutState, now: float) -> RolloutState:
        state = self._run_step_hooks(state, "post-step", now)
        if state.phase.terminal:
            return state
        weight = state.current_canary_weight
        state = state.with_event(StepPassed(now, step=state.step_index, canary_weight=weight))
        if state.step_index + 1 < len(state.steps):
            return self._enter_step(state, state.step_index + 1, now)
        state = self._run_step_hooks(state, "promotion", now)
        if state.phase.terminal:
            return state
        reason = f"all {len(state.steps)} steps passed"
        state = replace(state, phase=Phase.PROMOTED, reason=reason, decided_by="rollout", finished_at=now)
        self.progress(state, f"promoted: {reason}")
        return state

    def _revert(self, state: RolloutState, reason: str, now: float) -> RolloutState:
        reverted = rollback_locked(
            state,
            router=self.router,
            hooks=self.hooks,
            who="rollout",
            reason=reason,
            outcome=Phase.REVERTED,
            now=now,
        )
        assert reverted is not None
        self.progress(reverted, f"reverted to 100% baseline: {reason}")
        return reverted

    def _evaluate(self, state: RolloutState, now: float, in_effect: Verification) -> Evaluation:
        assert state.step_started_at is not None
        start = state.step_started_at + state.profile["settle_s"]
        weights = Weights.for_canary(state.current_canary_weight)
        if in_effect.check is WeightCheck.DIFFERS:
            # Traffic is not (yet) split as this step says: judging the window would judge something else.
            return Evaluation.unavailable(
                f"weights not in effect: {in_effect.reason}",
                start=start,
                end=now,
                weights=weights.as_dict(),
                at=now,
            )
        try:
            # The step's failure streaks come from the persisted state: hysteresis survives a restart.
            return self.gates.evaluate(
                start=start,
                end=now,
                weights=weights,
                streaks=state.gate_streaks,
                looks=step_looks(
                    state.profile, state.step_index, baking_since(state) - state.step_started_at
                ),
            )
        except Exception as exc:  # an evaluator that cannot answer has no data: never a pass
            return Evaluation.unavailable(
                f"{type(exc).__name__}: {exc}", start=start, end=now, weights=weights.as_dict(), at=now
            )

    def _record(self, state: RolloutState, result: Evaluation, now: float) -> RolloutState:
        assert state.step_started_at is not None
        entry = EvaluationEntry(
            step=state.step_index,
            canary_weight=state.current_canary_weight,
            at=now,
            window=(state.step_started_at + state.profile["settle_s"], now),
            evaluation=result,
        )
        # An evaluation that could not run judged nothing: the streaks stay as they were.
        streaks = state.gate_streaks if result.error is not None else result.streaks()
        state = replace(state.with_evaluation(entry), gate_streaks=streaks)
        gates = entry.gates_line()
        self.progress(state, f"{state.current_canary_weight}% canary: {result.verdict} {gates}".rstrip())
        return state

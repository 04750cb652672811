"""What to announce: notices derived from what the state recorded between two versions of it (new
events and evaluations, a phase change), so every writer (an orchestrator's interval, a rollback by
hand) announces the same way. Pure functions of the state and its typed events; nothing is sent here.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gates.record import Verdict
from rollout.events import Event, Pause, Promotion, Resume, Rollback, StepPassed, StepStarted, Takeover
from rollout.plan import Phase, max_bake
from rollout.routers.base import Weights
from rollout.state import EvaluationEntry, Holder, RolloutState
from rollout.traffic import BASELINE_ONLY

SCHEMA = "rollout-notification/v1"


class NoticeKind(enum.StrEnum):
    """What a notice announces (its `event`); a target's `events:` lists the kinds it gets."""

    STEP_STARTED = "step-started"  # a step's weights are being set
    STEP_PASSED = "step-passed"  # its bake is over with passing gates
    HELD_INCONCLUSIVE = (
        "held-inconclusive"  # past the bake, an evaluation is inconclusive: the step holds (first of a run)
    )
    PAUSED = "paused"  # held by hand (`rollout pause`)
    RESUMED = "resumed"
    PROMOTED = "promoted"  # all steps passed, or promoted by hand
    REVERTED = "reverted"  # the rollout reverted itself: a failing gate, too many inconclusive, a failed hook
    ROLLED_BACK = (
        "rolled-back"  # rolled back by a person (or by the orchestrator on its own error or interruption)
    )
    ORCHESTRATOR_LOST = "orchestrator-lost"  # a new orchestrator took over from one whose heartbeat lapsed


EVENTS = tuple(NoticeKind)  # every kind: what a target gets unless its `events:` says otherwise


@dataclass(frozen=True)
class Notice:
    """One thing to announce, with the gate record it rests on (the latest evaluation at its step)."""

    event: NoticeKind
    run_id: str
    phase: str
    step: int
    steps: tuple[int, ...]
    weights: Weights  # the traffic split once it happened
    reason: str
    who: str
    at: float
    failing_gates: tuple[str, ...] = ()
    evaluation: EvaluationEntry | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "event", NoticeKind(self.event))

    @property
    def canary_weight(self) -> int:
        return self.steps[self.step]

    def title(self) -> str:
        step = f"step {self.step + 1}/{len(self.steps)}"
        at = f"{self.canary_weight}% canary"
        text = {
            NoticeKind.STEP_STARTED: f"{step} started, {at}",
            NoticeKind.STEP_PASSED: f"{step} passed at {at}",
            NoticeKind.HELD_INCONCLUSIVE: f"holding at {at}: gates inconclusive",
            NoticeKind.PAUSED: f"paused at {at} by {self.who}",
            NoticeKind.RESUMED: f"resumed at {at} by {self.who}",
            NoticeKind.PROMOTED: "promoted: 100% canary",
            NoticeKind.REVERTED: f"REVERTED at {at}",
            NoticeKind.ROLLED_BACK: f"rolled back at {at} by {self.who}",
            NoticeKind.ORCHESTRATOR_LOST: f"orchestrator lost at {at}, taken over",
        }[self.event]
        return f"Rollout {self.run_id}: {text}"

    def to_dict(self) -> dict[str, Any]:
        """The generic webhook's body: the record as decision.json has it."""
        return {
            "schema": SCHEMA,
            "event": self.event.value,
            "title": self.title(),
            "run_id": self.run_id,
            "phase": self.phase,
            "step": self.step,
            "step_number": self.step + 1,
            "steps": list(self.steps),
            "canary_weight": self.canary_weight,
            "weights": self.weights.as_dict(),
            "reason": self.reason,
            "who": self.who,
            "at": self.at,
            "failing_gates": list(self.failing_gates),
            "evaluation": None if self.evaluation is None else self.evaluation.to_dict(),
            "detail": dict(self.detail),
        }


def notices_between(before: RolloutState, after: RolloutState) -> list[Notice]:
    """What happened from `before` to `after` (two versions of one run's state: events only ever appended,
    evaluations appended with the oldest of a long-held step dropped): one notice per step start, step pass, pause, resume, rollback that moved
    traffic and takeover; a promotion when the phase became promoted; a hold when an evaluation past
    the bake began a run of inconclusive ones."""
    if (
        before.run_id != after.run_id
        or len(before.events) > len(after.events)
        or _latest_evaluation_at(before) > _latest_evaluation_at(after)
    ):
        return []
    notices = []
    step = 0  # the step each event happened at: the latest step started before it
    for i, event in enumerate(after.events):
        if isinstance(event, StepStarted):
            step = event.step
        if i >= len(before.events) and (notice := _from_event(after, event, step)) is not None:
            notices.append(notice)
    if after.phase is Phase.PROMOTED and before.phase is not Phase.PROMOTED:
        latest = _latest_at(after, after.step_index)
        notices.append(
            _notice(
                after,
                NoticeKind.PROMOTED,
                after.step_index,
                Weights.for_canary(100),
                reason=after.reason or "promoted",
                who=after.decided_by or "rollout",
                at=after.finished_at or after.started_at,
                evaluation=latest,
                phase=after.phase.value,
                # By hand past failing gates (`promote --force`): which ones.
                failing_gates=forced.forced if (forced := after.last_event(Promotion)) else (),
            )
        )
    held = _held_inconclusive(before, after)
    if held is not None:
        notices.append(held)
    return notices


def _latest_at(state: RolloutState, step: int, until: float | None = None) -> EvaluationEntry | None:
    """The step's latest evaluation (made by `until`, when given)."""
    return next(
        (e for e in reversed(state.evaluations) if e.step == step and (until is None or e.at <= until)), None
    )


def _notice(state: RolloutState, event: NoticeKind, step: int, weights: Weights, **fields: Any) -> Notice:
    fields.setdefault("phase", Phase.PROGRESSING.value)
    return Notice(event=event, run_id=state.run_id, step=step, steps=state.steps, weights=weights, **fields)


def _from_event(state: RolloutState, event: Event, step: int) -> Notice | None:
    at = event.at
    if isinstance(event, StepStarted | StepPassed):
        passed = isinstance(event, StepPassed)
        latest = _latest_at(state, step) if passed else None
        return _notice(
            state,
            NoticeKind.STEP_PASSED if passed else NoticeKind.STEP_STARTED,
            step,
            Weights.for_canary(event.canary_weight),
            reason=(
                latest.evaluation.reason if latest else f"{event.canary_weight}% of traffic to the canary"
            ),
            who="rollout",
            at=at,
            evaluation=latest,
        )
    here = Weights.for_canary(state.steps[step])
    latest = _latest_at(state, step, until=at)
    if isinstance(event, Pause | Resume) and event.changed:
        return _notice(
            state,
            NoticeKind.PAUSED if isinstance(event, Pause) else NoticeKind.RESUMED,
            step,
            here,
            reason=event.reason,
            who=event.who,
            at=at,
            evaluation=latest,
        )
    if isinstance(event, Rollback) and event.changed:
        reverted = event.who == "rollout" and state.phase is Phase.REVERTED
        failing = latest.evaluation.gates_with(Verdict.FAIL) if latest is not None else ()
        before = event.weights_before
        return _notice(
            state,
            NoticeKind.REVERTED if reverted else NoticeKind.ROLLED_BACK,
            step,
            BASELINE_ONLY,
            reason=event.reason,
            who=event.who,
            at=at,
            failing_gates=failing,
            evaluation=latest,
            phase=state.phase.value,
            detail={
                "weights_before": before.as_dict() if isinstance(before, Weights) else before,
                "verified": event.verified,
            },
        )
    if isinstance(event, Takeover):
        reason = (
            f"{event.previous} stopped renewing its lease (last heartbeat {event.heartbeat_age_s:.0f}s "
            f"ago, lease {event.lease_s:.0f}s); {event.holder} steers the rollout now"
        )
        detail = {
            "previous": event.previous,
            "heartbeat_age_s": event.heartbeat_age_s,
            "lease_s": event.lease_s,
            "holder": event.holder,
        }
        return _notice(
            state,
            NoticeKind.ORCHESTRATOR_LOST,
            step,
            here,
            reason=reason,
            who=event.holder,
            at=at,
            evaluation=latest,
            detail=detail,
        )
    return None


def _latest_evaluation_at(state: RolloutState) -> float:
    """When the state's latest evaluation ran (-inf: none): what is new since, a later state says (the
    oldest evaluations of a long-held step are dropped, so counting them does not)."""
    return state.evaluations[-1].at if state.evaluations else float("-inf")


def _held_inconclusive(before: RolloutState, after: RolloutState) -> Notice | None:
    new = [e for e in after.evaluations if e.at > _latest_evaluation_at(before)]
    if not new or after.phase.terminal or after.paused is not None or after.inconclusive_count < 1:
        return None
    last = new[-1]
    if last.verdict is not Verdict.INCONCLUSIVE or last.step != after.step_index:
        return None
    if before.step_index == after.step_index and before.inconclusive_count > 0:
        return None  # the hold was announced when it began
    return _notice(
        after,
        NoticeKind.HELD_INCONCLUSIVE,
        after.step_index,
        Weights.for_canary(after.current_canary_weight),
        reason=last.evaluation.reason,
        who="rollout",
        at=last.at,
        evaluation=last,
        detail={
            "inconclusive_gates": list(last.evaluation.gates_with(Verdict.INCONCLUSIVE)),
            "inconclusive_count": after.inconclusive_count,
            "max_bake_s": max_bake(after.profile, after.step_index),
        },
    )


def took_over(state: RolloutState, *, previous: Holder, holder: Holder, now: float) -> RolloutState:
    """Record that `holder` takes the rollout over from `previous`, whose heartbeat lapsed (the event the
    orchestrator-lost notice is made of)."""
    return state.with_event(
        Takeover(
            now,
            previous=previous.describe(),
            heartbeat_age_s=round(previous.age(now), 1),
            lease_s=previous.lease_s,
            holder=holder.describe(),
        )
    )

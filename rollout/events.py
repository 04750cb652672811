"""What a rollout recorded happening, one frozen dataclass per kind (`RolloutState.events`).

Readers match on the types. The state stores each event as the JSON object it always has,
`{"at": ..., "kind": ..., <fields in order>}`: `Event.to_dict` and `Event.from_dict` are that boundary,
used where the state is written and read (and where decision.json is written), nowhere else.
Gate evaluations are not events: they are `EvaluationEntry`s in `RolloutState.evaluations`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from rollout.routers.base import WeightCheck, Weights


@dataclass(frozen=True)
class Event:
    """Something the rollout recorded, at `at` (seconds since the epoch)."""

    KIND: ClassVar[str]  # its `kind` in the stored JSON
    at: float

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"at": self.at, "kind": self.KIND}
        for f in fields(self)[1:]:
            data[f.name] = _plain(getattr(self, f.name))
        return data

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> Event:
        """The event `to_dict` wrote, as its type; a ValueError says what does not fit."""
        kind = data.get("kind")
        event_type = _BY_KIND.get(kind) if isinstance(kind, str) else None
        if event_type is None:
            raise ValueError(f"event of unknown kind {kind!r}; known: {sorted(_BY_KIND)}")
        names = [f.name for f in fields(event_type)]
        unknown = sorted(set(data) - {"kind", *names})
        missing = [name for name in names if name not in data]
        if unknown or missing:
            raise ValueError(f"{kind} event: unknown key(s) {unknown}, missing key(s) {missing}")
        return event_type(**event_type._typed({name: data[name] for name in names}))

    @classmethod
    def _typed(cls, values: dict[str, Any]) -> dict[str, Any]:
        """The stored values as the fields' types (JSON has no Weights, enums or tuples)."""
        return values


def _plain(value: Any) -> Any:
    if isinstance(value, Weights):
        return value.as_dict()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple):
        return list(value)
    return value


@dataclass(frozen=True)
class StepStarted(Event):
    """A step began: its weights are set next."""

    KIND = "step-started"
    step: int
    canary_weight: int


@dataclass(frozen=True)
class StepPassed(Event):
    """A step's bake is over with passing gates and its post-step hooks done."""

    KIND = "step-passed"
    step: int
    canary_weight: int


@dataclass(frozen=True)
class WeightsSet(Event):
    """The step's weights were set because the router held others or could not tell (`after_check`)."""

    KIND = "weights"
    step: int
    weights: Weights
    after_check: WeightCheck  # what the router said before they were set
    reason: str  # and why
    verified: str  # what it said after (`Verification.as_text`)

    @classmethod
    def _typed(cls, values: dict[str, Any]) -> dict[str, Any]:
        return {
            **values,
            "weights": Weights.from_dict(values["weights"]),
            "after_check": WeightCheck(values["after_check"]),
        }


@dataclass(frozen=True)
class HookRun(Event):
    """One hook called, and how it went."""

    KIND = "hook"
    step: int
    hook: str  # its kind: pre-step, post-step, promotion, rollback
    target: str  # its URL or command
    ok: bool
    detail: str


@dataclass(frozen=True)
class HooksDone(Event):
    """Every hook of this kind ran at the step (so a resumed run does not call them again)."""

    KIND = "hook-done"
    hook: str
    step: int


@dataclass(frozen=True)
class Decision(Event):
    """A rollback, pause, resume or promotion: who asked for it (a person, or `rollout` itself) and why."""

    who: str
    reason: str


@dataclass(frozen=True)
class Rollback(Decision):
    KIND = "rollback"
    weights_before: Weights | str  # or why they are not known (the router could not say, the stack stopped)
    verified: str
    changed: bool  # traffic moved or the rollout ended; False: a repeated request, recorded only

    @classmethod
    def _typed(cls, values: dict[str, Any]) -> dict[str, Any]:
        before = values["weights_before"]
        return {**values, "weights_before": before if isinstance(before, str) else Weights.from_dict(before)}


@dataclass(frozen=True)
class Pause(Decision):
    KIND = "pause"
    changed: bool  # False: it was paused already


@dataclass(frozen=True)
class Resume(Decision):
    KIND = "resume"
    changed: bool  # False: it was not paused


@dataclass(frozen=True)
class Promotion(Decision):
    """Promoted by hand (a promotion by the rollout itself is its phase, not an event)."""

    KIND = "promote"
    forced: tuple[str, ...]  # the failing gates it was forced past
    verified: str

    @classmethod
    def _typed(cls, values: dict[str, Any]) -> dict[str, Any]:
        return {**values, "forced": tuple(values["forced"])}


@dataclass(frozen=True)
class Takeover(Event):
    """An orchestrator took the rollout over from one whose lease lapsed."""

    KIND = "takeover"
    previous: str  # `Holder.describe()` of each
    heartbeat_age_s: float
    lease_s: float
    holder: str


@dataclass(frozen=True)
class Notification(Event):
    """One notice sent (or not) to one target: the delivery's result."""

    KIND = "notify"
    event: str  # the notice's kind (`rollout.notify.notices.NoticeKind`: step-started, promoted, ...)
    target: str
    type: str  # the target's type
    step: int
    ok: bool
    attempts: int  # HTTP requests made (0: none could be, e.g. no URL)
    detail: str
    elapsed_s: float


EVENT_TYPES: tuple[type[Event], ...] = (
    StepStarted,
    StepPassed,
    WeightsSet,
    HookRun,
    HooksDone,
    Rollback,
    Pause,
    Resume,
    Promotion,
    Takeover,
    Notification,
)
_BY_KIND: dict[str, type[Event]] = {t.KIND: t for t in EVENT_TYPES}

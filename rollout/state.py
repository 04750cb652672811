"""The rollout's persisted state and where it lives (local: a JSON file next to the router).

`advance()` re-derives everything from this record, so a killed orchestrator resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

from gates.record import Evaluation, Verdict
from rollout.events import Event
from rollout.plan import Phase

E = TypeVar("E", bound=Event)


@dataclass(frozen=True)
class EvaluationEntry:
    """One gate evaluation of the rollout: at which step and weight, over which window, and the record."""

    step: int
    canary_weight: int
    at: float
    window: tuple[float, float]
    evaluation: Evaluation

    @property
    def verdict(self) -> Verdict:
        return self.evaluation.verdict

    def gate_verdicts(self) -> dict[str, Verdict]:
        return {g.name: g.verdict for g in self.evaluation.gates}

    def superseded(self) -> EvaluationEntry:
        """This entry once a later evaluation of its step is recorded: verdicts, values, intervals and
        sample counts stay; each gate's queries, description and bounds (the same at every evaluation of a
        step) and its reason stay on the latest one only, so a step held for evidence for many intervals
        still fits the state's ConfigMap."""
        gates = tuple(
            replace(g, queries={}, description="", threshold={}, reason="") for g in self.evaluation.gates
        )
        return replace(self, evaluation=replace(self.evaluation, gates=gates))

    def gates_line(self, sep: str = " ") -> str:
        """`gate=verdict` for each gate, dry-run gates marked: progress and status lines."""
        return sep.join(f"{g.name}={g.verdict_text.replace(' ', '')}" for g in self.evaluation.gates)

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "canary_weight": self.canary_weight,
            "at": self.at,
            "window": list(self.window),
            # Derived, for people reading the JSON; `from_dict` reads the evaluation itself.
            "verdict": self.verdict.value,
            "gate_verdicts": {name: v.value for name, v in self.gate_verdicts().items()},
            "evaluation": self.evaluation.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvaluationEntry:
        start, end = data["window"]
        return cls(
            step=int(data["step"]),
            canary_weight=int(data["canary_weight"]),
            at=float(data["at"]),
            window=(float(start), float(end)),
            evaluation=Evaluation.from_dict(data["evaluation"]),
        )


class StateConflict(RuntimeError):
    """Someone else wrote the state since it was read (a rollback, another orchestrator): re-read it."""


@dataclass(frozen=True)
class Holder:
    """The orchestrator steering a rollout, and its lease: it renews `heartbeat_at` at every interval;
    once `lease_s` passes without a renewal, anyone may take the rollout over (resume it)."""

    id: str
    host: str
    pid: int
    pod: str | None  # the orchestrator Job's pod, in a cluster
    heartbeat_at: float
    lease_s: float

    @classmethod
    def this_process(cls, *, lease_s: float, now: float) -> Holder:
        return cls(
            id=uuid.uuid4().hex[:12],
            host=socket.gethostname(),
            pid=os.getpid(),
            pod=os.environ.get("POD_NAME"),
            heartbeat_at=now,
            lease_s=lease_s,
        )

    def describe(self) -> str:
        return f"pod {self.pod}" if self.pod else f"{self.host} pid {self.pid}"

    def age(self, now: float) -> float:
        return max(0.0, now - self.heartbeat_at)

    def gone(self, now: float | None = None) -> bool:
        """The lease ran out, or the holder ran on this host and its process no longer exists."""
        now = time.time() if now is None else now
        if self.age(now) > self.lease_s:
            return True
        if self.host == socket.gethostname() and not self.pod:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                return False
            return _is_zombie(self.pid)
        return False

    def renewed(self, now: float) -> Holder:
        return replace(self, heartbeat_at=now)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Holder:
        return cls(**data)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2 :].startswith("Z")


KEPT_PER_STEP = 40  # evaluations of one step the state keeps (10 minutes at the default interval)


@dataclass(frozen=True)
class RolloutState:
    run_id: str
    profile: dict[str, Any]  # the Profile as run, so a resume uses the same plan
    phase: Phase
    step_index: int
    started_at: float
    router: dict[str, Any]  # enough to rebuild the router (routers.router_from_description)
    step_started_at: float | None = None
    inconclusive_count: int = 0
    finished_at: float | None = None
    reason: str | None = None
    decided_by: str | None = None
    stack: dict[str, Any] = field(default_factory=dict)  # local processes and URLs, or cluster coordinates
    evaluations: tuple[EvaluationEntry, ...] = ()  # every gate evaluation, with step and window
    gate_streaks: dict[str, int] = field(default_factory=dict)  # failing evaluations in a row, this step
    events: tuple[Event, ...] = ()  # weight changes, hooks, promotions, rollbacks (who and why), ...
    hooks: tuple[dict[str, Any], ...] = ()  # the run's hooks, so a later `rollout rollback` runs them too
    holder: Holder | None = None  # the orchestrator steering it now (None: nobody; released at the end)
    paused: dict[str, Any] | None = None  # {who, reason, at} while held by hand (`rollout pause`)
    # The run's notification targets (env var or file names, never URLs), so a later command notifies too.
    notifications: tuple[dict[str, Any], ...] = ()
    evaluations_dropped: int = 0  # the oldest evaluations of steps held past KEPT_PER_STEP, no longer kept

    @property
    def outcome(self) -> Phase | None:
        """How the rollout ended (promoted, reverted, aborted): its phase once terminal, None before."""
        return self.phase if self.phase.terminal else None

    @property
    def steps(self) -> tuple[int, ...]:
        return tuple(self.profile["steps"])

    @property
    def current_canary_weight(self) -> int:
        return self.steps[self.step_index]

    def with_evaluation(self, entry: EvaluationEntry) -> RolloutState:
        """`entry` appended; the step's previous one superseded (`EvaluationEntry.superseded`), and past
        KEPT_PER_STEP evaluations of one step (a step held for evidence, or paused, for long) the oldest
        dropped and counted: the state stays within its ConfigMap however long a step is held."""
        earlier = list(self.evaluations)
        if earlier and earlier[-1].step == entry.step:
            earlier[-1] = earlier[-1].superseded()
        same = [i for i, e in enumerate(earlier) if e.step == entry.step]
        drop = set(same[: max(0, len(same) + 1 - KEPT_PER_STEP)])
        kept = tuple(e for i, e in enumerate(earlier) if i not in drop)
        return replace(
            self, evaluations=(*kept, entry), evaluations_dropped=self.evaluations_dropped + len(drop)
        )

    def with_event(self, event: Event) -> RolloutState:
        return replace(self, events=(*self.events, event))

    def last_event(self, kind: type[E]) -> E | None:
        """The latest event of this type (None when none)."""
        return next((e for e in reversed(self.events) if isinstance(e, kind)), None)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(replace(self, evaluations=(), events=(), holder=None))
        data["holder"] = None if self.holder is None else self.holder.to_dict()
        data["phase"] = self.phase.value
        data["evaluations"] = [e.to_dict() for e in self.evaluations]
        data["events"] = [e.to_dict() for e in self.events]
        data["hooks"] = list(self.hooks)
        data["notifications"] = list(self.notifications)
        # The outcome is derived from the phase; written where it always was, for readers of the JSON.
        items = list(data.items())
        at = [k for k, _ in items].index("finished_at") + 1
        outcome = None if self.outcome is None else self.outcome.value
        return dict([*items[:at], ("outcome", outcome), *items[at:]])

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RolloutState:
        known = {*cls.__dataclass_fields__, "outcome"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"rollout state has unknown key(s) {unknown}")
        values = dict(data)
        values.pop("outcome", None)  # derived from the phase
        try:
            values["phase"] = Phase(values["phase"])
        except (KeyError, ValueError) as exc:
            raise ValueError(f"rollout state has bad phase {data.get('phase')!r}") from exc
        values["evaluations"] = tuple(EvaluationEntry.from_dict(e) for e in values.get("evaluations", ()))
        values["events"] = tuple(Event.from_dict(e) for e in values.get("events", ()))
        values["hooks"] = tuple(values.get("hooks", ()))
        values["notifications"] = tuple(values.get("notifications", ()))
        values["holder"] = None if not values.get("holder") else Holder.from_dict(values["holder"])
        return cls(**values)


class StateStore(Protocol):
    """Where state lives. `locked()` serialises read-modify-write between a run and a rollback."""

    def load(self) -> RolloutState | None: ...

    def save(self, state: RolloutState) -> None: ...

    def locked(self) -> contextlib.AbstractContextManager[None]: ...

    def describe(self) -> str: ...


class FileStateStore:
    """`state.json` written atomically (temp file, fsync, rename) with an flock beside it."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / "state.json"

    def describe(self) -> str:
        return str(self.path)

    def load(self) -> RolloutState | None:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        try:
            return RolloutState.from_dict(json.loads(text))
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"{self.path}: unreadable rollout state: {exc}") from exc

    def save(self, state: RolloutState) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".state-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(state.to_dict(), handle, indent=1, default=str)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / "state.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released by the kernel if the holder is killed
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def single_runner(directory: Path) -> Iterator[None]:
    """Held for a whole `rollout run`: a second run on the same state refuses instead of racing."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "run.lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another rollout is running on {directory} (run.lock held)") from None
        yield


class ConfigMapStateStore:
    """State in a ConfigMap the chart creates (key `state.json`), written with optimistic concurrency:
    a save after someone else's write (e.g. a rollback from a laptop) fails instead of overwriting it,
    and `advance()` simply runs again on the next interval from the newer state."""

    KEY = "state.json"

    def __init__(self, *, namespace: str, name: str, context: str | None = None, kube: Any = None) -> None:
        if kube is None:
            from rollout import kube as kube_module

            kube = kube_module
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.context = context
        self._version: str | None = None

    def describe(self) -> str:
        return f"ConfigMap {self.namespace}/{self.name}"

    def load(self) -> RolloutState | None:
        data, self._version = self.kube.get_configmap(
            context=self.context, namespace=self.namespace, name=self.name
        )
        text = data.get(self.KEY)
        if not text:
            return None
        try:
            return RolloutState.from_dict(json.loads(text))
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"{self.describe()}: unreadable rollout state: {exc}") from exc

    def save(self, state: RolloutState) -> None:
        if self._version is None:
            self.load()
        assert self._version is not None
        text = json.dumps(state.to_dict(), default=str)
        from rollout.kube import KubeConflict

        try:
            self._version = self.kube.replace_configmap_data(
                context=self.context,
                namespace=self.namespace,
                name=self.name,
                data={self.KEY: text},
                resource_version=self._version,
            )
        except KubeConflict as exc:
            raise StateConflict(f"{self.describe()} changed since it was read: {exc}") from exc

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        yield  # concurrency is handled by resourceVersion on save

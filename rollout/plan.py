"""Phases, the plan of traffic steps, and the run profiles (`default`, `quick`)."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from gates.config import GateConfig
from gates.evidence import Assumptions, GateEvidence, time_to_pass
from gates.kinds import KINDS
from gates.sequential import Looks, pass_confidence


class Phase(enum.Enum):
    INITIALIZING = "initializing"  # state written, no traffic moved yet
    PROGRESSING = "progressing"  # baking at steps[step_index]
    PROMOTED = "promoted"  # every step passed: the canary takes all traffic
    REVERTED = "reverted"  # a gate (or a hook) failed: 100% baseline
    ABORTED = "aborted"  # rolled back by a person or an error: 100% baseline

    @property
    def terminal(self) -> bool:
        return self in (Phase.PROMOTED, Phase.REVERTED, Phase.ABORTED)


@dataclass(frozen=True)
class Profile:
    """How a rollout runs. Bake times are per step so the 10% step can collect enough canary samples."""

    name: str
    steps: tuple[int, ...]  # canary percent at each step, ascending, last is usually 100
    bake_s: tuple[float, ...]  # minimum time at each step before it may pass
    interval_s: float  # one gate evaluation (and one `advance()`) per interval
    settle_s: float  # left out of a step's evaluation window after a weight change
    request_rate: float  # offered load, requests per second (Poisson arrivals)
    # Longest wait at each step for the gates to decide; then the rollout pauses (never promotes) and asks
    # a person. Empty: MAX_BAKE_FACTOR times each step's bake.
    max_bake_s: tuple[float, ...] = ()
    seed: int = 1
    # Gate parameters sized to this profile's steps (through the gate file's schema), e.g. the memory-leak
    # gate's warm-up and sampling must fit inside the shortest step it judges.
    gate_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    loadtest_args: tuple[str, ...] = ()  # extra loadtest/vlm.py options (image sizes, max tokens)

    def __post_init__(self) -> None:
        if (
            not self.steps
            or any(not 0 < s <= 100 for s in self.steps)
            or list(self.steps) != sorted(self.steps)
        ):
            raise ValueError(
                f"profile {self.name!r}: steps {self.steps} must be ascending percents in 1..100"
            )
        if len(self.bake_s) != len(self.steps):
            raise ValueError(
                f"profile {self.name!r}: bake_s {self.bake_s} needs one entry per step {self.steps}"
            )
        for key in ("interval_s", "request_rate"):
            if not getattr(self, key) > 0:
                raise ValueError(f"profile {self.name!r}: {key}={getattr(self, key)!r} must be > 0")
        if self.max_bake_s and (
            len(self.max_bake_s) != len(self.steps)
            or any(m < b for m, b in zip(self.max_bake_s, self.bake_s, strict=True))
        ):
            raise ValueError(
                f"profile {self.name!r}: max_bake_s {self.max_bake_s} needs one entry per step, each at "
                f"least that step's bake {self.bake_s}"
            )

    def with_overrides(self, **changes: object) -> Profile:
        unknown = sorted(set(changes) - set(self.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown profile key(s) {unknown}")
        given = {k: v for k, v in changes.items() if v is not None}
        if ("steps" in given or "bake_s" in given) and "max_bake_s" not in given:
            given["max_bake_s"] = ()  # the profile's maximum bakes were sized to its own steps and bakes
        return replace(self, **given)  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Profile:
        """The profile as a rollout state records it (`asdict`: tuples came back as lists)."""
        fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**fields)

    def planned_bake_s(self) -> float:
        return sum(self.bake_s)


MAX_BAKE_FACTOR = 3.0


def max_bake(profile: dict[str, Any], index: int) -> float:
    """Step `index`'s longest wait for a decision, from a profile as the state records it."""
    explicit = profile.get("max_bake_s") or ()
    return float(explicit[index]) if explicit else MAX_BAKE_FACTOR * float(profile["bake_s"][index])


def step_looks(profile: dict[str, Any], index: int, resumed_after_s: float = 0.0) -> Looks:
    """The windows at which step `index` may pass (from its bake to its maximum bake, one per interval,
    each from the step's start less its settling): a pass rests on the bound that holds across them all
    (gates/sequential.py). A step resumed `resumed_after_s` after it began bakes a maximum bake more from
    then, in the same growing window: its looks reach that far."""
    settle, every = float(profile["settle_s"]), float(profile["interval_s"])
    first = max(float(profile["bake_s"][index]) - settle, every)
    return Looks(first, max(resumed_after_s + max_bake(profile, index) - settle, first), every)


# Sized for 2 CPU cores running two TP=2 backends, the router, Prometheus and Locust (measured: about
# 40 ms of backend CPU per request with 8 output tokens). A step passes once every gate has the evidence
# to (`python -m rollout plan` prints when, per gate): its bake is the least time at the step, its maximum
# bake leaves room for the slower evidence of a noisy run before the rollout pauses for a person.
# The memory-leak gate's warm-up and sampling are sized to fit the shortest step, and a step of a minute
# holds no collection cycle to speak of, so it judges every sample (`min_cycles: 0`: an allocator trim in
# a short step is no sawtooth); the cluster default needs 2 cycles of collection floors. The warm-up leaves out
# the RSS growth that follows a weight change (more requests in flight), which a short window would
# otherwise read as a leak (measured: ~180 MiB/min over the first 20 s at 100% canary).
_DEMO_LOAD = ("--max-tokens", "8", "--image-sizes", "448x448")
# The demo's gates. Absolute latency bounds describe a GPU server, not two CPU-only backends sharing 2
# cores with their own load generator: widened. The smallest harms to catch are sized to what ~20 req/s
# can show within minutes: the packaged 0.1% error rate needs ~5,300 canary requests, a 5% throughput
# drop ~30,000 requests and a 1.15x P99 ~17 minutes at a 10% step of this rate (`python -m rollout plan
# --gate-profile kubernetes` shows the packaged harms); a deployment at its own rate keeps them. And each
# traffic step grows the demo's processes for minutes (measured in `make canary PROFILE=quick` at the 50%
# step: 3.8 MiB/min per process easing to 0.6 over 3 minutes in one run, 4.4 at 70 s in another), which a
# minutes-long step cannot tell from the packaged 1.5 MiB/min leak: the demo catches leaks from 8 MiB/min
# per process (its rehearsal leak, 256 KiB per request, is ~75 MiB/min at the quick profile's 25%).
# The CPU gate's interval comes from 2 s sub-windows (two of the local Prometheus's 1 s scrapes each), 3 of
# them at least, so it decides within the first evaluation of a step, as a CPU regression must revert.
_LOCAL_GATES: dict[str, dict[str, Any]] = {
    "cpu_utilisation": {"step_seconds": 2, "min_points": 3},
    "latency_e2e_p99": {"max_seconds": 3.0, "max_ratio": 1.3},
    "latency_ttft_p99": {"max_seconds": 1.5, "max_ratio": 1.3},
    "latency_itl_p99": {"max_seconds": 0.5, "max_ratio": 1.3},
    "error_rate": {"max": 0.02},
    "throughput": {"min_offered_fraction": 0.80, "max_share_drop": 0.15},
}
_LOCAL_LEAK = {"leak_bytes_per_minute": 8 * 1024 * 1024, "min_cycles": 0}
PROFILES: dict[str, Profile] = {
    "default": Profile(
        name="default",
        steps=(10, 50, 100),
        bake_s=(210.0, 60.0, 60.0),
        max_bake_s=(900.0, 360.0, 240.0),
        interval_s=15.0,
        settle_s=3.0,
        request_rate=18.0,
        gate_overrides={
            **_LOCAL_GATES,
            "memory_leak": {**_LOCAL_LEAK, "warmup_seconds": 20, "step_seconds": 3, "min_points": 10},
        },
        loadtest_args=_DEMO_LOAD,
    ),
    "quick": Profile(
        name="quick",
        steps=(25, 50, 100),
        bake_s=(70.0, 40.0, 40.0),
        max_bake_s=(420.0, 300.0, 180.0),
        interval_s=10.0,
        settle_s=2.0,
        request_rate=20.0,
        gate_overrides={
            **_LOCAL_GATES,
            "memory_leak": {**_LOCAL_LEAK, "warmup_seconds": 15, "step_seconds": 2, "min_points": 10},
        },
        loadtest_args=_DEMO_LOAD,
    ),
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}") from None


# -- the evidence plan: how long each step must bake for a healthy canary to pass -------------------------
@dataclass(frozen=True)
class StepEvidence:
    index: int
    canary_weight: int
    bake_s: float
    max_bake_s: float
    gates: tuple[GateEvidence, ...]

    @property
    def pass_after_s(self) -> float | None:
        """Seconds into the step (the settle included) after which every gate can pass; None: never."""
        times = [g.seconds for g in self.gates]
        return None if any(t is None for t in times) else max(t for t in times if t is not None)

    @property
    def slowest(self) -> str:
        return max(self.gates, key=lambda g: float("inf") if g.seconds is None else g.seconds).gate

    @property
    def reachable(self) -> bool:
        after = self.pass_after_s
        return after is not None and after <= self.max_bake_s


def default_assumptions(profile: Profile, gate_profile: str = "local") -> Assumptions:
    """The measured defaults, with inter-token samples per request from the profile's `--max-tokens`; the
    latency gates judge load-test samples where the site hands them over (the local one does)."""
    from loadtest.options import DEFAULTS

    args = list(profile.loadtest_args)
    tokens = int(args[args.index("--max-tokens") + 1] if "--max-tokens" in args else DEFAULTS["--max-tokens"])
    return Assumptions(
        samples_per_request={"itl_ms": max(tokens - 1, 1)}, latency_samples=gate_profile == "local"
    )


def evidence_plan(profile: Profile, config: GateConfig, assumptions: Assumptions) -> list[StepEvidence]:
    """Per step: when each gate can pass a healthy canary at the profile's rate (the evaluation window
    opens `settle_s` into the step), against the step's bake and maximum bake. A pass is judged as the
    step judges it: on the bound that holds across the step's looks (gates/sequential.py)."""
    steps = []
    shape = asdict(profile)
    for index, weight in enumerate(profile.steps):
        weights = {"baseline": 100.0 - weight, "canary": float(weight)}
        gates = []
        for gate in config.gates:
            if gate.dry_run:
                continue
            kind = KINDS[gate.kind]
            held = replace(gate, confidence=pass_confidence(gate, step_looks(shape, index), kind))
            e = time_to_pass(
                held, kind.healthy, rate_rps=profile.request_rate, weights=weights, assumptions=assumptions
            )
            gates.append(replace(e, seconds=None if e.seconds is None else e.seconds + profile.settle_s))
        steps.append(StepEvidence(index, weight, profile.bake_s[index], max_bake(shape, index), tuple(gates)))
    return steps

"""Phases, the plan of traffic steps, and the run profiles (`default`, `quick`)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Any


class Phase(enum.Enum):
    INITIALIZING = "initializing"  # state written, no traffic moved yet
    PROGRESSING = "progressing"  # baking at steps[step_index]
    PROMOTED = "promoted"  # every step passed: the canary takes all traffic
    REVERTED = "reverted"  # a gate failed (or inconclusive too long): 100% baseline
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
    max_inconclusive: int  # consecutive inconclusive evaluations past the bake that revert
    request_rate: float  # offered load, requests per second (Poisson arrivals)
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
        if self.max_inconclusive < 1:
            raise ValueError(f"profile {self.name!r}: max_inconclusive={self.max_inconclusive} must be >= 1")

    def with_overrides(self, **changes: object) -> Profile:
        unknown = sorted(set(changes) - set(self.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown profile key(s) {unknown}")
        return replace(self, **{k: v for k, v in changes.items() if v is not None})  # type: ignore[arg-type]

    def planned_bake_s(self) -> float:
        return sum(self.bake_s)


# Sized for 2 CPU cores running two TP=2 backends, the router, Prometheus and Locust (measured: about
# 40 ms of backend CPU per request with 8 output tokens). Each step's bake gives every arm with traffic
# >= ~300 requests (the latency gates' P99 minimum) with a 10% margin for Poisson arrivals:
# rate x share x (bake - settle) >= 330. The quick profile starts at 25% to fit 3 minutes.
# The memory-leak gate's warm-up and sampling are sized to fit the shortest step, and a step of a minute
# holds no collection cycle to speak of, so it judges every sample (`min_cycles: 0`: an allocator trim in
# a short step is no sawtooth); the cluster default needs 2 cycles of collection floors. The warm-up leaves out
# the RSS growth that follows a weight change (more requests in flight), which a short window would
# otherwise read as a leak (measured: ~180 MiB/min over the first 20 s at 100% canary).
_DEMO_LOAD = ("--max-tokens", "8", "--image-sizes", "448x448")
# Absolute latency bounds describe a GPU server, not two CPU-only backends sharing 2 cores with their own
# load generator; the local demo widens them and keeps every relative (canary vs baseline) bound as is.
_LOCAL_LATENCY = {
    "latency_e2e_p99": {"max_seconds": 3.0},
    "latency_ttft_p99": {"max_seconds": 1.5},
    "latency_itl_p99": {"max_seconds": 0.5},
}
PROFILES: dict[str, Profile] = {
    "default": Profile(
        name="default",
        steps=(10, 50, 100),
        bake_s=(210.0, 60.0, 60.0),
        interval_s=15.0,
        settle_s=3.0,
        max_inconclusive=4,
        request_rate=18.0,
        gate_overrides={
            **_LOCAL_LATENCY,
            "memory_leak": {"warmup_seconds": 20, "step_seconds": 3, "min_points": 10, "min_cycles": 0},
        },
        loadtest_args=_DEMO_LOAD,
    ),
    "quick": Profile(
        name="quick",
        steps=(25, 50, 100),
        bake_s=(70.0, 40.0, 40.0),
        interval_s=10.0,
        settle_s=2.0,
        max_inconclusive=3,
        request_rate=20.0,
        gate_overrides={
            **_LOCAL_LATENCY,
            "memory_leak": {"warmup_seconds": 15, "step_seconds": 2, "min_points": 10, "min_cycles": 0},
        },
        loadtest_args=_DEMO_LOAD,
    ),
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}") from None

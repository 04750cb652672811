"""The one traffic-router interface every router implements, and what the registry knows of a router kind."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

ARMS = ("baseline", "canary")


@dataclass(frozen=True)
class Weights:
    """Percent of new requests each arm receives; the two always sum to 100."""

    baseline: int
    canary: int

    def __post_init__(self) -> None:
        for arm in ARMS:
            value = getattr(self, arm)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 100:
                raise ValueError(f"weight {arm}={value!r} must be an integer percent in 0..100")
        if self.baseline + self.canary != 100:
            raise ValueError(f"weights baseline={self.baseline} canary={self.canary} must sum to 100")

    @classmethod
    def for_canary(cls, canary_percent: int) -> Weights:
        return cls(baseline=100 - canary_percent, canary=canary_percent)

    def as_dict(self) -> dict[str, int]:
        return {"baseline": self.baseline, "canary": self.canary}

    @classmethod
    def from_dict(cls, data: dict) -> Weights:
        missing = [arm for arm in ARMS if arm not in data]
        if missing:
            raise ValueError(f"weights {data!r} lack key(s) {missing}")
        return cls(baseline=data["baseline"], canary=data["canary"])


class WeightCheck(enum.Enum):
    """Answer of `verify_weights`: the router can also say it cannot tell (yet)."""

    MATCHES = "matches"
    DIFFERS = "differs"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Verification:
    """What `verify_weights` found, and why (e.g. which controller has not applied which generation)."""

    check: WeightCheck
    reason: str = ""

    @property
    def matches(self) -> bool:
        return self.check is WeightCheck.MATCHES

    def as_text(self) -> str:
        return self.check.value + (f": {self.reason}" if self.reason else "")


class RouterUnavailable(RuntimeError):
    """The router cannot be reached or refused the change; the message says which and why."""


class TrafficRouter(Protocol):
    """Moves traffic between the arms. Implementations are one file each under `rollout/routers/`."""

    name: str

    def set_weights(self, weights: Weights) -> None:
        """Route new requests in these percentages; in-flight requests finish where they started. Callers
        move traffic through `rollout.traffic.move_traffic`, which also waits for the change and verifies it."""

    def get_weights(self) -> Weights:
        """The weights the router is configured with now."""

    def verify_weights(self, expected: Weights) -> Verification:
        """Whether the weights in effect are `expected`; UNKNOWN only when nothing can tell."""

    def describe(self) -> dict:
        """What to persist so `routers.router_from_description` can rebuild this router later."""


@dataclass(frozen=True)
class ClusterRelease:
    """What a cluster site tells a router about the release whose traffic it moves. `settings` are the
    orchestrator's `ROLLOUT_*` environment variables: each router reads its own (e.g. `ROLLOUT_HTTPROUTE`)."""

    namespace: str
    context: str | None
    fullname: str  # the chart's fullname, which names the release's objects by default
    services: Mapping[str, str]  # arm -> the arm's Service
    settings: Mapping[str, str]


@dataclass(frozen=True)
class RouterKind:
    """A router kind as the registry (`rollout.routers.router_kind`) finds it: the module
    `rollout/routers/<name>.py` defines `ROUTER = RouterKind("<name>", ...)`."""

    name: str
    from_description: Callable[[dict], TrafficRouter]  # rebuilds a router from its `describe()`
    for_cluster: Callable[[ClusterRelease], TrafficRouter] | None = None  # None: it cannot route a release

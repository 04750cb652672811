"""Rehearsal fault injection: regressions a rollout rehearsal switches on at a known time.

These exist only to rehearse canary gates (a leak, extra latency, errors, reset connections, CPU burn);
a production server has none of them. The command-line flags set the initial values, `POST /rehearsal/faults`
changes them at run time.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any


class FaultSettingsError(ValueError):
    """A fault update that names an unknown field or carries a bad value."""


@dataclass(frozen=True)
class FaultSettings:
    leak_kib_per_request: float = 0.0  # memory each scheduler rank retains per admitted request
    extra_latency_ms: float = 0.0  # added by the front before a request reaches the scheduler
    error_ratio: float = 0.0  # fraction of generation requests answered with HTTP 500
    cpu_burn_ms: float = 0.0  # CPU time each scheduler rank burns per admitted request
    # fraction of generation requests whose connection is reset before any response, as a crashed or
    # overloaded server does: only the gateway sees these (sglang's own counters never do)
    reset_ratio: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise FaultSettingsError(f"fault {f.name!r} must be a finite number, got {value!r}")
            if value < 0:
                raise FaultSettingsError(f"fault {f.name!r} must be >= 0, got {value!r}")
        for name in ("error_ratio", "reset_ratio"):
            if getattr(self, name) > 1:
                raise FaultSettingsError(f"fault {name!r} must be within [0, 1], got {getattr(self, name)!r}")

    def updated(self, changes: Any) -> FaultSettings:
        """A copy with `changes` (a JSON object of field -> number) applied; unknown keys are errors."""
        if not isinstance(changes, dict):
            raise FaultSettingsError(f"faults must be a JSON object, got {type(changes).__name__}")
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise FaultSettingsError(f"unknown fault field(s) {unknown}; known: {sorted(known)}")
        return replace(self, **changes)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

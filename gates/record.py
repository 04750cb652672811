"""Verdict records: what each gate saw and decided, JSON-able for decision.json and the reports."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

VERDICTS = ("pass", "fail", "inconclusive")


def _clean(value: Any) -> Any:
    """JSON-safe copy: NaN/Inf become None (JSON has no NaN), tuples become lists, numpy scalars floats."""
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    try:
        f = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f if math.isfinite(f) else None


@dataclass(frozen=True)
class GateResult:
    name: str
    kind: str
    verdict: str  # after hysteresis
    reason: str
    raw_verdict: str  # this evaluation alone, before hysteresis
    source: str  # prometheus | loadtest
    queries: Mapping[str, Mapping[str, str]]  # arm -> role -> rendered PromQL (or load-test selection)
    values: Mapping[str, Any]
    threshold: Mapping[str, Any]
    ci: Mapping[str, Any]
    samples: Mapping[str, Any]
    consecutive_failures: int = 0  # failing evaluations in a row, this one included
    errors: Mapping[str, str] = field(default_factory=dict)  # arm -> named fetch error
    description: str = ""

    def __post_init__(self) -> None:
        for v in (self.verdict, self.raw_verdict):
            if v not in VERDICTS:
                raise ValueError(f"verdict {v!r} is not one of {VERDICTS}")

    def to_dict(self) -> dict[str, Any]:
        return _clean(
            {
                "name": self.name,
                "kind": self.kind,
                "verdict": self.verdict,
                "raw_verdict": self.raw_verdict,
                "reason": self.reason,
                "source": self.source,
                "queries": self.queries,
                "values": self.values,
                "threshold": self.threshold,
                "confidence_interval": self.ci,
                "samples": self.samples,
                "consecutive_failures": self.consecutive_failures,
                "errors": self.errors,
                "description": self.description,
            }
        )


@dataclass(frozen=True)
class Evaluation:
    verdict: str
    reason: str
    gates: tuple[GateResult, ...]
    profile: str
    start: float
    end: float
    weights: Mapping[str, float]
    offered_rps: float | None
    prometheus_url: str
    evaluated_at: float
    gate_file: str = "defaults"

    def gate(self, name: str) -> GateResult:
        for g in self.gates:
            if g.name == name:
                return g
        raise KeyError(f"no gate named {name!r}; have {[g.name for g in self.gates]}")

    def to_dict(self) -> dict[str, Any]:
        return _clean(
            {
                "verdict": self.verdict,
                "reason": self.reason,
                "profile": self.profile,
                "gate_file": self.gate_file,
                "window": {"start": self.start, "end": self.end, "seconds": self.end - self.start},
                "weights": self.weights,
                "offered_rps": self.offered_rps,
                "prometheus_url": self.prometheus_url,
                "evaluated_at": self.evaluated_at,
                "gates": [g.to_dict() for g in self.gates],
            }
        )


def raw_verdicts_of(previous: Any, name: str) -> str | None:
    """The raw verdict of gate `name` in an earlier Evaluation or its to_dict() form (None if absent)."""
    gates = previous.gates if isinstance(previous, Evaluation) else (previous or {}).get("gates", [])
    for g in gates:
        if isinstance(g, GateResult):
            if g.name == name:
                return g.raw_verdict
        elif isinstance(g, Mapping) and g.get("name") == name:
            return str(g.get("raw_verdict") or g.get("verdict"))
    return None

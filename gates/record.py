"""Verdict records: what each gate saw and decided, JSON-able for decision.json and the reports."""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


class Verdict(enum.StrEnum):
    """A gate's (or an evaluation's) answer. Missing data is INCONCLUSIVE, never PASS."""

    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"

    @property
    def mark(self) -> str:
        """How reports show it: PASS, FAIL, INCONCLUSIVE."""
        return self.value.upper()

    @property
    def exit_code(self) -> int:
        """`python -m gates` and the CI gate: 0 pass, 1 fail, 2 inconclusive."""
        return {Verdict.PASS: 0, Verdict.FAIL: 1, Verdict.INCONCLUSIVE: 2}[self]

    @classmethod
    def worst(cls, verdicts: Iterable[Verdict]) -> Verdict:
        """FAIL over INCONCLUSIVE over PASS: how several verdicts combine into one. None at all is
        INCONCLUSIVE (nothing judged never passes)."""
        order = (cls.PASS, cls.INCONCLUSIVE, cls.FAIL)
        return max((cls(v) for v in verdicts), key=order.index, default=cls.INCONCLUSIVE)


def _verdict(value: Any) -> Verdict:
    try:
        return Verdict(value)
    except ValueError:
        raise ValueError(f"verdict {value!r} is not one of {[v.value for v in Verdict]}") from None


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
    verdict: Verdict  # after hysteresis
    reason: str
    raw_verdict: Verdict  # this evaluation alone, before hysteresis
    source: str  # prometheus | loadtest
    queries: Mapping[str, Mapping[str, str]]  # arm -> role -> rendered PromQL (or load-test selection)
    values: Mapping[str, Any]
    threshold: Mapping[str, Any]
    ci: Mapping[str, Any]
    samples: Mapping[str, Any]
    consecutive_failures: int = 0  # failing evaluations in a row, this one included
    errors: Mapping[str, str] = field(default_factory=dict)  # arm -> named fetch error
    description: str = ""
    dry_run: bool = False  # recorded and shown, but no part of the evaluation's verdict
    # Inconclusive on thin data: about how many more seconds of data at the window's rate it needs to
    # decide, the estimate held where it is (None: decided, or no amount of data would tell).
    more_s: float | None = None

    @property
    def verdict_text(self) -> str:
        """The verdict as tables and status lines show it: `fail (dry-run)` for a gate that cannot decide."""
        return f"{self.verdict} (dry-run)" if self.dry_run else str(self.verdict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "verdict", _verdict(self.verdict))
        object.__setattr__(self, "raw_verdict", _verdict(self.raw_verdict))

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
                "dry_run": self.dry_run,
                "more_s": self.more_s,
            }
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GateResult:
        """The record `to_dict` wrote (JSON: a missing value, NaN on the way out, comes back as None)."""
        return cls(
            name=str(data["name"]),
            kind=str(data["kind"]),
            verdict=_verdict(data["verdict"]),
            reason=str(data.get("reason", "")),
            raw_verdict=_verdict(data.get("raw_verdict") or data["verdict"]),
            source=str(data.get("source", "prometheus")),
            queries=dict(data.get("queries") or {}),
            values=dict(data.get("values") or {}),
            threshold=dict(data.get("threshold") or {}),
            ci=dict(data.get("confidence_interval") or {}),
            samples=dict(data.get("samples") or {}),
            consecutive_failures=int(data.get("consecutive_failures") or 0),
            errors=dict(data.get("errors") or {}),
            description=str(data.get("description", "")),
            dry_run=bool(data.get("dry_run", False)),
            more_s=data.get("more_s"),
        )


@dataclass(frozen=True)
class Evaluation:
    verdict: Verdict
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
    error: str | None = None  # the evaluation itself could not run (then there are no gate results)

    def __post_init__(self) -> None:
        object.__setattr__(self, "verdict", _verdict(self.verdict))

    @classmethod
    def unavailable(
        cls, error: str, *, start: float, end: float, weights: Mapping[str, float], at: float
    ) -> Evaluation:
        """An evaluation that could not run (the evaluator raised): inconclusive, with the error."""
        return cls(
            verdict=Verdict.INCONCLUSIVE,
            reason=f"no evaluation: {error}",
            gates=(),
            profile="",
            start=start,
            end=end,
            weights=dict(weights),
            offered_rps=None,
            prometheus_url="",
            evaluated_at=at,
            error=error,
        )

    def gates_with(self, verdict: Verdict) -> tuple[str, ...]:
        """The deciding gates with this verdict (dry-run gates decide nothing: `dry_run_gates`)."""
        return tuple(g.name for g in self.gates if g.verdict is verdict and not g.dry_run)

    def dry_run_gates(self) -> tuple[GateResult, ...]:
        return tuple(g for g in self.gates if g.dry_run)

    def streaks(self) -> dict[str, int]:
        """Failing evaluations in a row per gate, this one included: what the next evaluation continues."""
        return {g.name: g.consecutive_failures for g in self.gates}

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
                **({"error": self.error} if self.error is not None else {}),
            }
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Evaluation:
        window = data.get("window") or {}
        return cls(
            verdict=_verdict(data["verdict"]),
            reason=str(data.get("reason", "")),
            gates=tuple(GateResult.from_dict(g) for g in data.get("gates") or ()),
            profile=str(data.get("profile", "")),
            start=float(window.get("start", 0.0)),
            end=float(window.get("end", 0.0)),
            weights=dict(data.get("weights") or {}),
            offered_rps=data.get("offered_rps"),
            prometheus_url=str(data.get("prometheus_url", "")),
            evaluated_at=float(data.get("evaluated_at") or 0.0),
            gate_file=str(data.get("gate_file", "defaults")),
            error=data.get("error"),
        )


def overall(gates: Sequence[GateResult]) -> tuple[Verdict, str]:
    """One verdict for an evaluation: any fail fails, else any inconclusive holds, else pass. Dry-run
    gates take no part; their verdicts are appended to the reason."""
    deciding = [g for g in gates if not g.dry_run]
    dry = [f"{g.name}={g.verdict}" for g in gates if g.dry_run]
    note = f" (dry-run: {', '.join(dry)})" if dry else ""
    if not deciding:
        return Verdict.INCONCLUSIVE, ("no gates were evaluated" if not gates else "only dry-run gates") + note
    verdict = Verdict.worst(g.verdict for g in deciding)
    if verdict is Verdict.PASS:
        return verdict, f"all {len(deciding)} gates passed{note}"
    return verdict, f"{verdict}: {', '.join(g.name for g in deciding if g.verdict is verdict)}{note}"

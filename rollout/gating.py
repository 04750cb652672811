"""The gate evaluator as the rollout sees it: one call per interval, a verdict and a record to keep.

The real evaluator is `gates.evaluate` over Prometheus (and the load test's per-request samples); the
state machine only needs this small interface, so it is tested against its own stand-in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rollout.routers.base import Weights

VERDICTS = ("pass", "fail", "inconclusive")


@dataclass(frozen=True)
class GateResult:
    verdict: str  # pass | fail | inconclusive (missing data never passes)
    record: dict[str, Any]  # the full evaluation record (queries, values per arm, thresholds, CIs, counts)
    gate_verdicts: tuple[tuple[str, str], ...]  # (gate name, verdict) in the evaluator's order
    raw: Any = None  # the evaluator's own object, handed back as `previous` on the next call

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"gate verdict {self.verdict!r} is not one of {VERDICTS}")

    def gates_with(self, verdict: str) -> tuple[str, ...]:
        return tuple(name for name, v in self.gate_verdicts if v == verdict)


class GateEvaluator(Protocol):
    def evaluate(self, *, start: float, end: float, weights: Weights, previous: list[Any]) -> GateResult: ...


def _gate_verdicts(record: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    gates = record.get("gates") or []
    if isinstance(gates, dict):
        gates = [{"name": name, **value} for name, value in gates.items()]
    return tuple((str(g.get("name", "?")), str(g.get("verdict", "inconclusive"))) for g in gates)


class PrometheusGates:
    """`gates.evaluate` with this rollout's fixed inputs; only the window and weights vary per call."""

    def __init__(
        self,
        *,
        gate_file: Path | None,
        gate_profile: str,
        prometheus_url: str,
        offered_rps: float,
        variables: dict[str, Any] | None = None,
        loadtest_samples: Path | None = None,
    ) -> None:
        from gates import load_gate_file  # imported here so the state machine imports without gates

        self.config = load_gate_file(gate_file, profile=gate_profile)
        self.prometheus_url = prometheus_url
        self.offered_rps = offered_rps
        self.variables = dict(variables or {})
        self.loadtest_samples = loadtest_samples

    def evaluate(self, *, start: float, end: float, weights: Weights, previous: list[Any]) -> GateResult:
        from gates import evaluate

        ev = evaluate(
            self.config,
            prometheus_url=self.prometheus_url,
            start=start,
            end=end,
            weights={"baseline": float(weights.baseline), "canary": float(weights.canary)},
            offered_rps=self.offered_rps,
            variables=self.variables,
            loadtest_samples=self.loadtest_samples,
            previous=previous,
        )
        record = ev.to_dict()
        return GateResult(
            verdict=str(ev.verdict), record=record, gate_verdicts=_gate_verdicts(record), raw=ev
        )

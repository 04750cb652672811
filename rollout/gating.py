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


def load_gate_config(
    gate_file: Path | None, *, gate_profile: str, overrides: dict[str, dict[str, Any]] | None = None
):
    """The gate file (None: the packaged defaults) with per-gate parameter overrides applied.

    A rollout profile sizes some gate parameters to its run length (e.g. the memory-leak gate's warm-up
    must fit inside a step); the overrides go through the gate file's own schema, so a bad key or value
    is reported by name exactly as in the file.
    """
    import yaml

    from gates.config import DEFAULT_GATE_FILE, GateConfigError, parse_gate_document

    if not overrides:
        from gates.config import load_gate_file

        return load_gate_file(gate_file, profile=gate_profile)
    path = DEFAULT_GATE_FILE if gate_file is None else Path(gate_file)
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise GateConfigError(f"cannot read gate file {path}: {exc}") from exc
    by_name = {str(g.get("name")): g for g in document.get("gates", []) if isinstance(g, dict)}
    for name, params in overrides.items():
        if name not in by_name:
            raise GateConfigError(f"gate override names unknown gate {name!r}; gates: {sorted(by_name)}")
        by_name[name].update(params)
    return parse_gate_document(
        document, gate_profile, source=f"{'defaults' if gate_file is None else path} + overrides"
    )


class PrometheusGates:
    """`gates.evaluate` with this rollout's fixed inputs; only the window and weights vary per call."""

    def __init__(
        self,
        *,
        config: Any,
        prometheus_url: str,
        offered_rps: float | None,
        variables: dict[str, Any] | None = None,
        loadtest_samples: Path | None = None,
    ) -> None:
        self.config = config
        self.prometheus_url = prometheus_url
        self.offered_rps = offered_rps
        self.variables = dict(variables or {})
        self.loadtest_samples = loadtest_samples

    def evaluate(self, *, start: float, end: float, weights: Weights, previous: list[Any]) -> GateResult:
        from gates.evaluate import evaluate

        samples = self.loadtest_samples if self.loadtest_samples and self.loadtest_samples.exists() else None
        ev = evaluate(
            self.config,
            prometheus_url=self.prometheus_url,
            start=start,
            end=end,
            weights={"baseline": float(weights.baseline), "canary": float(weights.canary)},
            offered_rps=self.offered_rps,
            variables=self.variables,
            loadtest_samples=samples,
            previous=previous,
        )
        record = ev.to_dict()
        return GateResult(
            verdict=str(ev.verdict), record=record, gate_verdicts=_gate_verdicts(record), raw=ev
        )

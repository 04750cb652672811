"""The gate evaluator as the rollout sees it: one call per interval, a typed `gates.Evaluation` back.

The real evaluator is `gates.evaluate` over Prometheus (and the load test's per-request samples); the
state machine only needs this small interface, so it is tested against its own stand-in.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from gates.config import GateConfig
from gates.record import Evaluation
from gates.sequential import Looks
from rollout.routers.base import Weights


class GateEvaluator(Protocol):
    def evaluate(
        self,
        *,
        start: float,
        end: float,
        weights: Weights,
        streaks: Mapping[str, int],
        looks: Looks | None = None,
    ) -> Evaluation: ...


def load_gate_config(
    gate_file: Path | None, *, gate_profile: str, overrides: dict[str, dict[str, Any]] | None = None
) -> GateConfig:
    """The gate file (None: the packaged defaults) with per-gate parameter overrides applied.

    A rollout profile sizes some gate parameters to its run length (e.g. the memory-leak gate's warm-up
    must fit inside a step); the overrides go through the gate file's own schema, so a bad key or value
    is reported by name exactly as in the file.
    """
    import yaml

    from gates.config import DEFAULT_GATE_FILE, GateConfigError, load_gate_file, parse_gate_document

    if not overrides:
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
    """`gates.evaluate` with this rollout's fixed inputs; only the window, weights and streaks vary."""

    def __init__(
        self,
        *,
        config: GateConfig,
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

    def evaluate(
        self,
        *,
        start: float,
        end: float,
        weights: Weights,
        streaks: Mapping[str, int],
        looks: Looks | None = None,
    ) -> Evaluation:
        from gates.evaluate import evaluate

        samples = self.loadtest_samples if self.loadtest_samples and self.loadtest_samples.exists() else None
        return evaluate(
            self.config,
            prometheus_url=self.prometheus_url,
            start=start,
            end=end,
            weights={"baseline": float(weights.baseline), "canary": float(weights.canary)},
            offered_rps=self.offered_rps,
            variables=self.variables,
            loadtest_samples=samples,
            streaks=streaks,
            looks=looks,
        )

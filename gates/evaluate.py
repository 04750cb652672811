"""One evaluation: render each gate's queries per arm, fetch, judge, apply hysteresis, build the record."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from gates import judge as J
from gates.kinds import KINDS
from gates.kinds.base import Context, Outcome
from gates.loadtest_samples import LoadtestSamples, read_loadtest_samples
from gates.provider import MetricsProvider, RangeSeries, Sample, UnreachableError
from gates.record import Evaluation, GateResult, Verdict, overall
from gates.sequential import Looks, judge_held, pass_confidence
from gates.spec import ARMS, GateConfig, GateConfigError, GateSpec
from infra.prometheus_api import PrometheusAPI


class _OneEvaluation:
    """Wraps a provider for one evaluation: once Prometheus is unreachable, later queries fail at once (no
    timeouts piling up across gates), and a query asked again is answered from memory (a held step judges
    a pass twice on the same data: gates/sequential.py)."""

    def __init__(self, inner: MetricsProvider) -> None:
        self.inner = inner
        self.down: UnreachableError | None = None
        self.answers: dict[tuple[Any, ...], Any] = {}

    def _call(self, key: tuple[Any, ...], fn: Callable[[], Any]) -> Any:
        if key in self.answers:
            return self.answers[key]
        if self.down is not None:
            raise UnreachableError(str(self.down))
        try:
            self.answers[key] = fn()
        except UnreachableError as exc:
            self.down = exc
            raise
        return self.answers[key]

    def instant(self, promql: str, at: float) -> list[Sample]:
        return self._call(("instant", promql, at), lambda: self.inner.instant(promql, at))

    def range(self, promql: str, start: float, end: float, step_s: float) -> list[RangeSeries]:
        key = ("range", promql, start, end, step_s)
        return self._call(key, lambda: self.inner.range(promql, start, end, step_s))


def _apply_hysteresis(gate: GateSpec, judgement: J.Judgement, streak_before: int) -> tuple[Verdict, str, int]:
    """A failure counts as `fail` only after `consecutive_failures` failing evaluations in a row;
    `streak_before` is the gate's count so far (an evaluation that passes or is inconclusive resets it)."""
    if judgement.verdict is not Verdict.FAIL:
        return judgement.verdict, judgement.reason, 0
    streak = streak_before + 1
    if streak >= gate.consecutive_failures:
        return Verdict.FAIL, judgement.reason, streak
    note = f"failing {streak} of {gate.consecutive_failures} consecutive evaluations needed to fail: "
    return Verdict.INCONCLUSIVE, note + judgement.reason, streak


def _judge(gate: GateSpec, ctx: Context, looks: Looks | None) -> tuple[Outcome, J.Judgement]:
    """The gate's kind evaluates it: its outcome (queries, errors) and the judgement of this look."""
    kind = KINDS[gate.kind]
    outcomes: list[Outcome] = []

    def judge(spec: GateSpec) -> J.Judgement:
        outcomes.append(kind.evaluate(spec, ctx))
        return outcomes[-1].judgement

    judgement = judge_held(judge, gate, pass_confidence(gate, looks, kind))
    return outcomes[0], judgement


def more_seconds(judgement: J.Judgement, span_s: float) -> float | None:
    """The judgement's `more_data` (times the data judged) as seconds more at the span's rate."""
    if judgement.verdict is not Verdict.INCONCLUSIVE or judgement.more_data is None:
        return None
    return max(0.0, (judgement.more_data - 1.0) * span_s)


def describe_wait(seconds: float) -> str:
    """'about 14 more minutes at this rate' (seconds under a minute and a half)."""
    if seconds < 90:
        return f"about {max(seconds, 1):.0f} more seconds at this rate"
    return f"about {seconds / 60:.0f} more minutes at this rate"


def evaluate(
    config: GateConfig,
    *,
    prometheus_url: str,
    start: float,
    end: float,
    weights: Mapping[str, float],
    offered_rps: float | None = None,
    variables: Mapping[str, Any] | None = None,
    loadtest_samples: str | os.PathLike[str] | LoadtestSamples | None = None,
    streaks: Mapping[str, int] | None = None,
    provider: MetricsProvider | None = None,
    timeout_s: float = 10.0,
    looks: Looks | None = None,
) -> Evaluation:
    """Evaluate every gate over [start, end] (unix seconds), both arms over the same window.

    `weights` are percent of traffic per arm; `streaks` are each gate's failing evaluations in a row
    before this one (`Evaluation.streaks()` of the previous evaluation; none: a fresh start), for
    hysteresis. `looks`: the windows of the step this evaluation is one look of, where a step held for
    evidence may pass (None: a single look); a pass then rests on the bound that holds across them all
    (gates/sequential.py). Raises GateConfigError for bad inputs; everything that goes wrong with the data
    makes the affected gate `inconclusive`.
    """
    if not end > start:
        raise GateConfigError(f"end ({end}) must be after start ({start})")
    for arm in ARMS:
        w = weights.get(arm)
        if w is None or not 0 <= float(w) <= 100:
            raise GateConfigError(f"weights.{arm} must be a percentage in [0, 100], got {w!r}")
    if offered_rps is not None and not offered_rps > 0:
        raise GateConfigError(f"offered_rps must be positive when given, got {offered_rps!r}")
    merged = config.check_variables(variables)
    samples = loadtest_samples
    if samples is not None and not isinstance(samples, LoadtestSamples):
        fields = tuple(
            sorted(
                {
                    str(g.params.get("loadtest_field", "e2e_ms"))
                    for g in config.gates
                    if g.kind == "latency_quantile"
                }
            )
        ) or ("e2e_ms",)
        samples = read_loadtest_samples(samples, start, end, fields)
    ctx = Context(
        provider=_OneEvaluation(provider or PrometheusAPI(prometheus_url, timeout_s)),
        start=float(start),
        end=float(end),
        weights={a: float(weights[a]) for a in ARMS},
        offered_rps=offered_rps,
        variables=merged,
        samples=samples,
    )
    results: list[GateResult] = []
    for gate in config.gates:
        outcome, j = _judge(gate, ctx, looks)
        more_s = more_seconds(j, outcome.span_s if outcome.span_s is not None else ctx.window_s)
        if more_s is not None:
            j = dataclasses.replace(j, reason=f"{j.reason}; {describe_wait(more_s)}")
        verdict, reason, streak = _apply_hysteresis(gate, j, (streaks or {}).get(gate.name, 0))
        results.append(
            GateResult(
                name=gate.name,
                kind=gate.kind,
                verdict=verdict,
                reason=reason,
                raw_verdict=j.verdict,
                source=outcome.source,
                queries=outcome.queries,
                values=j.values,
                threshold=j.threshold,
                ci=j.ci,
                samples=j.samples,
                consecutive_failures=streak,
                errors=outcome.errors,
                description=gate.description,
                dry_run=gate.dry_run,
                more_s=more_s,
            )
        )
    verdict, reason = overall(results)
    return Evaluation(
        verdict=verdict,
        reason=reason,
        gates=tuple(results),
        profile=config.profile,
        start=float(start),
        end=float(end),
        weights=dict(ctx.weights),
        offered_rps=offered_rps,
        prometheus_url=prometheus_url,
        evaluated_at=time.time(),
        gate_file=config.source,
    )


__all__ = ["evaluate"]

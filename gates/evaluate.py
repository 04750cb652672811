"""One evaluation: render each gate's queries per arm, fetch, judge, apply hysteresis, build the record."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gates import judge as J
from gates import stats
from gates.config import ARMS, GateConfig, GateConfigError, GateSpec, render
from gates.loadtest_samples import LoadtestSamples, read_loadtest_samples
from gates.memory_trend import memory_trends
from gates.provider import (
    MetricsProvider,
    ProviderError,
    RangeSeries,
    Sample,
    UnreachableError,
    histogram_buckets,
    per_series_range,
    single_value,
)
from gates.record import Evaluation, GateResult, Verdict, overall
from infra.prometheus_api import PrometheusAPI


class _StopAfterUnreachable:
    """Wraps a provider so that once Prometheus is unreachable, later queries fail at once (no timeouts
    piling up across gates in the same evaluation)."""

    def __init__(self, inner: MetricsProvider) -> None:
        self.inner = inner
        self.down: UnreachableError | None = None

    def _call(self, fn: Callable[[], Any]) -> Any:
        if self.down is not None:
            raise UnreachableError(str(self.down))
        try:
            return fn()
        except UnreachableError as exc:
            self.down = exc
            raise

    def instant(self, promql: str, at: float) -> list[Sample]:
        return self._call(lambda: self.inner.instant(promql, at))

    def range(self, promql: str, start: float, end: float, step_s: float) -> list[RangeSeries]:
        return self._call(lambda: self.inner.range(promql, start, end, step_s))


@dataclass(frozen=True)
class _Context:
    provider: MetricsProvider
    start: float
    end: float
    weights: Mapping[str, float]
    offered_rps: float | None
    variables: Mapping[str, Any]
    samples: LoadtestSamples | None

    @property
    def window_s(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class _Outcome:
    judgement: J.Judgement
    queries: dict[str, dict[str, str]]
    errors: dict[str, str]
    source: str = "prometheus"


def _per_arm(
    gate: GateSpec,
    ctx: _Context,
    role: str,
    fetch: Callable[[str], Any],
    queries: dict[str, dict[str, str]],
    errors: dict[str, str],
    window_s: float | None = None,
) -> dict[str, Any]:
    """Render `role` for both arms, fetch each; a fetch error is recorded by arm and leaves None."""
    out: dict[str, Any] = {}
    for arm in ARMS:
        promql = render(gate.queries[role], ctx.variables, arm=arm, window_s=window_s or ctx.window_s)
        queries.setdefault(arm, {})[role] = promql
        try:
            out[arm] = fetch(promql)
        except ProviderError as exc:
            errors[arm] = f"{exc.kind}: {exc}"
            out[arm] = None
    return out


def _errors_block(errors: Mapping[str, str], needed: Sequence[str]) -> J.Judgement | None:
    """Inconclusive when an arm the gate needs could not be fetched (missing data never passes)."""
    bad = [a for a in needed if a in errors]
    if not bad:
        return None
    return J.Judgement(J.INCONCLUSIVE, "; ".join(f"{a}: {errors[a]}" for a in bad))


def _threshold(gate: GateSpec, ctx: _Context) -> _Outcome:
    queries: dict[str, dict[str, str]] = {}
    errors: dict[str, str] = {}
    p = ctx.provider
    values = _per_arm(gate, ctx, "value", lambda q: single_value(p, q, ctx.end), queries, errors)
    samples = None
    if "samples" in gate.queries:
        samples = _per_arm(gate, ctx, "samples", lambda q: single_value(p, q, ctx.end), queries, errors)
    blocked = _errors_block(errors, gate.arms)
    j = blocked or J.judge_threshold(
        values,
        arms=gate.arms,
        max_value=gate.params.get("max"),
        min_value=gate.params.get("min"),
        samples=samples,
        min_samples=int(gate.params["min_samples"]),
        unit=str(gate.params.get("unit", "")),
    )
    if blocked:
        bounds = {k: gate.params[k] for k in ("max", "min") if k in gate.params}
        j = J.Judgement(j.verdict, j.reason, values, bounds)
    return _Outcome(j, queries, errors)


def _latency(gate: GateSpec, ctx: _Context) -> _Outcome:
    q = float(gate.params["quantile"])
    source = gate.params["source"]
    if source == "auto":
        source = "loadtest" if ctx.samples is not None else "prometheus"
    compare = all(ctx.weights.get(a, 0.0) > 0 for a in ARMS)
    max_ratio = gate.params.get("max_ratio")
    needed = list(dict.fromkeys(list(gate.arms) + (list(ARMS) if compare and max_ratio is not None else [])))
    queries: dict[str, dict[str, str]] = {}
    errors: dict[str, str] = {}
    estimates: dict[str, stats.QuantileEstimate] = {}
    exceedance: dict[str, tuple[float, float]] = {}
    shift: stats.ShiftTest | None = None
    if source == "loadtest":
        field = str(gate.params["loadtest_field"])
        if ctx.samples is None:
            j = J.Judgement(J.INCONCLUSIVE, "source is 'loadtest' but no load-test samples were given")
            return _Outcome(j, queries, errors, source)
        for arm in ARMS:
            queries[arm] = {
                "samples": f"{ctx.samples.source}: {field} of ok requests, arm={arm}, "
                f"completed in [{ctx.start:.0f}, {ctx.end:.0f}]"
            }
            estimates[arm] = stats.harrell_davis_quantile(
                ctx.samples.arm_values(field, arm) / 1000.0, q, gate.confidence
            )
        shift = stats.quantile_shift(
            ctx.samples.arm_values(field, "canary"),
            ctx.samples.arm_values(field, "baseline"),
            q,
            gate.confidence,
        )
    else:
        p = ctx.provider
        buckets = _per_arm(
            gate, ctx, "buckets", lambda promql: histogram_buckets(p, promql, ctx.end), queries, errors
        )
        max_seconds = gate.params.get("max_seconds")
        for arm, b in buckets.items():
            if b is not None:
                estimates[arm] = stats.histogram_quantile(b[0], b[1], q, gate.confidence)
                if max_seconds is not None:
                    exceedance[arm] = stats.fraction_above(b[0], b[1], float(max_seconds))
    blocked = _errors_block(errors, needed)
    if blocked:
        return _Outcome(blocked, queries, errors, source)
    j = J.judge_latency_quantile(
        estimates,
        quantile=q,
        arms=gate.arms,
        max_seconds=gate.params.get("max_seconds"),
        max_ratio=max_ratio,
        min_samples=int(gate.params["min_samples"]),
        confidence=gate.confidence,
        compare=compare,
        exceedance=exceedance or None,
        shift=shift,
    )
    return _Outcome(j, queries, errors, source)


def _throughput(gate: GateSpec, ctx: _Context) -> _Outcome:
    queries: dict[str, dict[str, str]] = {}
    errors: dict[str, str] = {}
    p = ctx.provider
    counts = _per_arm(gate, ctx, "requests", lambda q: single_value(p, q, ctx.end), queries, errors)
    active = [a for a in ARMS if ctx.weights.get(a, 0.0) > 0]
    blocked = _errors_block(errors, active)
    j = blocked or J.judge_throughput(
        counts,
        window_s=ctx.window_s,
        weights=ctx.weights,
        offered_rps=ctx.offered_rps,
        min_offered_fraction=float(gate.params["min_offered_fraction"]),
        max_share_drop=float(gate.params["max_share_drop"]),
        min_samples=int(gate.params["min_samples"]),
        confidence=gate.confidence,
    )
    return _Outcome(j, queries, errors)


def _error_rate(gate: GateSpec, ctx: _Context) -> _Outcome:
    queries: dict[str, dict[str, str]] = {}
    errors: dict[str, str] = {}
    p = ctx.provider
    errs = _per_arm(gate, ctx, "errors", lambda q: single_value(p, q, ctx.end), queries, errors)
    reqs = _per_arm(gate, ctx, "requests", lambda q: single_value(p, q, ctx.end), queries, errors)
    blocked = _errors_block(errors, gate.arms)
    j = blocked or J.judge_error_rate(
        errs,
        reqs,
        arms=gate.arms,
        max_rate=float(gate.params["max"]),
        min_samples=int(gate.params["min_samples"]),
        confidence=gate.confidence,
    )
    return _Outcome(j, queries, errors)


def _memory_leak(gate: GateSpec, ctx: _Context) -> _Outcome:
    queries: dict[str, dict[str, str]] = {}
    errors: dict[str, str] = {}
    begin = ctx.start + float(gate.params["warmup_seconds"])
    # A short bake window is sampled more finely (down to 1 s) so it still yields min_points; its wider
    # slope interval then says how little a short window can tell.
    step = max(
        min(float(gate.params["step_seconds"]), (ctx.end - begin) / int(gate.params["min_points"])), 1.0
    )
    floor = float(gate.params["floor_bytes_per_minute"]) / 60.0
    if ctx.end - begin < step * 3:
        j = J.Judgement(
            J.INCONCLUSIVE,
            f"window of {ctx.window_s:.0f}s leaves too little after {gate.params['warmup_seconds']}s warm-up",
        )
        return _Outcome(j, queries, errors)
    p = ctx.provider
    series = _per_arm(
        gate, ctx, "memory", lambda q: per_series_range(p, q, begin, ctx.end, step), queries, errors
    )
    for arm in ARMS:
        queries[arm]["memory"] += f"  [range {begin:.0f}..{ctx.end:.0f} step {step:g}s, one series per pod]"
    blocked = _errors_block(errors, ARMS)
    if blocked:
        return _Outcome(blocked, queries, errors)
    min_points = int(gate.params["min_points"])
    min_cycles = int(gate.params["min_cycles"])
    estimate = memory_trends(
        [(s.times, s.values) for s in series["canary"]],
        [(s.times, s.values) for s in series["baseline"]],
        gate.confidence,
        min_points,
        use_floors=min_cycles > 0,  # 0: windows shorter than a collection cycle judge every sample
    )
    j = J.judge_memory_leak(
        estimate,
        floor_bytes_per_s=floor,
        min_points=min_points,
        min_cycles=min_cycles,
        confidence=gate.confidence,
        origin=ctx.start,
    )
    return _Outcome(j, queries, errors)


KIND_EVALUATORS: dict[str, Callable[[GateSpec, _Context], _Outcome]] = {
    "threshold": _threshold,
    "latency_quantile": _latency,
    "throughput": _throughput,
    "error_rate": _error_rate,
    "memory_leak": _memory_leak,
}


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
) -> Evaluation:
    """Evaluate every gate over [start, end] (unix seconds), both arms over the same window.

    `weights` are percent of traffic per arm; `streaks` are each gate's failing evaluations in a row
    before this one (`Evaluation.streaks()` of the previous evaluation; none: a fresh start), for hysteresis. Raises GateConfigError for bad inputs; everything that
    goes wrong with the data makes the affected gate `inconclusive`.
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
    ctx = _Context(
        provider=_StopAfterUnreachable(provider or PrometheusAPI(prometheus_url, timeout_s)),
        start=float(start),
        end=float(end),
        weights={a: float(weights[a]) for a in ARMS},
        offered_rps=offered_rps,
        variables=merged,
        samples=samples,
    )
    results: list[GateResult] = []
    for gate in config.gates:
        outcome = KIND_EVALUATORS[gate.kind](gate, ctx)
        verdict, reason, streak = _apply_hysteresis(
            gate, outcome.judgement, (streaks or {}).get(gate.name, 0)
        )
        j = outcome.judgement
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


__all__ = ["KIND_EVALUATORS", "evaluate"]

"""`memory_leak`: the per-pod growth of resident / working-set memory over the window (the trend of the
collection floors under a garbage-collector sawtooth), canary versus baseline, with an interval."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from gates import judge as J
from gates import stats
from gates.evidence import Expectation
from gates.kinds.base import (
    POSITIVE,
    Check,
    Context,
    Dialect,
    GateKind,
    Outcome,
    Panel,
    errors_block,
    guarded,
    kind_schema,
    panel_queries,
    panel_title,
    per_arm,
)
from gates.memory_trend import SAMPLES, ArmTrend, LeakEstimate, PodSeries, memory_trends
from gates.provider import per_series_range
from gates.spec import ARMS, GateSpec


def sampling_step(gate: GateSpec, span_s: float) -> float:
    """A short bake window is sampled more finely (down to 1 s) so it still yields min_points; its wider
    slope interval then says how little a short window can tell."""
    return max(min(float(gate.params["step_seconds"]), span_s / int(gate.params["min_points"])), 1.0)


def with_warm_pods(gate: GateSpec) -> GateSpec:
    """The gate with its `memory` query leaving out the samples taken within warmup_seconds of their
    series' start (the `started` query, labelled like `memory`'s series), when the gate has one: a pod
    younger than the window must not read its start-up ramp as a leak (time() is each sample's own
    time in a range query or subquery). A series without a start time is kept whole."""
    if "started" not in gate.queries:
        return gate
    warm = (
        f"({gate.queries['memory']}) unless ((time() - ({gate.queries['started']})) "
        f"<= {float(gate.params['warmup_seconds']):g})"
    )
    return replace(gate, queries={**gate.queries, "memory": warm})


def evaluate(gate: GateSpec, ctx: Context) -> Outcome:
    gate = with_warm_pods(gate)
    queries: dict[str, dict[str, str]] = {}
    errors: dict[str, str] = {}
    begin = ctx.start + float(gate.params["warmup_seconds"])
    step = sampling_step(gate, ctx.end - begin)
    if ctx.end - begin < step * 3:
        j = J.Judgement(
            J.INCONCLUSIVE,
            f"window of {ctx.window_s:.0f}s leaves too little after {gate.params['warmup_seconds']}s warm-up",
        )
        return Outcome(j, queries, errors)
    p = ctx.provider
    series = per_arm(
        gate, ctx, "memory", lambda q: per_series_range(p, q, begin, ctx.end, step), queries, errors
    )
    for arm in ARMS:
        queries[arm]["memory"] += f"  [range {begin:.0f}..{ctx.end:.0f} step {step:g}s, one series per pod]"
    blocked = errors_block(errors, ARMS)
    if blocked:
        return Outcome(blocked, queries, errors)
    pods = {arm: [(s.times, s.values) for s in series[arm]] for arm in ARMS}
    j = judge(gate, pods["canary"], pods["baseline"], origin=ctx.start)
    return Outcome(j, queries, errors, span_s=ctx.end - begin)


def judge(
    gate: GateSpec, canary: Sequence[PodSeries], baseline: Sequence[PodSeries], origin: float = 0.0
) -> J.Judgement:
    """Each arm's per-pod series (after the warm-up) to the verdict, with this gate's parameters."""
    min_points = int(gate.params["min_points"])
    min_cycles = int(gate.params["min_cycles"])
    estimate = memory_trends(
        canary,
        baseline,
        gate.confidence,
        min_points,
        use_floors=min_cycles > 0,  # 0: windows shorter than a collection cycle judge every sample
    )
    return J.judge_memory_leak(
        estimate,
        leak_bytes_per_s=float(gate.params["leak_bytes_per_minute"]) / 60.0,
        min_points=min_points,
        min_cycles=min_cycles,
        confidence=gate.confidence,
        origin=origin,
    )


def checks(gate: GateSpec, dialect: Dialect) -> list[Check]:
    """Per pod: the lower envelope (minimum over the last envelope_seconds, at least one collection cycle)
    and its deriv over the window, averaged over the arm's pods. With `started`, a pod's envelope counts
    only once the pod has lived warmup_seconds + envelope_seconds: before that it is the running minimum
    since the pod began, flat under any growth, so a young leaking pod read as no leak at all (found with
    the real Argo Rollouts: tests/helm/test_argo_traffic.py). No interval, no setting aside of a one-time
    rise (docs/gates.md says what that costs)."""
    gate = with_warm_pods(gate)
    p = gate.params
    step = f"{int(p['step_seconds'])}s"
    span = f"{int(p['envelope_seconds'])}s"
    envelope = {a: f"min_over_time(({dialect.query(gate, 'memory', a)})[{span}:{step}])" for a in ARMS}
    if "started" in gate.queries:
        lived = float(p["warmup_seconds"]) + float(p["envelope_seconds"])
        envelope = {
            a: f"{envelope[a]} unless ((time() - ({dialect.query(gate, 'started', a)})) < {lived:g})"
            for a in ARMS
        }
    slope = {a: f"avg(deriv(({envelope[a]})[{dialect.window}:{step}]))" for a in ARMS}
    points = [
        f"min(count_over_time(({envelope[a]})[{dialect.window}:{step}])) >= {int(p['min_points'])}"
        for a in ARMS
    ]
    difference = guarded(f"{slope['canary']} - {slope['baseline']}", *points)
    return [Check(gate.name, "slope-vs-baseline", difference, "<=", float(p["leak_bytes_per_minute"]) / 60)]


def panel(gate: GateSpec, variables: Mapping[str, Any], window_s: float) -> tuple[Panel, ...]:
    """Each arm's memory series (one per pod, per process locally) averaged, in MiB: the growth it judges is
    per pod, so a pod more or fewer does not read as a step. No bound: it judges a slope, not a level."""
    queries = panel_queries(gate, "memory", variables, window_s, lambda memory: f"avg({memory})")
    title = panel_title(gate, "mean of its series")
    return (Panel(title, "MiB", queries, 1 / 2**20, from_zero=False),)


def data_seconds(gate: GateSpec, arm_rps: Mapping[str, float]) -> float:
    """The check's guard: min_points samples a step apart in the window, from pods that lived through
    it (a canary pod younger than the window counts fewer)."""
    return float(gate.params["min_points"]) * float(gate.params["step_seconds"])


def history_seconds(gate: GateSpec) -> float:
    """How long the exported check must read of a pod's life, and of a step's traffic, before its value
    is the step's: the warm-up, one envelope span (the envelope reaches that far back) and min_points
    steps of the envelope (`checks`)."""
    p = gate.params
    return (
        float(p["warmup_seconds"])
        + float(p["envelope_seconds"])
        + int(p["min_points"]) * float(p["step_seconds"])
    )


def healthy(gate: GateSpec, expect: Expectation) -> J.Judgement:
    """Flat memory with independent noise of the assumed spread around it, sampled after the warm-up: a
    least-squares slope over n points a step apart has a standard error of
    noise * sqrt(12 / (n (n^2 - 1))) / step, averaged over the arm's pods. It leaves out what stretches
    a real window (a collection sawtooth, correlated noise): measured memory needs at least this long."""
    span = expect.seconds - float(gate.params["warmup_seconds"])
    step = sampling_step(gate, span)
    a = expect.assumptions
    n = int(span / step) + 1 if span > 0 else 0
    leak = float(gate.params["leak_bytes_per_minute"]) / 60.0
    args = dict(min_points=int(gate.params["min_points"]), min_cycles=0, confidence=gate.confidence)
    if n < max(int(gate.params["min_points"]), 3):
        return J.judge_memory_leak(None, leak_bytes_per_s=leak, **args)  # type: ignore[arg-type]
    se = a.memory_noise_mib * J.MIB * math.sqrt(12.0 / (n * (n * n - 1))) / step / math.sqrt(a.pods_per_arm)
    half = stats.z_two_sided(gate.confidence) * se
    arm = ArmTrend(0.0, -half, half, n * a.pods_per_arm, a.pods_per_arm, 0, 0, None, SAMPLES)
    both = half * math.sqrt(2.0)
    estimate = LeakEstimate(SAMPLES, arm, arm, 0.0, -both, both, float(n), 0.0)
    return J.judge_memory_leak(estimate, leak_bytes_per_s=leak, **args)  # type: ignore[arg-type]


def information(gate: GateSpec, window_s: float) -> float:
    """A slope's variance falls as the cube of the span judged after the warm-up."""
    return max(window_s - float(gate.params["warmup_seconds"]), 0.0) ** 3


KIND = GateKind(
    name="memory_leak",
    schema=kind_schema(
        ["memory"],
        ["started"],
        {
            "leak_bytes_per_minute": {"type": "number", "minimum": 0},
            "warmup_seconds": {"type": "number", "minimum": 0},
            "step_seconds": POSITIVE,
            "min_points": {"type": "integer", "minimum": 3},
            "min_cycles": {"type": "integer", "minimum": 0},
            "envelope_seconds": POSITIVE,
        },
    ),
    defaults={
        "leak_bytes_per_minute": 1572864.0,
        "warmup_seconds": 60.0,
        "step_seconds": 10.0,
        "min_points": 20,
        "min_cycles": 2,
        "envelope_seconds": 300.0,
    },
    evaluate=evaluate,
    checks=checks,
    data_seconds=data_seconds,
    history_seconds=history_seconds,
    healthy=healthy,
    panel=panel,
    information=information,
    pass_intervals=2,  # the canary's own slope, or its excess over the baseline's (gates/judge.py)
)

"""`throughput`: achieved versus offered requests, and the canary's per share of traffic versus baseline's.
No fixed-bound export: it needs the offered rate and the weights.

Both comparisons hold only over a span in which every arm with traffic existed: a canary whose pods
started inside the window served nothing before, which is no shortfall. The gate finds when each arm's
requests began to be counted and judges from the latest such start (the reason says so)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from gates import judge as J
from gates.evidence import Expectation
from gates.kinds.base import (
    COUNT,
    Context,
    GateKind,
    Outcome,
    Panel,
    errors_block,
    kind_schema,
    panel_queries,
    panel_title,
    per_arm,
)
from gates.provider import ProviderError, per_series_range, single_value
from gates.spec import ARMS, GateSpec, render

SPAN_POINTS = 60  # samples over the window when finding when an arm began counting requests
LOOKBACK_S = 60.0  # each sample's range: several scrapes, so an arm counting all along has one at the start


def began(gate: GateSpec, ctx: Context, arms: list[str]) -> float:
    """The latest time one of `arms` began counting requests within the window (the window's start when
    all did before it), to a step of the window / SPAN_POINTS. An arm whose counts cannot be fetched is
    left to the count query to report."""
    step = max(ctx.window_s / SPAN_POINTS, 1.0)
    latest = ctx.start
    for arm in arms:
        promql = render(gate.queries["requests"], ctx.variables, arm=arm, window_s=max(step, LOOKBACK_S))
        try:
            series = per_series_range(ctx.provider, promql, ctx.start, ctx.end, step)
        except ProviderError:
            continue
        first = min(float(s.times[0]) for s in series)
        if first > ctx.start + step:  # no count at the window's start: the arm began after it
            latest = max(latest, first - step)
    return latest


def evaluate(gate: GateSpec, ctx: Context) -> Outcome:
    queries: dict[str, dict[str, str]] = {}
    errors: dict[str, str] = {}
    active = [a for a in ARMS if ctx.weights.get(a, 0.0) > 0]
    start = began(gate, ctx, active)
    span = ctx.end - start
    counts = per_arm(
        gate, ctx, "requests", lambda q: single_value(ctx.provider, q, ctx.end), queries, errors, span
    )
    blocked = errors_block(errors, active)
    j = blocked or judge(gate, counts, span, ctx.weights, ctx.offered_rps)
    if start > ctx.start and not blocked:
        note = f"judged the last {span:.0f}s of the {ctx.window_s:.0f}s window: an arm began serving then"
        j = dataclasses.replace(j, reason=f"{note}; {j.reason}")
    return Outcome(j, queries, errors, span_s=span)


def judge(
    gate: GateSpec,
    counts: Mapping[str, float | None],
    window_s: float,
    weights: Mapping[str, float],
    offered_rps: float | None,
) -> J.Judgement:
    """`judge_throughput` with this gate's parameters."""
    return J.judge_throughput(
        counts,
        window_s=window_s,
        weights=weights,
        offered_rps=offered_rps,
        min_offered_fraction=float(gate.params["min_offered_fraction"]),
        max_share_drop=float(gate.params["max_share_drop"]),
        min_samples=int(gate.params["min_samples"]),
        confidence=gate.confidence,
    )


def panel(gate: GateSpec, variables: Mapping[str, Any], window_s: float) -> tuple[Panel, ...]:
    """The rate each arm served: its request count over the window, per second. No bound: what it judges
    against is the offered rate and the weights of the moment."""
    queries = panel_queries(gate, "requests", variables, window_s, lambda count: f"({count}) / {window_s:g}")
    return (Panel(panel_title(gate, "requests served per second"), "req/s", queries),)


def healthy(gate: GateSpec, expect: Expectation) -> J.Judgement:
    """Every arm serves exactly its share of the offered rate."""
    counts: dict[str, float | None] = {a: expect.requests(a) for a in ARMS}
    return judge(gate, counts, expect.seconds, expect.weights, expect.rate_rps)


KIND = GateKind(
    name="throughput",
    schema=kind_schema(
        ["requests"],
        [],
        {
            "min_offered_fraction": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "max_share_drop": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
            "min_samples": COUNT,
        },
    ),
    defaults={"min_offered_fraction": 0.90, "max_share_drop": 0.05, "min_samples": 100},
    evaluate=evaluate,
    healthy=healthy,
    panel=panel,
)

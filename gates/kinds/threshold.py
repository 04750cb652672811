"""`threshold`: one number per arm (e.g. CPU used over CPU available) within [min, max], judged by the
interval of its mean over successive sub-windows of the window."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gates import judge as J
from gates.evidence import Expectation
from gates.kinds.base import (
    ARMS_SCHEMA,
    COUNT,
    NUMBER,
    POSITIVE,
    Bound,
    Check,
    Context,
    Dialect,
    GateKind,
    Outcome,
    Panel,
    errors_block,
    guarded,
    instant_per_arm,
    kind_schema,
    panel_queries,
    panel_title,
    per_arm,
)
from gates.provider import single_range
from gates.spec import GateSpec


def subwindows(span_s: float, step_s: float) -> int:
    """Whole sub-windows of `step_s` in a span (a float's rounding does not lose the last one)."""
    return int(span_s / step_s + 1e-9)


def evaluate(gate: GateSpec, ctx: Context) -> Outcome:
    queries: dict[str, dict[str, str]] = {}
    errors: dict[str, str] = {}
    values = instant_per_arm(gate, ctx, "value", queries, errors)
    samples = None
    if "samples" in gate.queries:
        samples = instant_per_arm(gate, ctx, "samples", queries, errors)
    # The same query with ${window} = one step, at that step over the window: each point covers the step
    # before it, so the points tile the window's end without reaching before its start.
    step = float(gate.params["step_seconds"])
    n = subwindows(ctx.window_s, step)
    series: dict[str, Any] = {}
    if n > 0:
        first = ctx.end - (n - 1) * step
        ranged: dict[str, dict[str, str]] = {}
        range_errors: dict[str, str] = {}
        fetched = per_arm(
            gate,
            ctx,
            "value",
            lambda q: single_range(ctx.provider, q, first, ctx.end, step),
            ranged,
            range_errors,
            window_s=step,
        )
        series = {a: s.values for a, s in fetched.items() if s is not None}
        for arm, roles in ranged.items():
            queries[arm]["value_subwindows"] = (
                f"{roles['value']}  [range {first:.0f}..{ctx.end:.0f} step {step:g}s]"
            )
        for arm, error in range_errors.items():
            errors.setdefault(arm, error)  # the window's own error, when there is one, says it first
    blocked = errors_block(errors, gate.arms)
    j = blocked or J.judge_threshold(
        values,
        arms=gate.arms,
        subwindows=series,
        min_points=int(gate.params["min_points"]),
        confidence=gate.confidence,
        max_value=gate.params.get("max"),
        min_value=gate.params.get("min"),
        samples=samples,
        min_samples=int(gate.params["min_samples"]),
        unit=str(gate.params.get("unit", "")),
    )
    if blocked:
        bounds = {k: gate.params[k] for k in ("max", "min") if k in gate.params}
        j = J.Judgement(j.verdict, j.reason, values, bounds)
    return Outcome(j, queries, errors, span_s=n * step if n > 0 else None)


def checks(gate: GateSpec, dialect: Dialect) -> list[Check]:
    p = gate.params
    out = []
    for arm in gate.arms:
        guard = (
            [f"{dialect.query(gate, 'samples', arm)} >= {int(p['min_samples'])}"]
            if "samples" in gate.queries
            else []
        )
        for key, op in (("max", "<="), ("min", ">=")):
            if key in p:
                value = guarded(dialect.query(gate, "value", arm), *guard)
                out.append(Check(gate.name, f"{arm}-{key}", value, op, float(p[key])))
    return out


DISPLAY = {"fraction": ("%", 100.0)}  # unit -> (shown as, scale): a fraction is drawn as a percentage


def panel(gate: GateSpec, variables: Mapping[str, Any], window_s: float) -> tuple[Panel, ...]:
    """Its value per arm, with its max and min."""
    unit = str(gate.params.get("unit", ""))
    shown, scale = DISPLAY.get(unit, (unit, 1.0))
    bounds = tuple(Bound(k, float(gate.params[k]), gate.arms) for k in ("max", "min") if k in gate.params)
    queries = panel_queries(gate, "value", variables, window_s)
    return (Panel(panel_title(gate), shown, queries, scale, bounds),)


def healthy(gate: GateSpec, expect: Expectation) -> J.Judgement:
    """A healthy canary's value is assumed well within its bounds: its interval clears them once
    `min_points` sub-windows exist. A value near a bound needs longer (the interval's half-width falls as
    the square root of the sub-windows), a noisy or slowly swinging load longer still."""
    need = int(gate.params["min_points"])
    n = subwindows(expect.seconds, float(gate.params["step_seconds"]))
    if n < need:
        return J.Judgement(
            J.INCONCLUSIVE, f"too few sub-windows ({n} < {need})", more_data=need / n if n else None
        )
    return J.Judgement(J.PASS, f"{n} sub-windows: a value well within its bounds passes")


def rules(raw: Mapping[str, Any]) -> str | None:
    if "min" in raw and "max" in raw and raw["min"] > raw["max"]:
        return f"min: {raw['min']} is above max {raw['max']}"
    return None


KIND = GateKind(
    name="threshold",
    schema=kind_schema(
        ["value"],
        ["samples"],
        {
            "arms": ARMS_SCHEMA,
            "max": NUMBER,
            "min": NUMBER,
            "min_samples": COUNT,
            "unit": {"type": "string"},
            "step_seconds": POSITIVE,  # a sub-window: at least two scrapes of the value's series
            "min_points": {"type": "integer", "minimum": 2},  # sub-windows before the interval is judged
        },
        anyOf=[{"required": ["max"]}, {"required": ["min"]}],
    ),
    defaults={"arms": ["canary"], "min_samples": 1, "unit": "", "step_seconds": 30.0, "min_points": 4},
    evaluate=evaluate,
    checks=checks,
    rules=rules,
    healthy=healthy,
    panel=panel,
)

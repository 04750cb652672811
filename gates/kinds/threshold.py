"""`threshold`: one number per arm (e.g. CPU used over CPU available) within [min, max]."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gates import judge as J
from gates.evidence import Expectation
from gates.kinds.base import (
    ARMS_SCHEMA,
    COUNT,
    NUMBER,
    Check,
    Context,
    Dialect,
    GateKind,
    Outcome,
    errors_block,
    guarded,
    instant_per_arm,
    kind_schema,
)
from gates.spec import GateSpec


def evaluate(gate: GateSpec, ctx: Context) -> Outcome:
    queries: dict[str, dict[str, str]] = {}
    errors: dict[str, str] = {}
    values = instant_per_arm(gate, ctx, "value", queries, errors)
    samples = None
    if "samples" in gate.queries:
        samples = instant_per_arm(gate, ctx, "samples", queries, errors)
    blocked = errors_block(errors, gate.arms)
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
    return Outcome(j, queries, errors)


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


def healthy(gate: GateSpec, expect: Expectation) -> J.Judgement:
    """A rate over the window (e.g. CPU seconds per second) has no sampling noise to wait out: a value
    within the bounds passes at the first evaluation."""
    return J.Judgement(J.PASS, "no sampling noise: within its bounds it passes at the first evaluation")


def rules(raw: Mapping[str, Any]) -> str | None:
    if "min" in raw and "max" in raw and raw["min"] > raw["max"]:
        return f"min: {raw['min']} is above max {raw['max']}"
    return None


KIND = GateKind(
    name="threshold",
    schema=kind_schema(
        ["value"],
        ["samples"],
        {"arms": ARMS_SCHEMA, "max": NUMBER, "min": NUMBER, "min_samples": COUNT, "unit": {"type": "string"}},
        anyOf=[{"required": ["max"]}, {"required": ["min"]}],
    ),
    defaults={"arms": ["canary"], "min_samples": 1, "unit": ""},
    evaluate=evaluate,
    checks=checks,
    rules=rules,
    healthy=healthy,
)

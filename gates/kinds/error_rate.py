"""`error_rate`: failed requests over all requests, per judged arm, below `max` (Clopper-Pearson)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gates import judge as J
from gates.evidence import Expectation
from gates.kinds.base import (
    ARMS_SCHEMA,
    COUNT,
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
    seconds_for_requests,
)
from gates.spec import ARMS, GateSpec


def evaluate(gate: GateSpec, ctx: Context) -> Outcome:
    queries: dict[str, dict[str, str]] = {}
    errors: dict[str, str] = {}
    errs = instant_per_arm(gate, ctx, "errors", queries, errors)
    reqs = instant_per_arm(gate, ctx, "requests", queries, errors)
    blocked = errors_block(errors, gate.arms)
    return Outcome(blocked or judge(gate, errs, reqs), queries, errors)


def judge(
    gate: GateSpec, errors: Mapping[str, float | None], requests: Mapping[str, float | None]
) -> J.Judgement:
    """`judge_error_rate` with this gate's parameters."""
    return J.judge_error_rate(
        errors,
        requests,
        arms=gate.arms,
        max_rate=float(gate.params["max"]),
        min_samples=int(gate.params["min_samples"]),
        confidence=gate.confidence,
    )


def checks(gate: GateSpec, dialect: Dialect) -> list[Check]:
    out = []
    for arm in gate.arms:
        requests = dialect.query(gate, "requests", arm)
        ratio = f"({dialect.query(gate, 'errors', arm)}) / ({requests})"
        enough_requests = f"{requests} >= {int(gate.params['min_samples'])}"
        out.append(Check(gate.name, arm, guarded(ratio, enough_requests), "<=", float(gate.params["max"])))
    return out


def panel(gate: GateSpec, variables: Mapping[str, Any], window_s: float) -> tuple[Panel, ...]:
    """Errors over requests per arm, in %, with its max."""
    errors = panel_queries(gate, "errors", variables, window_s)
    requests = panel_queries(gate, "requests", variables, window_s)
    queries = {arm: f"({errors[arm]}) / ({requests[arm]})" for arm in ARMS}
    bound = Bound("max", float(gate.params["max"]), gate.arms)
    return (Panel(panel_title(gate, "errors / requests"), "%", queries, 100.0, (bound,)),)


def data_seconds(gate: GateSpec, arm_rps: Mapping[str, float]) -> float:
    """Each check's guard: min_samples requests to the arm."""
    return seconds_for_requests(int(gate.params["min_samples"]), gate.arms, arm_rps)


def healthy(gate: GateSpec, expect: Expectation) -> J.Judgement:
    """No errors among the requests each judged arm receives."""
    return judge(gate, {a: 0.0 for a in gate.arms}, {a: expect.requests(a) for a in gate.arms})


KIND = GateKind(
    name="error_rate",
    schema=kind_schema(
        ["errors", "requests"],
        [],
        {"arms": ARMS_SCHEMA, "max": {"type": "number", "minimum": 0, "maximum": 1}, "min_samples": COUNT},
        required=("max",),
    ),
    defaults={"arms": ["canary"], "min_samples": 300},
    evaluate=evaluate,
    checks=checks,
    data_seconds=data_seconds,
    healthy=healthy,
    panel=panel,
)

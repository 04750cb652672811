"""`error_rate`: failed requests over all requests, per judged arm, below `max` (Clopper-Pearson)."""

from __future__ import annotations

from gates import judge as J
from gates.evidence import Expectation
from gates.kinds.base import (
    ARMS_SCHEMA,
    COUNT,
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
    errs = instant_per_arm(gate, ctx, "errors", queries, errors)
    reqs = instant_per_arm(gate, ctx, "requests", queries, errors)
    blocked = errors_block(errors, gate.arms)
    j = blocked or J.judge_error_rate(
        errs,
        reqs,
        arms=gate.arms,
        max_rate=float(gate.params["max"]),
        min_samples=int(gate.params["min_samples"]),
        confidence=gate.confidence,
    )
    return Outcome(j, queries, errors)


def checks(gate: GateSpec, dialect: Dialect) -> list[Check]:
    out = []
    for arm in gate.arms:
        requests = dialect.query(gate, "requests", arm)
        ratio = f"({dialect.query(gate, 'errors', arm)}) / ({requests})"
        enough_requests = f"{requests} >= {int(gate.params['min_samples'])}"
        out.append(Check(gate.name, arm, guarded(ratio, enough_requests), "<=", float(gate.params["max"])))
    return out


def healthy(gate: GateSpec, expect: Expectation) -> J.Judgement:
    """No errors among the requests each judged arm receives."""
    return J.judge_error_rate(
        {a: 0.0 for a in gate.arms},
        {a: expect.requests(a) for a in gate.arms},
        arms=gate.arms,
        max_rate=float(gate.params["max"]),
        min_samples=int(gate.params["min_samples"]),
        confidence=gate.confidence,
    )


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
    healthy=healthy,
)

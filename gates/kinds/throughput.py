"""`throughput`: achieved versus offered requests, and the canary's per share of traffic versus baseline's.
No fixed-bound export: it needs the offered rate and the weights."""

from __future__ import annotations

from gates import judge as J
from gates.evidence import Expectation
from gates.kinds.base import COUNT, Context, GateKind, Outcome, errors_block, instant_per_arm, kind_schema
from gates.spec import ARMS, GateSpec


def evaluate(gate: GateSpec, ctx: Context) -> Outcome:
    queries: dict[str, dict[str, str]] = {}
    errors: dict[str, str] = {}
    counts = instant_per_arm(gate, ctx, "requests", queries, errors)
    active = [a for a in ARMS if ctx.weights.get(a, 0.0) > 0]
    blocked = errors_block(errors, active)
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
    return Outcome(j, queries, errors)


def healthy(gate: GateSpec, expect: Expectation) -> J.Judgement:
    """Every arm serves exactly its share of the offered rate."""
    return J.judge_throughput(
        {a: expect.requests(a) for a in ARMS},
        window_s=expect.seconds,
        weights=expect.weights,
        offered_rps=expect.rate_rps,
        min_offered_fraction=float(gate.params["min_offered_fraction"]),
        max_share_drop=float(gate.params["max_share_drop"]),
        min_samples=int(gate.params["min_samples"]),
        confidence=gate.confidence,
    )


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
)

"""`error_rate`: failed requests over all requests, per judged arm, below `max` (Clopper-Pearson)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gates import judge as J
from gates import stats
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
    """Per judged arm: errors over requests, and its interval at the gate's confidence (`poisson_bounds`)."""
    out = []
    z = stats.z_two_sided(gate.confidence)
    for arm in gate.arms:
        requests = dialect.query(gate, "requests", arm)
        errors = dialect.query(gate, "errors", arm)
        enough_requests = f"{requests} >= {int(gate.params['min_samples'])}"
        low, high = poisson_bounds(f"({errors})", z)
        interval = (
            guarded(f"({low}) / ({requests})", enough_requests),
            guarded(f"({high}) / ({requests})", enough_requests),
        )
        ratio = guarded(f"({errors}) / ({requests})", enough_requests)
        out.append(Check(gate.name, arm, ratio, "<=", float(gate.params["max"]), interval))
    return out


def poisson_bounds(count: str, z: float) -> tuple[str, str]:
    """PromQL for the lower and upper confidence bounds of a Poisson mean with `count` events (z: the
    normal quantile of each side): Wilson and Hilferty's cube-root approximation of the exact (Garwood)
    bounds. The upper is within 1% of the exact one from 0 events on (0 events: 5.34 against 5.30 at z
    2.576), the lower within 3% from 5 events on and below it under 5 (slower to fail, never faster). For
    a rate of at most 1% the Poisson bound is the binomial one our gate takes (Clopper-Pearson) to within
    another 1%: a value right at an interval's end may be judged differently by Argo and by our gate."""
    k = count
    upper = f"({k} + 1) * (1 - 1 / (9 * ({k} + 1)) + {z:.6g} / (3 * sqrt({k} + 1))) ^ 3"
    lower = f"{k} * clamp_min(1 - 1 / (9 * {k}) - {z:.6g} / (3 * sqrt({k})), 0) ^ 3"
    return lower, upper


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

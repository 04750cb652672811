"""`latency_quantile`: a latency quantile (P99) per arm against an absolute bound and relative to baseline,
from exact load-test samples or the Prometheus histogram (`source`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from gates import judge as J
from gates import stats
from gates.evidence import Expectation
from gates.kinds.base import (
    ARMS_SCHEMA,
    COUNT,
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
    kind_schema,
    panel_queries,
    panel_title,
    per_arm,
    seconds_for_requests,
)
from gates.provider import histogram_buckets
from gates.spec import ARMS, GateSpec

LOADTEST_FIELDS = ["e2e_ms", "ttft_ms", "itl_ms", "tpot_ms", "e2e_sched_ms", "ttft_sched_ms"]


def evaluate(gate: GateSpec, ctx: Context) -> Outcome:
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
            return Outcome(j, queries, errors, source)
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
        buckets = per_arm(
            gate, ctx, "buckets", lambda promql: histogram_buckets(p, promql, ctx.end), queries, errors
        )
        max_seconds = gate.params.get("max_seconds")
        for arm, b in buckets.items():
            if b is not None:
                estimates[arm] = stats.histogram_quantile(b[0], b[1], q, gate.confidence)
                if max_seconds is not None:
                    exceedance[arm] = stats.fraction_above(b[0], b[1], float(max_seconds))
    blocked = errors_block(errors, needed)
    if blocked:
        return Outcome(blocked, queries, errors, source)
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
    return Outcome(j, queries, errors, source)


def checks(gate: GateSpec, dialect: Dialect) -> list[Check]:
    """The histogram's quantile against the bound and the ratio of the arms' quantiles; a gate that reads
    load-test samples has no PromQL to export."""
    p = gate.params
    if p.get("source") == "loadtest" or "buckets" not in gate.queries:
        return []
    quantile = f"{float(p['quantile']):g}"
    buckets = {a: dialect.query(gate, "buckets", a) for a in ARMS}
    # The +Inf bucket (the largest cumulative bucket) is the number of requests in the window.
    enough = {a: f"max({buckets[a]}) >= {int(p['min_samples'])}" for a in ARMS}
    out = []
    if "max_seconds" in p:
        for arm in gate.arms:
            value = f"histogram_quantile({quantile}, {buckets[arm]})"
            out.append(Check(gate.name, arm, guarded(value, enough[arm]), "<=", float(p["max_seconds"])))
    if "max_ratio" in p:
        ratio = (
            f"histogram_quantile({quantile}, {buckets['canary']}) / "
            f"histogram_quantile({quantile}, {buckets['baseline']})"
        )
        value = guarded(ratio, enough["canary"], enough["baseline"])
        out.append(Check(gate.name, "ratio", value, "<=", float(p["max_ratio"])))
    return out


def panel(gate: GateSpec, variables: Mapping[str, Any], window_s: float) -> tuple[Panel, ...]:
    """The histogram's quantile per arm in ms, with the absolute bound (the ratio to baseline is the two
    lines side by side). A gate that reads load-test samples has no series in Prometheus to draw."""
    p = gate.params
    if p.get("source") == "loadtest" or "buckets" not in gate.queries:
        return ()
    quantile = float(p["quantile"])
    queries = panel_queries(
        gate, "buckets", variables, window_s, lambda buckets: f"histogram_quantile({quantile:g}, {buckets})"
    )
    bounds = (Bound("max", float(p["max_seconds"]), gate.arms),) if "max_seconds" in p else ()
    return (Panel(panel_title(gate, f"P{quantile * 100:g}"), "ms", queries, 1000.0, bounds),)


def data_seconds(gate: GateSpec, arm_rps: Mapping[str, float]) -> float:
    """Every check's guard: min_samples requests in the arm's histogram (both arms for the ratio)."""
    if gate.params.get("source") == "loadtest" or "buckets" not in gate.queries:
        return 0.0  # not exported
    arms = ARMS if "max_ratio" in gate.params else gate.arms
    return seconds_for_requests(int(gate.params["min_samples"]), arms, arm_rps)


def healthy(gate: GateSpec, expect: Expectation) -> J.Judgement:
    """Both arms' latencies from one distribution whose log tail has the assumed scale s: a quantile q
    from n samples then has a relative standard error of s * sqrt(q / ((1 - q) n)) (the spread the
    Maritz-Jarrett error measures on such a tail), well inside the absolute bound: from samples that
    bound passes with the ratio, from a histogram once no request above it is evidence enough."""
    q = float(gate.params["quantile"])
    per = expect.assumptions.per_request(str(gate.params["loadtest_field"]))
    z = stats.z_two_sided(gate.confidence)
    estimates, exceedance = {}, {}
    for arm in ARMS:
        n = expect.requests(arm) * per
        if n > 0:
            se = expect.assumptions.tail_scale * math.sqrt(q / ((1 - q) * n))
            estimates[arm] = stats.QuantileEstimate(1.0, 1.0 - z * se, 1.0 + z * se, int(n), se)
            exceedance[arm] = (0.0, n)
    samples = expect.assumptions.latency_samples
    return J.judge_latency_quantile(
        estimates,
        quantile=q,
        arms=gate.arms,
        max_seconds=None if samples else gate.params.get("max_seconds"),
        max_ratio=gate.params.get("max_ratio"),
        min_samples=int(gate.params["min_samples"]),
        confidence=gate.confidence,
        compare=all(expect.weights.get(a, 0.0) > 0 for a in ARMS),
        exceedance=exceedance,
    )


def rules(raw: Mapping[str, Any]) -> str | None:
    if raw.get("source", "auto") != "loadtest" and "buckets" not in raw["queries"]:
        return "queries.buckets: required unless source is 'loadtest'"
    return None


KIND = GateKind(
    name="latency_quantile",
    schema=kind_schema(
        [],
        ["buckets"],
        {
            "arms": ARMS_SCHEMA,
            "quantile": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            "max_seconds": POSITIVE,
            "max_ratio": {"type": "number", "minimum": 1},
            "min_samples": COUNT,
            "source": {"enum": ["prometheus", "loadtest", "auto"]},
            "loadtest_field": {"enum": LOADTEST_FIELDS},
        },
        anyOf=[{"required": ["max_seconds"]}, {"required": ["max_ratio"]}],
    ),
    defaults={
        "arms": ["canary"],
        "quantile": 0.99,
        "min_samples": 300,
        "source": "auto",
        "loadtest_field": "e2e_ms",
    },
    evaluate=evaluate,
    checks=checks,
    data_seconds=data_seconds,
    rules=rules,
    healthy=healthy,
    panel=panel,
)

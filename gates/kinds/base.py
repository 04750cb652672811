"""What every gate kind is made of, and the pieces kinds share.

A kind (`GateKind`) is one file under `gates/kinds/`: the schema of its parameters and query roles, their
defaults, `evaluate` (render its queries per arm, fetch, judge: an `Outcome`), `checks`, its export
to controllers that compare one number with a fixed bound (Argo Rollouts, Flagger), `panel`, what it draws
in the report's timeline (the series it judges, per arm, from its own queries), `healthy`, its judge on
the data a healthy canary gives after some time (the plan: gates/evidence.py), and `information`, how its
evidence grows with the window (the held step's pass bound: gates/sequential.py). `gates.kinds.KINDS` maps
kind names to them; the loader, the evaluator, the exports and the report look kinds up there and nowhere else.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gates import judge as J
from gates.evidence import Expectation
from gates.loadtest_samples import LoadtestSamples
from gates.provider import MetricsProvider, ProviderError, single_value
from gates.spec import ARMS, PROFILES, GateSpec, render


# -- evaluation ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Context:
    """One evaluation's inputs, the same for every gate: both arms over one window."""

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
class Outcome:
    """A kind's evaluation of one gate: the judgement, the queries it ran (arm -> role -> PromQL), the
    fetch errors by arm, where its numbers came from, and the span of time its data cover (None: the
    whole window), in which the judgement's `more_data` is counted."""

    judgement: J.Judgement
    queries: dict[str, dict[str, str]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    source: str = "prometheus"
    span_s: float | None = None


def per_arm(
    gate: GateSpec,
    ctx: Context,
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


def instant_per_arm(
    gate: GateSpec, ctx: Context, role: str, queries: dict[str, dict[str, str]], errors: dict[str, str]
) -> dict[str, Any]:
    """`per_arm` for a role that is one number per arm at the window's end (a count, a rate, a ratio)."""
    return per_arm(gate, ctx, role, lambda q: single_value(ctx.provider, q, ctx.end), queries, errors)


def errors_block(errors: Mapping[str, str], needed: Sequence[str]) -> J.Judgement | None:
    """Inconclusive when an arm the gate needs could not be fetched (missing data never passes)."""
    bad = [a for a in needed if a in errors]
    if not bad:
        return None
    return J.Judgement(J.INCONCLUSIVE, "; ".join(f"{a}: {errors[a]}" for a in bad))


# -- export ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Check:
    """One number compared with one bound; the query returns no value when the gate would lack samples.
    `interval` (lower, upper queries, guarded alike), where PromQL can bound the number at the gate's
    confidence: a controller that can say inconclusive (Argo) passes only when the interval lies within
    the bound and fails only when it lies beyond, as our gate does."""

    gate: str
    suffix: str
    query: str
    op: str  # "<=" (bound is a maximum) or ">=" (a minimum)
    bound: float
    interval: tuple[str, str] | None = None

    @property
    def name(self) -> str:
        return k8s_name(f"{self.gate}-{self.suffix}")


@dataclass(frozen=True)
class Dialect:
    """How one controller's templates spell the gate file's placeholders."""

    arm: Mapping[str, str]  # arm -> the text that replaces ${arm}
    variables: Mapping[str, Any]  # variable -> placeholder text, or {arm: text} for a per-arm variable
    window: str  # the PromQL range of ${window}

    def query(self, gate: GateSpec, role: str, arm: str) -> str:
        """The gate's `role` query for `arm`, in this controller's placeholders."""
        template = gate.queries[role].replace("${arm}", self.arm[arm])
        return render(template, self.variables, arm=arm, window=self.window)


def k8s_name(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")


def guarded(expr: str, *conditions: str) -> str:
    """`expr` only while every condition holds (else an empty result: no value, never a pass)."""
    return " and on() ".join([f"({expr})", *(f"({c})" for c in conditions)])


def no_checks(gate: GateSpec, dialect: Dialect) -> list[Check]:
    """For a kind no fixed-bound check can express."""
    return []


def window_information(gate: GateSpec, window_s: float) -> float:
    """Evidence that grows as the window does: counts, means, quantiles of what arrives in it."""
    return window_s


def no_data_need(gate: GateSpec, arm_rps: Mapping[str, float]) -> float:
    """For checks that have a value as soon as their window holds two scrapes."""
    return 0.0


def no_history_need(gate: GateSpec) -> float:
    """For checks that read a pod's samples in the window only."""
    return 0.0


def requests_needed(min_samples: int) -> float:
    """Requests an arm must be offered on average so that a window holds `min_samples` of them: three
    standard deviations of Poisson arrivals above the count, which falls short in about 3 windows in 1,000
    at 100 samples and 2 in 1,000 at 300 or more."""
    return min_samples + 3.0 * math.sqrt(min_samples)


def seconds_for_requests(min_samples: int, arms: Sequence[str], arm_rps: Mapping[str, float]) -> float:
    """Seconds of traffic after which every arm in `arms` has `min_samples` requests (see
    `requests_needed`); infinite for an arm that gets none."""
    need = requests_needed(min_samples)
    return max((need / arm_rps[a] if arm_rps[a] > 0 else math.inf) for a in arms)


# -- report panel ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Bound:
    """A fixed bound a gate judges against, drawn across its panel (in the series' units, before scale)."""

    label: str  # "max", "min"
    value: float
    arms: tuple[str, ...] = ARMS  # the arms it is judged on


@dataclass(frozen=True)
class Panel:
    """One plot of the report's timeline: per arm, a PromQL range query returning one series."""

    title: str
    unit: str  # of the displayed values (after `scale`)
    queries: Mapping[str, str]  # arm -> PromQL returning one series
    scale: float = 1.0  # multiplied into values for display (e.g. seconds -> ms)
    bounds: tuple[Bound, ...] = ()
    from_zero: bool = True  # the axis starts at 0 (False: it fits the series, e.g. memory)


SHORT_DESCRIPTION = 48  # longer descriptions leave the title at their first clause, or out


def panel_title(gate: GateSpec, what: str = "") -> str:
    """The gate's name, what the panel shows of it, and the description's first clause when short; a
    dry-run gate says so (it is drawn like any gate, and decides nothing)."""
    title = f"{gate.name} ({what})" if what else gate.name
    first = re.split(r",|;| \(", gate.description, maxsplit=1)[0].strip()
    if first and len(first) <= SHORT_DESCRIPTION:
        title += f": {first}"
    return f"[dry-run] {title}" if gate.dry_run else title


def panel_queries(
    gate: GateSpec,
    role: str,
    variables: Mapping[str, Any],
    window_s: float,
    shape: Callable[[str], str] = lambda promql: promql,
) -> dict[str, str]:
    """arm -> the gate's `role` query for that arm over `window_s`, as the evaluation renders it, put in
    `shape` (e.g. a quantile of its buckets)."""
    return {arm: shape(render(gate.queries[role], variables, arm=arm, window_s=window_s)) for arm in ARMS}


def no_panel(gate: GateSpec, variables: Mapping[str, Any], window_s: float) -> tuple[Panel, ...]:
    """For a kind with no series to draw."""
    return ()


# -- schema ----------------------------------------------------------------------------------------
QUERY = {
    "oneOf": [
        {"type": "string", "minLength": 1},
        {
            "type": "object",
            "properties": {p: {"type": "string", "minLength": 1} for p in PROFILES},
            "additionalProperties": False,
            "minProperties": 1,
        },
    ]
}
ARMS_SCHEMA = {"type": "array", "items": {"enum": list(ARMS)}, "minItems": 1, "uniqueItems": True}
NUMBER = {"type": "number"}
POSITIVE = {"type": "number", "exclusiveMinimum": 0}
COUNT = {"type": "integer", "minimum": 1}
COMMON = {
    "name": {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$"},
    "kind": {"type": "string"},
    "description": {"type": "string"},
    "consecutive_failures": {"type": "integer", "minimum": 1},
    "confidence": {"type": "number", "exclusiveMinimum": 0.5, "exclusiveMaximum": 1},
    "dry_run": {"type": "boolean"},
}


def kind_schema(
    roles_required: Sequence[str],
    roles_optional: Sequence[str],
    props: Mapping[str, Any],
    required: Sequence[str] = (),
    **extra: Any,
) -> dict[str, Any]:
    """A gate entry of one kind: the common keys, the kind's parameters and its query roles."""
    roles = [*roles_required, *roles_optional]
    return {
        "type": "object",
        "properties": {
            **COMMON,
            **props,
            "queries": {
                "type": "object",
                "properties": {r: QUERY for r in roles},
                "required": list(roles_required),
                "additionalProperties": False,
            },
        },
        "required": ["name", "kind", "queries", *required],
        "additionalProperties": False,
        **extra,
    }


# -- the kind --------------------------------------------------------------------------------------
def no_rules(raw: Mapping[str, Any]) -> str | None:
    return None


@dataclass(frozen=True)
class GateKind:
    name: str
    schema: Mapping[str, Any]  # JSON schema of one gate entry of this kind
    defaults: Mapping[str, Any]  # parameter defaults, applied after validation
    evaluate: Callable[[GateSpec, Context], Outcome]
    checks: Callable[[GateSpec, Dialect], list[Check]] = no_checks
    # seconds of traffic at these per-arm request rates before every exported check has a value (its
    # sample guards hold): what the exports size their timing by
    data_seconds: Callable[[GateSpec, Mapping[str, float]], float] = no_data_need
    # seconds of a pod's life and of a step's traffic its exported check reads before its value is the
    # step's (0: its window only): a controller's first measurement after a weight change waits that long
    history_seconds: Callable[[GateSpec], float] = no_history_need
    # a rule the schema cannot say: the message (its key first, e.g. "queries.buckets: ...") or None
    rules: Callable[[Mapping[str, Any]], str | None] = no_rules
    # the report's timeline: the series it judges per arm, from its queries rendered with the variables and
    # the panel's rate window (seconds), with its fixed bound where it has one
    panel: Callable[[GateSpec, Mapping[str, Any], float], tuple[Panel, ...]] = no_panel
    # the judgement on a healthy canary's expected data (None: no model; judged as the data come)
    healthy: Callable[[GateSpec, Expectation], J.Judgement] | None = None
    # how the evidence a window of this many seconds holds grows with its length (the inverse variance of
    # what is judged, up to a constant): the held step's pass bound (gates/sequential.py) depends on it
    information: Callable[[GateSpec, float], float] = window_information
    # the intervals a pass may rest on, any one sufficing: each gets an equal share of the pass's error
    # budget (gates/sequential.py), so that their union keeps it
    pass_intervals: int = 1

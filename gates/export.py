"""Export a gate file for Argo Rollouts (AnalysisTemplates) or Flagger (MetricTemplates + Canary analysis).

Those controllers judge one PromQL value per check against a fixed bound, so each gate becomes one or more
*checks*: the gate's rendered query, reduced to one number, and its bound. What carries over, and how our
three verdicts map (docs/gates.md has the table, tests/helm/test_argo_rollouts.py and test_flagger.py run
the real controllers):

- too few samples: every check's query is guarded with `and on() (<sample count> >= min_samples)`, so it
  returns no value instead of a number; Argo's conditions make no value (and NaN, +-Inf, several series)
  a measurement that is neither success nor failure -> Inconclusive; Flagger cannot say inconclusive and
  counts a missing value as a failed check (it halts advancement, and `threshold` of them roll back).
- fail after `consecutive_failures` in a row: Argo's inline template stops at the first success
  (consecutiveSuccessLimit 1) and fails after `consecutive_failures` failures (failureLimit), which are
  then necessarily in a row; the background template and Flagger count failures in total, not in a row.
- intervals: Argo reads the error rate's interval at the gate's confidence (its two ends as two series),
  so it succeeds only when the interval lies within the bound and fails only when beyond: Inconclusive in
  between, as ours. Flagger has no inconclusive result and compares the point estimate.
- not expressible: the interval and significance of every other check (it compares the point estimate),
  the leak gate's warm-up, its collection floors (approximated by each pod's lower envelope,
  `min_over_time` over `envelope_seconds`, whose `deriv` is averaged over the arm's pods) and its setting
  aside of a one-time rise, throughput (needs the offered rate and the weights), `source: loadtest`
  gates. Gates with no check at all are listed by `not_exported()`.

Prometheus access (`PrometheusAccess`): address (or Argo's controller default), headers, a Secret's bearer
token, TLS verification and Argo's timeout, each in its provider's own fields.

Arm selection: the per-arm `pod_regex` (and `${arm}`, which the `kubernetes` profile does not use) are
filled from what the controller knows about its pods: Argo's `rollouts-pod-template-hash` (args filled by
`podTemplateHashValue: Stable|Latest`), Flagger's `<target>-primary` / `<target>` workloads. Every
`kubernetes` query selects an arm by namespace and pod name, which cAdvisor, kube-state-metrics and the
chart's monitors all label, so `python -m gates evaluate` with the same `pod_regex` reads the same series.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gates.kinds import KINDS
from gates.kinds.base import Check, Dialect, k8s_name
from gates.spec import ARMS, GateConfig, GateConfigError, GateSpec, template_variables, traefik_backend_regex

EXPORT_FORMATS = ("argo", "flagger", "flagger-analysis")
ARM_VARIABLES = ("arm", "pod_regex")  # filled by the controller's arm selection, never by the user
# Flagger's Gateway API router routes to `<target>-primary` and `<target>-canary`, so the gateway's view of
# each arm follows from the target too (Argo's Services are named in the Rollout: args with the file's values).
FLAGGER_SERVICES = {
    "gateway_service_regex": {"baseline": "{{ target }}-primary", "canary": "{{ target }}-canary"}
}
# Argo: a Prometheus error (unreachable, rejected query) is neither success nor failure but Error, and
# more than this many in a row end the run as Error, which aborts like Failed. Argo's own default.
ARGO_CONSECUTIVE_ERROR_LIMIT = 4
# The Argo arg that delays a check needing the pods' history (default `pod_history_s`); a step after the
# first may pass the window, its canary pods having lived through the first.
HISTORY_DELAY = "history-delay"
# Argo's controller reads the address from this environment variable for a metric that gives none.
ARGO_ADDRESS_ENV = "ARGO_ROLLOUTS_PROMETHEUS_ADDRESS"
TOKEN_KEY = "token"  # the Secret's key both providers read a bearer token from


@dataclass(frozen=True)
class PrometheusAccess:
    """How the controller reaches Prometheus, written into each provider's own fields.

    `address` None leaves it to Argo's controller (its ARGO_ADDRESS_ENV); Flagger's MetricTemplates have
    no default. `secret` names a Secret in the analysis' namespace: both providers send its `token` as a
    bearer token; Flagger also takes `username` and `password` (basic auth, which Argo cannot build from a
    Secret). `timeout_s` is Argo's per-query timeout; Flagger's provider always waits 5 s."""

    address: str | None
    headers: tuple[tuple[str, str], ...] = ()
    secret: str | None = None
    insecure: bool = False  # skip TLS certificate verification
    timeout_s: int | None = None

    def argo_args(self) -> list[dict[str, Any]]:
        args: list[dict[str, Any]] = []
        if self.address is not None:
            args.append({"name": "prometheus-address", "value": self.address})
        if self.secret:
            args.append(
                {
                    "name": "prometheus-token",
                    "valueFrom": {"secretKeyRef": {"name": self.secret, "key": TOKEN_KEY}},
                }
            )
        return args

    def argo_provider(self, query: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.address is not None:
            out["address"] = "{{args.prometheus-address}}"
        out["query"] = query
        headers = [{"key": k, "value": v} for k, v in self.headers]
        if self.secret:
            headers.append({"key": "Authorization", "value": "Bearer {{args.prometheus-token}}"})
        if headers:
            out["headers"] = headers
        if self.insecure:
            out["insecure"] = True
        if self.timeout_s is not None:
            out["timeout"] = self.timeout_s
        return out

    def flagger_provider(self) -> dict[str, Any]:
        if self.address is None:
            raise GateConfigError("Flagger's MetricTemplates have no default Prometheus address: give one")
        if self.timeout_s is not None:
            raise GateConfigError("Flagger's Prometheus provider has a fixed 5 s query timeout: leave it out")
        out: dict[str, Any] = {"type": "prometheus", "address": self.address}
        if self.headers:
            merged: dict[str, list[str]] = {}
            for k, v in self.headers:
                merged.setdefault(k, []).append(v)
            out["headers"] = merged
        if self.secret:
            out["secretRef"] = {"name": self.secret}
        if self.insecure:
            out["insecureSkipVerify"] = True
        return out


def gate_checks(gate: GateSpec, dialect: Dialect) -> list[Check]:
    """The checks one gate exports (its kind's `checks`); empty when no fixed bound can express it."""
    return KINDS[gate.kind].checks(gate, dialect)


def not_exported(config: GateConfig) -> list[str]:
    """Gates no fixed-bound check can express (throughput, `source: loadtest` latency)."""
    probe = Dialect({a: a for a in ARMS}, _probe_variables(config), "1m")
    return [g.name for g in config.gates if not gate_checks(g, probe)]


def _variables_used(config: GateConfig) -> list[str]:
    names: list[str] = []
    for gate in config.gates:
        for template in gate.queries.values():
            for v in template_variables(template):
                if v not in ("arm", "window") and v not in names:
                    names.append(v)
    return names


def _per_arm(config: GateConfig, name: str) -> bool:
    return isinstance(config.variables.get(name), Mapping)


def _probe_variables(config: GateConfig) -> dict[str, Any]:
    return {v: ({a: v for a in ARMS} if _per_arm(config, v) else v) for v in _variables_used(config)}


def _checks(config: GateConfig, dialect: Dialect) -> list[Check]:
    return [c for gate in config.gates for c in gate_checks(gate, dialect)]


# -- Timing ------------------------------------------------------------------------------------------
# The newest samples a query sees are up to one scrape interval old (15 to 30 s in most clusters).
SCRAPE_ALLOWANCE_S = 30.0


@dataclass(frozen=True)
class Timing:
    """When a controller measures: every query's window and the time between measurements (Argo waits a
    window before the first, `to_argo`; Flagger checks one interval after each weight change); `basis`
    says what it was sized from."""

    window: str
    interval: str
    basis: str


def _duration(seconds: float) -> str:
    return f"{int(seconds) // 60}m" if seconds % 60 == 0 else f"{int(seconds)}s"


def duration_seconds(duration: str) -> float:
    """A controller duration ("90s", "5m", "1h", "500ms") in seconds."""
    number, unit = re.fullmatch(r"([0-9]+)(ms|s|m|h)", duration).groups()  # type: ignore[union-attr]
    return int(number) * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[unit]


def pod_history_s(config: GateConfig, gates: Sequence[str] | None = None) -> float:
    """How long after a weight change (and after the controller starts the canary's pods) a check of
    `gates` (default: every exported one) first reads only the step (`GateKind.history_seconds`, plus
    SCRAPE_ALLOWANCE_S), rounded up to 10 s; 0 when none of them reads from before its window."""
    skipped = set(not_exported(config))
    need = max(
        (
            KINDS[g.kind].history_seconds(g)
            for g in config.gates
            if g.name not in skipped and (gates is None or g.name in gates)
        ),
        default=0.0,
    )
    return math.ceil((need + SCRAPE_ALLOWANCE_S) / 10.0) * 10.0 if need > 0 else 0.0


def flagger_interval(config: GateConfig, interval: str) -> tuple[str, str]:
    """Flagger checks one interval after each weight change, and its canary pods start one interval before
    the first: `interval`, or `pod_history_s` if longer, and why. A full history after the weight change,
    not half of it after the pods' start: the leak check's lower envelope reads up to its span back, so a
    shorter interval judges the first step's leak on the traffic-free minutes before it (the real Flagger
    passed a 48 MiB/min leak at 10% so, with 300 s ticks)."""
    history = pod_history_s(config)
    if history <= duration_seconds(interval):
        return interval, ""
    return _duration(history), (
        f"interval {_duration(history)}: Flagger checks one interval after each weight change, and every "
        f"check must read that long of the step's traffic and the canary pods' life"
    )


def sized_timing(config: GateConfig, *, rate_rps: float, step_weights: Sequence[int]) -> Timing:
    """The shortest timing at which a healthy canary's checks all have their data at every analysed step
    weight, when `rate_rps` is offered to the route and split exactly by weight: each exported gate's
    sample guards (`GateKind.data_seconds`: min_samples requests per arm with Poisson headroom, the leak
    gate's min_points), plus SCRAPE_ALLOWANCE_S, rounded up to 10 s, at least a minute. The window and
    the interval are that long, and so is Argo's initial delay, so each measurement reads only traffic
    sent at the step's weight (a check that needs the pods' history waits longer: `pod_history_s`)."""
    if rate_rps <= 0:
        raise GateConfigError(f"--rate must be positive, got {rate_rps:g}")
    skipped = set(not_exported(config))
    deciding = [g for g in config.gates if g.name not in skipped and not g.dry_run]
    need, binding = 0.0, "none"
    for weight in step_weights:
        if not 0 < weight < 100:
            raise GateConfigError(f"step weight {weight}: analysis needs traffic on both arms (1 to 99)")
        arm_rps = {"canary": rate_rps * weight / 100.0, "baseline": rate_rps * (100 - weight) / 100.0}
        for gate in deciding:
            seconds = KINDS[gate.kind].data_seconds(gate, arm_rps)
            if seconds > need:
                need, binding = seconds, f"{gate.name} at {weight}%"
    if not math.isfinite(need):
        raise GateConfigError(f"{binding}: an arm gets no traffic, so its checks never have data")
    seconds = max(60.0, math.ceil((need + SCRAPE_ALLOWANCE_S) / 10.0) * 10.0)
    basis = (
        f"sized for {rate_rps:g} req/s split by weight at steps {','.join(map(str, step_weights))}: "
        f"{binding} needs {need:.0f} s of traffic for its checks' data, plus {SCRAPE_ALLOWANCE_S:.0f} s "
        "of scrape delay"
    )
    d = _duration(seconds)
    return Timing(d, d, basis)


# -- Argo Rollouts -----------------------------------------------------------------------------------
def _argo_condition(check: Check, *, success: bool) -> str:
    """Exactly the values the query should give, each finite, then the bound: no data, NaN, +-Inf and
    other counts of series are neither success nor failure, which Argo records as an Inconclusive
    measurement. With an interval (`_argo_query`: result[0] its lower end, result[1] its upper), success
    needs all of it within the bound and failure all of it beyond; between is Inconclusive."""
    compare = check.op if success else {"<=": ">", ">=": "<"}[check.op]
    if check.interval is None:
        return f"len(result) == 1 && !isNaN(result[0]) && !isInf(result[0]) && result[0] {compare} {check.bound!r}"
    finite = " && ".join(f"!isNaN(result[{i}]) && !isInf(result[{i}])" for i in (0, 1))
    end = int((check.op == "<=") == success)  # the end that must clear the bound
    return f"len(result) == 2 && {finite} && result[{end}] {compare} {check.bound!r}"


def _argo_query(check: Check) -> str:
    """The check's point value, or its interval as two series sorted by value (lower end first)."""
    if check.interval is None:
        return check.query
    low, high = (
        f'label_replace({q}, "bound", "{name}", "", "")'
        for q, name in zip(check.interval, ("lower", "upper"), strict=True)
    )
    return f"sort({low} or {high})"


def argo_dialect(config: GateConfig) -> Dialect:
    hash_arg = {a: f"{{{{args.{a}-hash}}}}" for a in ARMS}
    variables: dict[str, Any] = {}
    for name in _variables_used(config):
        if name == "pod_regex":  # an Argo pod is named <rollout>-<pod-template-hash>-<suffix>
            variables[name] = {a: f".*-{hash_arg[a]}-.*" for a in ARMS}
        elif _per_arm(config, name):
            variables[name] = {a: f"{{{{args.{name}-{a}}}}}" for a in ARMS}
        else:
            variables[name] = f"{{{{args.{name}}}}}"
    return Dialect(hash_arg, variables, "{{args.window}}")


def _argo_args(config: GateConfig, prometheus: PrometheusAccess, window: str) -> list[dict[str, Any]]:
    args: list[dict[str, Any]] = [
        *prometheus.argo_args(),
        {"name": "window", "value": window},
        # no default: the Rollout fills them with valueFrom.podTemplateHashValue Stable / Latest
        {"name": "baseline-hash"},
        {"name": "canary-hash"},
    ]
    for name in _variables_used(config):
        if name in ARM_VARIABLES:
            continue
        default = config.variables.get(name)
        if isinstance(default, Mapping):
            args += [{"name": f"{name}-{a}", "value": str(default[a])} for a in ARMS]
        else:
            args.append({"name": name, **({"value": str(default)} if default is not None else {})})
    return args


def to_argo(
    config: GateConfig,
    *,
    name: str = "canary-gates",
    prometheus: PrometheusAccess,
    window: str = "5m",
    interval: str = "1m",
    initial_delay: str | None = None,
    dry_run: bool = False,
    cluster_scope: bool = False,
) -> list[dict[str, Any]]:
    """Two AnalysisTemplates (ClusterAnalysisTemplates with `cluster_scope`, referenced with
    `clusterScope: true`): `name` for a canary step (`steps[].analysis`) and `name-background` for
    `strategy.canary.analysis`. Both wait `initial_delay` (default: the window, so the first measurement
    sees only this step's traffic; for a check that needs the pods' history, the arg HISTORY_DELAY,
    `pod_history_s` unless the step passes less);
    the step variant then measures up to `consecutive_failures` times, `interval` apart, and stops at the
    first success; the background variant measures every `interval` until the rollout ends. Argo's
    spec.dryRun records a metric without letting it decide: the gate file's dry-run gates' metrics, or
    every metric with `dry_run`."""
    checks = _checks(config, argo_dialect(config))
    dry_gates = {g.name for g in config.gates if g.dry_run}
    dry = (
        # Argo matches metricName as a regular expression: anchored, a check name ([a-z0-9-]) is only itself.
        [{"metricName": ".*"}]
        if dry_run
        else [{"metricName": f"^{c.name}$"} for c in checks if c.gate in dry_gates]
    )
    failures = {g.name: g.consecutive_failures for g in config.gates}
    # A check that reads further back than the window (the leak's envelope) waits, after each weight
    # change, until the step's traffic and the canary's pods started with it reach that far: an arg, so
    # that a later step, whose pods lived through the first, can pass the window instead.
    window_s = duration_seconds(window)
    history = {g.name: pod_history_s(config, [g.name]) > window_s for g in config.gates}
    args = _argo_args(config, prometheus, window)
    if initial_delay is None and any(history.values()):
        args.append({"name": HISTORY_DELAY, "value": _duration(pod_history_s(config))})
    annotations = {
        "canary-gates/source": config.source,
        "canary-gates/profile": config.profile,
        "canary-gates/not-exported": ",".join(not_exported(config)),
    }
    templates = []
    for variant in ("step", "background"):
        metrics = []
        for check in checks:
            n = failures[check.gate]
            metric: dict[str, Any] = {"name": check.name, "interval": interval}
            # Both variants wait a window first: an earlier measurement would lack the step's samples and
            # be Inconclusive, which pauses the Rollout.
            if initial_delay is not None:
                metric["initialDelay"] = initial_delay
            elif history[check.gate]:
                metric["initialDelay"] = f"{{{{args.{HISTORY_DELAY}}}}}"
            else:
                metric["initialDelay"] = window
            if variant == "step":
                metric |= {"count": n, "consecutiveSuccessLimit": 1}
            metric |= {
                "failureLimit": n - 1,
                "inconclusiveLimit": 0,
                "consecutiveErrorLimit": ARGO_CONSECUTIVE_ERROR_LIMIT,
                "successCondition": _argo_condition(check, success=True),
                "failureCondition": _argo_condition(check, success=False),
                "provider": {"prometheus": prometheus.argo_provider(_argo_query(check))},
            }
            metrics.append(metric)
        spec: dict[str, Any] = {"args": args, "metrics": metrics}
        if dry:
            spec["dryRun"] = dry
        templates.append(
            {
                "apiVersion": "argoproj.io/v1alpha1",
                "kind": "ClusterAnalysisTemplate" if cluster_scope else "AnalysisTemplate",
                "metadata": {
                    "name": name if variant == "step" else f"{name}-background",
                    "annotations": annotations | {"canary-gates/variant": variant},
                },
                "spec": spec,
            }
        )
    return templates


# -- Flagger -----------------------------------------------------------------------------------------
def flagger_dialect(config: GateConfig) -> Dialect:
    # Flagger runs the new version as <target> and the serving one as <target>-primary; their pods are
    # <workload>-<replicaset hash>-<suffix>, which keeps the canary's regex off the primary's pods.
    arm = {"baseline": "{{ target }}-primary", "canary": "{{ target }}"}
    variables: dict[str, Any] = {}
    for name in _variables_used(config):
        if name == "pod_regex":
            variables[name] = {a: f"{arm[a]}-[a-z0-9]+-[a-z0-9]+" for a in ARMS}
        elif name in FLAGGER_SERVICES:  # the Services Flagger's router puts on its HTTPRoute
            variables[name] = {
                a: traefik_backend_regex("{{ namespace }}", FLAGGER_SERVICES[name][a]) for a in ARMS
            }
        elif name == "namespace" and not _per_arm(config, name):
            variables[name] = "{{ namespace }}"  # the Canary's own namespace
        elif _per_arm(config, name):
            variables[name] = {a: f"{{{{ variables.{name}_{a} }}}}" for a in ARMS}
        else:
            variables[name] = f"{{{{ variables.{name} }}}}"
    # the metric's own interval is the query window, independent of the analysis (check) interval
    return Dialect(arm, variables, "{{ interval }}")


def _flagger_query(check: Check) -> str:
    # Flagger keeps the last of several series and reads NaN as "no values"; scalar() turns anything but
    # exactly one series into NaN, so several series never pass either.
    return f"vector(scalar({check.query}))"


def to_flagger(
    config: GateConfig,
    *,
    name: str = "canary-gates",
    prometheus: PrometheusAccess,
    namespace: str | None = None,
) -> list[dict[str, Any]]:
    """One MetricTemplate per check; `flagger_analysis` gives the Canary block that uses them."""
    provider = prometheus.flagger_provider()
    dry_gates = {g.name for g in config.gates if g.dry_run}
    docs = []
    for check in _checks(config, flagger_dialect(config)):
        meta: dict[str, Any] = {
            "name": k8s_name(f"{name}-{check.name}"),
            "annotations": {"canary-gates/gate": check.gate, "canary-gates/source": config.source},
        }
        if check.gate in dry_gates:  # Flagger has no dry-run: `flagger_analysis` leaves these out
            meta["annotations"]["canary-gates/dry-run"] = "true"
        if namespace:
            meta["namespace"] = namespace
        docs.append(
            {
                "apiVersion": "flagger.app/v1beta1",
                "kind": "MetricTemplate",
                "metadata": meta,
                "spec": {
                    "provider": provider,
                    "query": _flagger_query(check),
                },
            }
        )
    return docs


def _template_variables(config: GateConfig) -> dict[str, str]:
    """Every `{{ variables.* }}` the templates use, from the gate file's defaults (and --var): Flagger
    renders with missingkey=error, so a missing one fails the check."""
    out: dict[str, str] = {}
    for name in _variables_used(config):
        if (
            name in ARM_VARIABLES
            or name in FLAGGER_SERVICES
            or (name == "namespace" and not _per_arm(config, name))
        ):
            continue
        value = config.variables.get(name)
        if value is None:
            raise GateConfigError(
                f"variable {name!r} has no value for the Flagger export; pass --var {name}=..."
            )
        if isinstance(value, Mapping):
            out |= {f"{name}_{a}": str(value[a]) for a in ARMS}
        else:
            out[name] = str(value)
    return out


def flagger_analysis(
    config: GateConfig,
    *,
    name: str = "canary-gates",
    template_namespace: str | None = None,
    interval: str = "1m",
    window: str = "5m",
    step_weights: Sequence[int] = (10, 50),
) -> dict[str, Any]:
    """The Canary's `analysis` block: one metric per MetricTemplate with its thresholdRange, the query
    window as the metric's interval, and the template variables; `threshold` is the gate file's
    consecutive failures (Flagger counts failed checks in total, not in a row). Flagger has no dry-run
    metrics: a dry-run gate's MetricTemplate is exported (to query by hand) but not used here."""
    variables = _template_variables(config)
    deciding = [g for g in config.gates if not g.dry_run]
    # one threshold for all checks: the smallest count, so no gate waits longer than its file says
    failures = min((g.consecutive_failures for g in deciding), default=1)
    dry_gates = {g.name for g in config.gates if g.dry_run}
    metrics = []
    for check in _checks(config, flagger_dialect(config)):
        if check.gate in dry_gates:
            continue
        ref: dict[str, Any] = {"name": k8s_name(f"{name}-{check.name}")}
        if template_namespace:
            ref["namespace"] = template_namespace
        metric: dict[str, Any] = {
            "name": check.name,
            "templateRef": ref,
            "thresholdRange": {"max" if check.op == "<=" else "min": check.bound},
            "interval": window,
        }
        if variables:
            metric["templateVariables"] = dict(variables)
        metrics.append(metric)
    return {
        "analysis": {
            "interval": interval,
            "threshold": failures,
            "stepWeights": list(step_weights),
            "metrics": metrics,
        }
    }

"""Export a gate file as an Argo Rollouts AnalysisTemplate or Flagger MetricTemplates.

Those controllers judge one PromQL value against a fixed condition, so the export carries each gate's
rendered query and its bound but not our statistics: relative P99 becomes a ratio of
`histogram_quantile`s without an interval, the leak gate becomes a `deriv` difference, and gates that
need the offered rate or traffic weights (throughput) or load-test samples are listed as not exported
in an annotation. Missing data never passes there either: Argo conditions require exactly one finite
value; Flagger already treats an empty result as a failed check.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from gates.config import ARMS, GateConfig, GateSpec, render, template_variables

EXPORT_FORMATS = ("argo", "flagger")


def _variables_used(config: GateConfig) -> list[str]:
    names: list[str] = []
    for gate in config.gates:
        for template in gate.queries.values():
            for v in template_variables(template):
                if v not in ("arm", "window") and v not in names:
                    names.append(v)
    return names


def _placeholders(
    config: GateConfig, per_arm: Callable[[str, str], str], scalar: Callable[[str], str]
) -> dict[str, Any]:
    """Variable -> placeholder text, per arm for variables that hold one value per arm."""
    out: dict[str, Any] = {}
    for name in _variables_used(config):
        value = config.variables.get(name)
        out[name] = {a: per_arm(name, a) for a in ARMS} if isinstance(value, Mapping) else scalar(name)
    return out


def exported_queries(
    gate: GateSpec, variables: Mapping[str, Any], window: str
) -> dict[str, tuple[str, str, float]]:
    """metric suffix -> (PromQL, comparison, bound) for one gate; empty when the gate cannot be exported."""

    def q(role: str, arm: str) -> str:
        return render(gate.queries[role], variables, arm=arm, window=window)

    p = gate.params
    out: dict[str, tuple[str, str, float]] = {}
    if gate.kind == "threshold":
        for arm in gate.arms:
            if "max" in p:
                out[f"{arm}-max"] = (q("value", arm), "<=", float(p["max"]))
            if "min" in p:
                out[f"{arm}-min"] = (q("value", arm), ">=", float(p["min"]))
    elif gate.kind == "error_rate":
        for arm in gate.arms:
            out[arm] = (f"({q('errors', arm)}) / ({q('requests', arm)})", "<=", float(p["max"]))
    elif gate.kind == "latency_quantile" and p.get("source") != "loadtest" and "buckets" in gate.queries:
        quantile = float(p["quantile"])
        if "max_seconds" in p:
            for arm in gate.arms:
                out[arm] = (
                    f"histogram_quantile({quantile:g}, {q('buckets', arm)})",
                    "<=",
                    float(p["max_seconds"]),
                )
        if "max_ratio" in p:
            ratio = (
                f"histogram_quantile({quantile:g}, {q('buckets', 'canary')}) / "
                f"histogram_quantile({quantile:g}, {q('buckets', 'baseline')})"
            )
            out["ratio"] = (ratio, "<=", float(p["max_ratio"]))
    elif gate.kind == "memory_leak":
        step = f"{int(p['step_seconds'])}s"
        slope = {a: f"deriv(({q('memory', a)})[{window}:{step}])" for a in ARMS}
        out["slope-vs-baseline"] = (
            f"{slope['canary']} - {slope['baseline']}",
            "<=",
            float(p["floor_bytes_per_minute"]) / 60,
        )
    return out


def _k8s_name(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")


def _not_exported(config: GateConfig, variables: Mapping[str, Any]) -> list[str]:
    return [g.name for g in config.gates if not exported_queries(g, variables, "5m")]


def to_argo(
    config: GateConfig,
    *,
    name: str = "canary-gates",
    prometheus_address: str,
    window: str = "5m",
    interval: str = "1m",
) -> dict[str, Any]:
    variables = _placeholders(config, lambda v, a: f"{{{{args.{v}-{a}}}}}", lambda v: f"{{{{args.{v}}}}}")
    args: list[dict[str, Any]] = [
        {"name": "prometheus-address", "value": prometheus_address},
        {"name": "window", "value": window},
    ]
    for var, holder in variables.items():
        default = config.variables.get(var)
        if isinstance(holder, Mapping):
            args += [{"name": f"{var}-{a}", **({"value": str(default[a])} if default else {})} for a in ARMS]
        else:
            args.append({"name": var, **({"value": str(default)} if default is not None else {})})
    metrics = []
    for gate in config.gates:
        for suffix, (query, op, bound) in exported_queries(gate, variables, "{{args.window}}").items():
            metrics.append(
                {
                    "name": _k8s_name(f"{gate.name}-{suffix}"),
                    "interval": interval,
                    "failureLimit": gate.consecutive_failures - 1,
                    "consecutiveErrorLimit": gate.consecutive_failures,
                    # exactly one finite value, then the bound: no data and NaN do not pass
                    "successCondition": f"len(result) == 1 && !isNaN(result[0]) && result[0] {op} {bound!r}",
                    "provider": {"prometheus": {"address": "{{args.prometheus-address}}", "query": query}},
                }
            )
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {
            "name": name,
            "annotations": {
                "canary-gates/source": config.source,
                "canary-gates/profile": config.profile,
                "canary-gates/not-exported": json.dumps(_not_exported(config, variables)),
            },
        },
        "spec": {"args": args, "metrics": metrics},
    }


def to_flagger(
    config: GateConfig, *, name: str = "canary-gates", prometheus_address: str, namespace: str | None = None
) -> list[dict[str, Any]]:
    variables = _placeholders(
        config, lambda v, a: f"{{{{ variables.{v}_{a} }}}}", lambda v: f"{{{{ variables.{v} }}}}"
    )
    if "namespace" in variables and not isinstance(variables["namespace"], Mapping):
        variables["namespace"] = "{{ namespace }}"  # Flagger fills the canary's own namespace
    docs = []
    for gate in config.gates:
        for suffix, (query, op, bound) in exported_queries(gate, variables, "{{ interval }}").items():
            meta: dict[str, Any] = {
                "name": _k8s_name(f"{name}-{gate.name}-{suffix}"),
                "annotations": {
                    "canary-gates/threshold-range": json.dumps({"max" if op == "<=" else "min": bound})
                },
            }
            if namespace:
                meta["namespace"] = namespace
            docs.append(
                {
                    "apiVersion": "flagger.app/v1beta1",
                    "kind": "MetricTemplate",
                    "metadata": meta,
                    "spec": {
                        "provider": {"type": "prometheus", "address": prometheus_address},
                        "query": query,
                    },
                }
            )
    return docs

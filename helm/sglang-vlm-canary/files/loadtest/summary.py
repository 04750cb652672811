"""Run summary: exact per-arm percentiles from raw samples, the generator self-check, SLOs, exit code."""

from __future__ import annotations

import math
import re
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SCHEMA = "loadtest-summary/v1"
METRICS = ("ttft_ms", "ttft_sched_ms", "e2e_ms", "e2e_sched_ms", "itl_ms", "tpot_ms")
STATS = ("mean", "p50", "p90", "p95", "p99", "p999", "max")
_QUANTILES = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "p999": 99.9}
# Requests in these stages are load shaping, not measurement: kept out of the per-arm statistics.
UNMEASURED_STAGES = frozenset({"warmup", "cooldown"})

EXIT_OK = 0
EXIT_REQUEST_FAILURES = 1
EXIT_USAGE = 2
EXIT_GENERATOR_BEHIND = 3
EXIT_SLO_MISSED = 4


def describe(values: Any) -> dict[str, float | int | None]:
    """count, mean, exact percentiles (numpy linear interpolation) and max; None where there is no sample."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return {"count": 0, **dict.fromkeys(STATS)}
    quantiles = np.percentile(data, list(_QUANTILES.values()))
    out: dict[str, float | int | None] = {"count": int(data.size), "mean": round(float(data.mean()), 4)}
    out.update({name: round(float(q), 4) for name, q in zip(_QUANTILES, quantiles, strict=True)})
    out["max"] = round(float(data.max()), 4)
    return out


# ---------------------------------------------------------------------------------------------- SLOs
_SLO_RULE = re.compile(
    r"^(?:(?P<metric>[a-z_]+)\.(?P<stat>[a-z0-9]+)|(?P<rate>error_rate))\s*<=\s*(?P<value>\S+)$"
)


@dataclass(frozen=True)
class SloRule:
    metric: str  # one of METRICS, or "error_rate"
    stat: str  # one of STATS; "" for error_rate
    threshold: float

    @property
    def label(self) -> str:
        return self.metric if not self.stat else f"{self.metric}.{self.stat}"


def parse_slo(spec: str) -> tuple[SloRule, ...]:
    """`"ttft_ms.p99<=500,error_rate<=0.001"` -> rules; empty means no SLO."""
    rules = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        match = _SLO_RULE.match(part)
        if not match:
            raise ValueError(f"bad SLO {part!r}: expected metric.stat<=value or error_rate<=value")
        try:
            value = float(match.group("value"))
        except ValueError:
            raise ValueError(
                f"bad SLO {part!r}: threshold {match.group('value')!r} is not a number"
            ) from None
        if match.group("rate"):
            rules.append(SloRule("error_rate", "", value))
            continue
        metric, stat = match.group("metric"), match.group("stat")
        if metric not in METRICS:
            raise ValueError(f"bad SLO {part!r}: unknown metric {metric!r} (one of {', '.join(METRICS)})")
        if stat not in STATS:
            raise ValueError(f"bad SLO {part!r}: unknown statistic {stat!r} (one of {', '.join(STATS)})")
        rules.append(SloRule(metric, stat, value))
    return tuple(rules)


# ------------------------------------------------------------------------------------ accumulation
@dataclass
class ArmSamples:
    requests: int = 0
    ok: int = 0
    failed: int = 0
    cancelled: int = 0
    errors: Counter = field(default_factory=Counter)
    output_tokens: int = 0
    measured_from: float = math.inf
    measured_to: float = -math.inf
    samples: dict[str, array] = field(default_factory=lambda: {m: array("d") for m in METRICS})

    def add(self, record: dict[str, Any]) -> None:
        self.requests += 1
        self.measured_from = min(self.measured_from, record["sent_at"])
        self.measured_to = max(self.measured_to, record["sent_at"] + (record["e2e_ms"] or 0.0) / 1000.0)
        if record["ok"]:
            self.ok += 1
            self.output_tokens += record["output_tokens"]
            for metric in METRICS:
                if metric == "itl_ms":
                    self.samples[metric].extend(record["itl_ms"])
                elif record[metric] is not None:
                    self.samples[metric].append(record[metric])
        elif record["error_kind"] == "cancelled":
            self.cancelled += 1
        else:
            self.failed += 1
            self.errors[record["error_kind"]] += 1

    def to_dict(self) -> dict[str, Any]:
        judged = self.requests - self.cancelled
        out: dict[str, Any] = {
            "requests": self.requests,
            "ok": self.ok,
            "failed": self.failed,
            "cancelled": self.cancelled,
            "error_rate": round(self.failed / judged, 6) if judged else None,
            "errors": dict(self.errors),
            "output_tokens": self.output_tokens,
            "measured_from": self.measured_from if self.requests else None,
            "measured_to": self.measured_to if self.requests else None,
        }
        out.update({metric: describe(self.samples[metric]) for metric in METRICS})
        return out


@dataclass
class StageCounters:
    """What one dispatcher did with one stage's arrivals; merged by summing across workers."""

    scheduled: int = 0
    sent: int = 0
    late: int = 0
    dropped_in_flight: int = 0
    dropped_too_late: int = 0
    first_scheduled_at: float = math.inf
    last_scheduled_at: float = -math.inf
    first_sent_at: float = math.inf
    last_sent_at: float = -math.inf

    def merge(self, other: dict[str, Any]) -> None:
        for name in ("scheduled", "sent", "late", "dropped_in_flight", "dropped_too_late"):
            setattr(self, name, getattr(self, name) + other[name])
        for name in ("first_scheduled_at", "first_sent_at"):
            setattr(self, name, min(getattr(self, name), other[name]))
        for name in ("last_scheduled_at", "last_sent_at"):
            setattr(self, name, max(getattr(self, name), other[name]))

    def to_wire(self) -> dict[str, Any]:
        return dict(vars(self))


def _rate(count: int, first: float, last: float) -> float | None:
    return (count - 1) / (last - first) if count >= 2 and last > first else None


class RunSummary:
    """Collects every record and each worker's stage counters of one run; renders the summary JSON."""

    def __init__(self, options: dict[str, Any], nominal_rate: float, slo: tuple[SloRule, ...]) -> None:
        self.options = options
        self.nominal_rate = nominal_rate
        self.slo = slo
        self.arms: dict[str, ArmSamples] = {}
        self.all = ArmSamples()
        self.lag_ms = array("d")
        self.stage_counters: dict[int, dict[str, dict[str, Any]]] = {}  # worker -> stage -> counters
        self.stage_order: list[str] = []

    def add_records(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            self.lag_ms.append(record["lag_ms"])
            if record["stage"] in UNMEASURED_STAGES:
                continue
            self.arms.setdefault(record["arm"], ArmSamples()).add(record)
            self.all.add(record)

    def set_counters(self, worker: int, stages: dict[str, dict[str, Any]]) -> None:
        """Cumulative counters of one worker (replaces its previous report)."""
        self.stage_counters[worker] = stages
        for name in stages:
            if name not in self.stage_order:
                self.stage_order.append(name)

    def _merged_stages(self) -> dict[str, StageCounters]:
        merged = {name: StageCounters() for name in self.stage_order}
        for stages in self.stage_counters.values():
            for name, counters in stages.items():
                merged[name].merge(counters)
        return merged

    def render(self, started_at: float, ended_at: float) -> dict[str, Any]:
        stages = self._merged_stages()
        total = StageCounters()
        for counters in stages.values():
            total.merge(counters.to_wire())
        target = _rate(total.scheduled, total.first_scheduled_at, total.last_scheduled_at)
        achieved = _rate(total.sent, total.first_sent_at, total.last_sent_at)
        rate_error = 100.0 * (achieved / target - 1.0) if target and achieved else None
        lag = describe(self.lag_ms)
        schedule = {
            "nominal_rate_rps": self.nominal_rate,
            "target_rate_rps": _round(target),
            "achieved_rate_rps": _round(achieved),
            "rate_error_pct": _round(rate_error),
            "scheduled": total.scheduled,
            "sent": total.sent,
            "late": total.late,
            "dropped_in_flight": total.dropped_in_flight,
            "dropped_too_late": total.dropped_too_late,
            "lag_ms": lag,
            "stages": [
                {
                    "name": name,
                    "scheduled": c.scheduled,
                    "sent": c.sent,
                    "late": c.late,
                    "dropped_in_flight": c.dropped_in_flight,
                    "dropped_too_late": c.dropped_too_late,
                    "target_rate_rps": _round(_rate(c.scheduled, c.first_scheduled_at, c.last_scheduled_at)),
                    "achieved_rate_rps": _round(_rate(c.sent, c.first_sent_at, c.last_sent_at)),
                }
                for name, c in stages.items()
            ],
        }
        max_rate_error = float(self.options.get("max_rate_error_pct", 2.0))
        max_lag_p99 = float(self.options.get("max_lag_p99_ms", 10.0))
        self_check = judge_generator(rate_error, lag["p99"], max_rate_error, max_lag_p99)
        arms = {name: samples.to_dict() for name, samples in sorted(self.arms.items())}
        arms["all"] = self.all.to_dict()
        slo = judge_slo(self.slo, arms)
        code, reason = exit_decision(self_check["ok"], slo, self.all.failed)
        return {
            "schema": SCHEMA,
            "started_at": round(started_at, 6),
            "ended_at": round(ended_at, 6),
            "duration_s": round(ended_at - started_at, 3),
            "options": self.options,
            "workers": len(self.stage_counters),
            "schedule": schedule,
            "self_check": self_check,
            "arms": arms,
            "slo": slo,
            "exit_code": code,
            "exit_reason": reason,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def judge_generator(
    rate_error_pct: float | None, lag_p99_ms: float | None, max_rate_error_pct: float, max_lag_p99_ms: float
) -> dict[str, Any]:
    """Did the generator itself keep up? ok is None when there were too few arrivals to tell."""
    out: dict[str, Any] = {"max_rate_error_pct": max_rate_error_pct, "max_lag_p99_ms": max_lag_p99_ms}
    if rate_error_pct is None or lag_p99_ms is None:
        return {"ok": None, "reasons": ["too few arrivals sent to judge the generator"], **out}
    reasons = []
    if abs(rate_error_pct) > max_rate_error_pct:
        reasons.append(f"achieved rate off target by {rate_error_pct:+.2f}% (limit {max_rate_error_pct}%)")
    if lag_p99_ms > max_lag_p99_ms:
        reasons.append(f"schedule lag p99 {lag_p99_ms:.2f} ms > {max_lag_p99_ms} ms")
    return {"ok": not reasons, "reasons": reasons, **out}


def judge_slo(rules: tuple[SloRule, ...], arms: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Every rule for every arm that served requests; a missing value fails (missing data never passes)."""
    if not rules:
        return {"given": False, "ok": None, "results": []}
    judged_arms = [name for name in arms if name != "all" and arms[name]["requests"] > 0] or ["all"]
    results = []
    for arm in judged_arms:
        for rule in rules:
            if rule.metric == "error_rate":
                value = arms[arm]["error_rate"]
            else:
                value = arms[arm][rule.metric][rule.stat]
            ok = value is not None and value <= rule.threshold
            results.append(
                {
                    "arm": arm,
                    "metric": rule.metric,
                    "stat": rule.stat,
                    "op": "<=",
                    "threshold": rule.threshold,
                    "value": value,
                    "ok": ok,
                }
            )
    return {"given": True, "ok": all(r["ok"] for r in results), "results": results}


def exit_decision(generator_ok: bool | None, slo: dict[str, Any], failed: int) -> tuple[int, str]:
    """The process exit code and why (precedence: generator behind, SLO, request failures)."""
    if generator_ok is False:
        return EXIT_GENERATOR_BEHIND, "the load generator could not keep up; its measurements are suspect"
    if slo["given"]:
        missed = [r for r in slo["results"] if not r["ok"]]
        if missed:
            first = missed[0]
            label = first["metric"] if not first["stat"] else f"{first['metric']}.{first['stat']}"
            value = "no data" if first["value"] is None else first["value"]
            return EXIT_SLO_MISSED, (
                f"client-side SLO missed: {first['arm']} {label} = {value} > {first['threshold']}"
                + (f" (and {len(missed) - 1} more)" if len(missed) > 1 else "")
            )
        return EXIT_OK, "every client-side SLO held"
    if failed:
        return (
            EXIT_REQUEST_FAILURES,
            f"{failed} requests failed (no --slo given: Locust's exit 1 on failures)",
        )
    return EXIT_OK, "no request failed"

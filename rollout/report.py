"""The report directory `reports/<run-id>/`: decision.json, summary.md, report.html (plots), `latest`.

The timeline plots come from Prometheus range queries taken before the stack stops; a series that
Prometheus cannot provide is drawn as "no data" rather than left out silently.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gates.record import Verdict
from gates.report import arm_counts, gate_table
from infra.prometheus_api import PrometheusAPI, ProviderError
from rollout.events import HookRun, Rollback, StepPassed, StepStarted
from rollout.plan import Phase
from rollout.state import EvaluationEntry, RolloutState

SCHEMA = "rollout-decision/v1"


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str
    query: str  # PromQL returning one series per `arm`
    scale: float = 1.0  # multiplied into values for display (e.g. seconds -> ms)


LOCAL_PANELS = (
    Panel(
        "P99 end-to-end latency",
        "ms",
        "histogram_quantile(0.99, sum by (arm, le) (rate(sglang:e2e_request_latency_seconds_bucket[20s])))",
        1000.0,
    ),
    Panel(
        "P99 time to first token",
        "ms",
        "histogram_quantile(0.99, sum by (arm, le) (rate(sglang:time_to_first_token_seconds_bucket[20s])))",
        1000.0,
    ),
    Panel(
        "CPU utilisation of allotted cores",
        "%",
        "sum by (arm) (rate(backend_process_cpu_seconds_total[10s])) / max by (arm) (backend_cpu_allotted_cores)",
        100.0,
    ),
    Panel("Resident memory", "MiB", "sum by (arm) (backend_process_resident_memory_bytes)", 1 / 2**20),
    Panel("Requests per second (router)", "req/s", "sum by (arm) (rate(router_requests_total[10s]))"),
    Panel(
        "Error rate (router, non-2xx)",
        "%",
        'sum by (arm) (rate(router_requests_total{code!~"2.."}[10s]) or rate(router_requests_total[10s]) * 0)'
        " / sum by (arm) (rate(router_requests_total[10s]))",
        100.0,
    ),
    Panel("Traffic weight", "%", "max by (arm) (router_traffic_weight_percent)"),
)


def kubernetes_panels(variables: Mapping[str, Any]) -> tuple[Panel, ...]:
    """The cluster's panels, limited to one release: the gates' `namespace` and per-arm `pod_regex`.

    The arm comes from the pod label the chart's monitors relabel into `arm`; CPU and memory come from
    cAdvisor (`container!=""` drops the pod-level aggregate), whose arm is read off the pod name.
    """
    namespace = variables["namespace"]
    regex = variables["pod_regex"]
    pods = "|".join(regex[arm] for arm in sorted(regex)) if isinstance(regex, Mapping) else regex
    sglang = f'namespace="{namespace}"'
    cadvisor = f'namespace="{namespace}",pod=~"{pods}",container!="",container!="POD"'
    arm_from_pod = '"arm", "$1", "pod", ".*-(baseline|canary)-.*"'

    def quantile(metric: str) -> str:
        return f"histogram_quantile(0.99, sum by (arm, le) (rate({metric}_bucket{{{sglang}}}[1m])))"

    return (
        Panel("P99 end-to-end latency", "ms", quantile("sglang:e2e_request_latency_seconds"), 1000.0),
        Panel("P99 time to first token", "ms", quantile("sglang:time_to_first_token_seconds"), 1000.0),
        Panel(
            "CPU used (cores)",
            "cores",
            f"sum by (arm) (label_replace(rate(container_cpu_usage_seconds_total{{{cadvisor}}}[1m]), {arm_from_pod}))",
        ),
        Panel(
            "Working-set memory",
            "MiB",
            f"sum by (arm) (label_replace(container_memory_working_set_bytes{{{cadvisor}}}, {arm_from_pod}))",
            1 / 2**20,
        ),
        Panel(
            "Requests per second", "req/s", f"sum by (arm) (rate(sglang:num_requests_total{{{sglang}}}[1m]))"
        ),
        Panel(
            "Aborted requests per second",
            "req/s",
            f"sum by (arm) (rate(sglang:num_aborted_requests_total{{{sglang}}}[1m]))",
        ),
    )


def query_range(prometheus_url: str, query: str, start: float, end: float, step_s: float) -> dict[str, list]:
    """arm -> [(t, value), ...]; raises ProviderError when Prometheus cannot answer."""
    series: dict[str, list] = {}
    for item in PrometheusAPI(prometheus_url, timeout_s=20).range(query, start, end, step_s):
        series[item.labels.get("arm", "all")] = list(
            zip(item.times.tolist(), item.values.tolist(), strict=True)
        )
    return series


def collect_timeline(
    prometheus_url: str, start: float, end: float, panels: tuple[Panel, ...] = LOCAL_PANELS
) -> dict[str, Any]:
    step_s = max(1.0, (end - start) / 400)
    timeline: dict[str, Any] = {}
    for panel in panels:
        try:
            timeline[panel.title] = {"series": query_range(prometheus_url, panel.query, start, end, step_s)}
        except ProviderError as exc:
            timeline[panel.title] = {"series": {}, "error": str(exc)}
    return timeline


@dataclass(frozen=True)
class StepSpan:
    """One step of the run as it happened: when it ran, how it ended, and its evaluations."""

    index: int
    canary_weight: int
    started_at: float
    ended_at: float
    result: str  # passed | promoted/reverted/aborted (the step the run ended in) | in progress
    evaluations: tuple[EvaluationEntry, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "canary_weight": self.canary_weight,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "result": self.result,
            "evaluations": [e.to_dict() for e in self.evaluations],
        }


def step_spans(state: RolloutState) -> list[StepSpan]:
    starts = [e for e in state.events if isinstance(e, StepStarted)]
    spans = []
    end_of_run = state.finished_at or time.time()
    for i, event in enumerate(starts):
        ended = starts[i + 1].at if i + 1 < len(starts) else end_of_run
        index = event.step
        passed = any(isinstance(e, StepPassed) and e.step == index for e in state.events)
        if passed:
            result = "passed"
        elif state.phase.terminal:
            result = state.phase.value
        else:
            result = "in progress"
        spans.append(
            StepSpan(
                index=index,
                canary_weight=event.canary_weight,
                started_at=event.at,
                ended_at=ended,
                result=result,
                evaluations=tuple(
                    e for e in state.evaluations if e.step == index and event.at <= e.at <= ended
                ),
            )
        )
    return spans


def outcome_text(state: RolloutState) -> str:
    """promoted, reverted, aborted, or `in progress`."""
    return "in progress" if state.outcome is None else state.outcome.value


def _sample_text(entry: EvaluationEntry) -> str:
    """`gate baseline/canary` sample counts the evaluator reported, e.g. `latency_e2e_p99 1023/342`."""
    return "; ".join(f"{g.name} {arm_counts(g.samples)}" for g in entry.evaluation.gates if g.samples)


def failed_gates(state: RolloutState) -> list[str]:
    """The gates that failed the evaluation a revert rested on (none unless the run was reverted)."""
    if state.outcome is not Phase.REVERTED or not state.evaluations:
        return []
    return list(state.evaluations[-1].evaluation.gates_with(Verdict.FAIL))


def decision_record(state: RolloutState, loadtest_summary: dict[str, Any] | None) -> dict[str, Any]:
    """`decision.json`: the run, every step with its evaluations, the rollbacks and hooks."""
    return {
        "schema": SCHEMA,
        "run_id": state.run_id,
        "outcome": outcome_text(state),
        "reason": state.reason,
        "decided_by": state.decided_by,
        "failed_gates": failed_gates(state),
        "started_at": state.started_at,
        "finished_at": state.finished_at,
        "duration_s": None if state.finished_at is None else round(state.finished_at - state.started_at, 1),
        "profile": state.profile,
        "router": state.router.get("kind"),
        "steps": [span.to_dict() for span in step_spans(state)],
        # the oldest evaluations of steps held longer than the state keeps (rollout/state.py KEPT_PER_STEP)
        "evaluations_dropped": state.evaluations_dropped,
        "rollbacks": [e.to_dict() for e in state.events if isinstance(e, Rollback)],
        "hooks": [e.to_dict() for e in state.events if isinstance(e, HookRun)],
        "events": [e.to_dict() for e in state.events],
        "loadtest_summary": loadtest_summary,
    }


def _fmt_time(t: float, t0: float) -> str:
    return f"+{t - t0:.0f}s"


def summary_markdown(state: RolloutState, loadtest_summary: dict[str, Any] | None) -> str:
    t0 = state.started_at
    profile = state.profile
    duration = None if state.finished_at is None else round(state.finished_at - state.started_at, 1)
    lines = [
        f"# Rollout {state.run_id}: **{outcome_text(state)}**",
        "",
        f"- Reason: {state.reason}",
        f"- Decided by: {state.decided_by}",
        f"- Duration: {duration} s; profile `{profile['name']}` "
        f"(steps {profile['steps']}, interval {profile['interval_s']} s, "
        f"{profile['request_rate']} req/s offered)",
    ]
    failed = failed_gates(state)
    if failed:
        lines.append(f"- Failed gate(s): {', '.join(failed)}")
    lines += [
        "",
        "| step | canary % | from | to | result | evaluations (pass/fail/inconclusive) |",
        "|---|---|---|---|---|---|",
    ]
    spans = step_spans(state)
    for span in spans:
        verdicts = [e.verdict for e in span.evaluations]
        counts = "/".join(str(verdicts.count(v)) for v in Verdict)
        lines.append(
            f"| {span.index + 1} | {span.canary_weight} | {_fmt_time(span.started_at, t0)} | "
            f"{_fmt_time(span.ended_at, t0)} | {span.result} | {counts} |"
        )
    lines += ["", "## Evaluations", ""]
    for span in spans:
        for entry in span.evaluations:
            gates = entry.gates_line(", ")
            samples = _sample_text(entry)
            sample_text = f"; samples (baseline/canary): {samples}" if samples else ""
            lines.append(
                f"- {_fmt_time(entry.at, t0)} at {entry.canary_weight}%: **{entry.verdict}** "
                f"({gates or entry.evaluation.error or ''}){sample_text}"
            )
    last = state.evaluations[-1] if state.evaluations else None
    if last is not None and last.evaluation.gates:
        lines += [
            "",
            f"## Last evaluation ({last.canary_weight}% canary)",
            "",
            *gate_table(last.evaluation.gates),
        ]
    for rollback in (e for e in state.events if isinstance(e, Rollback)):
        lines.append(f"- rollback {_fmt_time(rollback.at, t0)} by {rollback.who}: {rollback.reason}")
    lines += loadtest_table(loadtest_summary, "## Client-side load (Locust)")
    return "\n".join(lines) + "\n"


def loadtest_table(summary: Mapping[str, Any] | None, heading: str) -> list[str]:
    """Markdown lines: Locust's per-arm requests, failures and P99s (none when there was no load summary)."""
    arms = (summary or {}).get("arms") or {}
    if not arms:
        return []
    lines = [
        "",
        heading,
        "",
        "| arm | requests | failed | p99 e2e ms | p99 ttft ms |",
        "|---|---|---|---|---|",
    ]
    for arm in ("baseline", "canary"):
        a = arms.get(arm)
        if a:
            lines.append(
                f"| {arm} | {a.get('requests')} | {a.get('failed')} | {(a.get('e2e_ms') or {}).get('p99')} | "
                f"{(a.get('ttft_ms') or {}).get('p99')} |"
            )
    return lines


@dataclass(frozen=True)
class RunOutline:
    """What the plot and the page show of a run: its id, outcome and reason, when each step began."""

    run_id: str
    outcome: str
    reason: str
    started_at: float
    finished_at: float | None
    steps: tuple[tuple[float, int], ...]  # (started at, canary percent)

    @classmethod
    def of(cls, state: RolloutState) -> RunOutline:
        return cls(
            run_id=state.run_id,
            outcome=outcome_text(state),
            reason=str(state.reason),
            started_at=state.started_at,
            finished_at=state.finished_at,
            steps=tuple((span.started_at, span.canary_weight) for span in step_spans(state)),
        )


def plot_timeline(outline: RunOutline, timeline: dict[str, Any], panels: tuple[Panel, ...]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = outline.started_at
    colors = {"baseline": "#1f77b4", "canary": "#d62728", "all": "#555555"}
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 2.1 * len(panels)), sharex=True)
    outcome_color = {"promoted": "#2ca02c", "reverted": "#d62728", "aborted": "#ff7f0e"}.get(
        outline.outcome, "#555555"
    )
    for ax, panel in zip(axes, panels, strict=True):
        entry = timeline.get(panel.title, {})
        series = entry.get("series", {})
        for arm, points in sorted(series.items()):
            xs = [t - t0 for t, v in points if v == v]
            ys = [v * panel.scale for t, v in points if v == v]
            ax.plot(xs, ys, label=arm, color=colors.get(arm), linewidth=1.3)
        if not series:
            ax.text(
                0.5,
                0.5,
                "no data" + (f": {entry['error'][:80]}" if entry.get("error") else ""),
                transform=ax.transAxes,
                ha="center",
                va="center",
                color="#888888",
            )
        if panel.unit != "MiB":
            ax.set_ylim(bottom=0)
        ax.set_ylabel(panel.unit)
        ax.set_title(panel.title, fontsize=10, loc="left")
        ax.grid(alpha=0.3)
        for started_at, _weight in outline.steps:
            ax.axvline(started_at - t0, color="#888888", linestyle="--", linewidth=0.8)
        if outline.finished_at is not None:
            ax.axvline(outline.finished_at - t0, color=outcome_color, linewidth=2)
    top = axes[0]
    for started_at, weight in outline.steps:
        top.annotate(
            f"{weight}%",
            (started_at - t0, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(3, -12),
            textcoords="offset points",
            fontsize=8,
            color="#444444",
        )
    if outline.finished_at is not None:
        top.annotate(
            outline.outcome.upper(),
            (outline.finished_at - t0, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(-4, -12),
            textcoords="offset points",
            ha="right",
            fontsize=9,
            fontweight="bold",
            color=outcome_color,
        )
    axes[-1].set_xlabel("seconds since rollout start (dashed: step starts; solid: final decision)")
    fig.suptitle(f"Rollout {outline.run_id}: {outline.outcome}", fontsize=12)
    handles = [plt.Line2D([], [], color=colors[arm], label=arm) for arm in ("baseline", "canary")]
    fig.legend(handles=handles, loc="upper right", ncol=2, fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def report_html(outline: RunOutline, summary_md: str, png: bytes) -> str:
    image = base64.b64encode(png).decode()
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>Rollout {html.escape(outline.run_id)}: {html.escape(outline.outcome)}</title>"
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto} pre{white-space:pre-wrap}</style>"
        "</head><body>"
        f"<h1>Rollout {html.escape(outline.run_id)}: {html.escape(outline.outcome)}</h1>"
        f"<p>{html.escape(outline.reason)}</p>"
        f"<img alt='per-arm timeline' style='width:100%' src='data:image/png;base64,{image}'>"
        f"<h2>Summary</h2><pre>{html.escape(summary_md)}</pre>"
        "<p>Every gate evaluation, with values per arm, intervals and sample counts (queries and thresholds on each step's latest), "
        "is in <a href='decision.json'>decision.json</a>.</p></body></html>\n"
    )


def write_report(
    state: RolloutState,
    reports_dir: Path,
    *,
    timeline: dict[str, Any] | None,
    loadtest_summary: dict[str, Any] | None = None,
    panels: tuple[Panel, ...] = LOCAL_PANELS,
) -> Path:
    """Write the three files and point `reports/latest` at this run; returns the run's directory."""
    run_dir = reports_dir / state.run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    decision = decision_record(state, loadtest_summary)
    (run_dir / "decision.json").write_text(json.dumps(decision, indent=1, default=str) + "\n")
    summary = summary_markdown(state, loadtest_summary)
    outline = RunOutline.of(state)
    (run_dir / "summary.md").write_text(summary)
    png = plot_timeline(outline, timeline or {}, panels)
    (run_dir / "timeline.png").write_bytes(png)
    (run_dir / "report.html").write_text(report_html(outline, summary, png))
    latest = reports_dir / "latest"
    tmp = reports_dir / f".latest-{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(state.run_id)
    os.replace(tmp, latest)
    return run_dir

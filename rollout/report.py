"""The report directory `reports/<run-id>/`: decision.json, summary.md, report.html (plots), `latest`.

The timeline has a panel per gate, drawn by its kind from the gate's own queries (`GateKind.panel`), so the
plot shows the series the gates judge, with their bounds; its range queries are taken before the stack
stops, and a series that Prometheus cannot provide is drawn as "no data" rather than left out silently.
The traffic weights come from the events that moved them, not from a metric.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gates.kinds import KINDS
from gates.kinds.base import Bound, Panel
from gates.provider import ProviderError, UnreachableError, single_range
from gates.record import Verdict
from gates.report import arm_counts, gate_table
from gates.spec import ARMS, GateConfig
from infra.prometheus_api import PrometheusAPI
from rollout.events import Event, HookRun, Promotion, Rollback, StepPassed, StepStarted, WeightsSet
from rollout.plan import Phase
from rollout.routers.base import Weights
from rollout.state import EvaluationEntry, RolloutState

SCHEMA = "rollout-decision/v1"


# Points per series across the run (the range queries' step follows from it).
TIMELINE_POINTS = 400
# The shortest window a panel's rate or increase reads, per query profile: locally every series is scraped
# each second (ten scrapes in 10 s); in a cluster sglang and cAdvisor are scraped every 5 to 30 s, and a rate
# needs two samples in its window (two at 30 s in 60 s).
WINDOW_FLOOR_S = {"local": 10.0, "kubernetes": 60.0}


def timeline_step(start: float, end: float) -> float:
    return max(1.0, (end - start) / TIMELINE_POINTS)


def panel_window_s(profile: str, step_s: float) -> float:
    """The panels' rate window: one step, so that each point covers the step before it and the points tile
    the run (no request between two points, none counted twice; the threshold kind judges its sub-windows
    alike), but never shorter than the profile's floor, under which a point holds too few scrapes and a short
    run's plot would have gaps. Whole seconds, as a PromQL duration."""
    return float(math.ceil(max(step_s, WINDOW_FLOOR_S[profile])))


def gate_panels(config: GateConfig, variables: Mapping[str, Any], window_s: float) -> tuple[Panel, ...]:
    """Every gate's panels in the gate file's order (dry-run gates too), as its kind draws them."""
    return tuple(
        panel for gate in config.gates for panel in KINDS[gate.kind].panel(gate, variables, window_s)
    )


@dataclass(frozen=True)
class PanelData:
    """A panel as fetched: each arm's points (time, value before the panel's scale), or why it has none."""

    panel: Panel
    series: Mapping[str, tuple[tuple[float, float], ...]]
    errors: Mapping[str, str]


def collect_timeline(
    prometheus_url: str, config: GateConfig, variables: Mapping[str, Any], start: float, end: float
) -> tuple[PanelData, ...]:
    """The gates' panels over [start, end], one range query per arm; a query that gives no single series
    (none, several, Prometheus not answering) leaves its arm's error to be drawn as "no data"."""
    step_s = timeline_step(start, end)
    panels = gate_panels(config, variables, panel_window_s(config.profile, step_s))
    api = PrometheusAPI(prometheus_url, timeout_s=20)
    unreachable: str | None = None  # asked once: every other query would wait for the same timeout
    timeline = []
    for panel in panels:
        series: dict[str, tuple[tuple[float, float], ...]] = {}
        errors: dict[str, str] = {}
        for arm, promql in panel.queries.items():
            if unreachable is not None:
                errors[arm] = unreachable
                continue
            try:
                found = single_range(api, promql, start, end, step_s)
            except ProviderError as exc:
                errors[arm] = f"{exc.kind}: {exc}"
                if isinstance(exc, UnreachableError):
                    unreachable = errors[arm]
                continue
            series[arm] = tuple(zip(found.times.tolist(), found.values.tolist(), strict=True))
        timeline.append(PanelData(panel, series, errors))
    return tuple(timeline)


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


def weight_changes(events: Sequence[Event]) -> tuple[tuple[float, Weights], ...]:
    """When traffic moved and to what, from the events that moved it: a step's weights set, a rollback (to
    the baseline), a promotion by hand (to the canary)."""
    changes = []
    for event in events:
        if isinstance(event, WeightsSet):
            changes.append((event.at, event.weights))
        elif isinstance(event, Rollback):
            changes.append((event.at, Weights.for_canary(0)))
        elif isinstance(event, Promotion):
            changes.append((event.at, Weights.for_canary(100)))
    return tuple(changes)


@dataclass(frozen=True)
class RunOutline:
    """What the plot and the page show of a run: its id, outcome and reason, when each step began, and the
    traffic weights over time (each from the time it was set; none: not drawn)."""

    run_id: str
    outcome: str
    reason: str
    started_at: float
    finished_at: float | None
    steps: tuple[tuple[float, int], ...]  # (started at, canary percent)
    weights: tuple[tuple[float, Weights], ...] = ()

    @classmethod
    def of(cls, state: RolloutState) -> RunOutline:
        return cls(
            run_id=state.run_id,
            outcome=outcome_text(state),
            reason=str(state.reason),
            started_at=state.started_at,
            finished_at=state.finished_at,
            steps=tuple((span.started_at, span.canary_weight) for span in step_spans(state)),
            weights=weight_changes(state.events),
        )


ARM_COLORS = {"baseline": "#1f77b4", "canary": "#d62728"}
OUTCOME_COLORS = {"promoted": "#2ca02c", "reverted": "#d62728", "aborted": "#ff7f0e"}
MUTED = "#888888"


def plot_timeline(outline: RunOutline, timeline: Sequence[PanelData]) -> bytes:
    """One row per gate panel, then the traffic weights when the outline has them; every row marks the step
    starts (dashed) and the decision (solid)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = outline.started_at
    rows = max(len(timeline) + (1 if outline.weights else 0), 1)
    fig, grid = plt.subplots(rows, 1, figsize=(11, 2.1 * rows), sharex=True, squeeze=False)
    axes = list(grid[:, 0])
    outcome_color = OUTCOME_COLORS.get(outline.outcome, "#555555")
    for ax, data in zip(axes, timeline, strict=False):
        _draw_panel(ax, data, t0)
    if outline.weights:
        _draw_weights(axes[len(timeline)], outline, t0)
    elif not timeline:
        _say(axes[0], "no panels: no gate draws a series and no weights were recorded")
    for ax in axes:
        ax.grid(alpha=0.3)
        for started_at, _weight in outline.steps:
            ax.axvline(started_at - t0, color=MUTED, linestyle="--", linewidth=0.8)
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
    axes[-1].set_xlabel(
        "seconds since rollout start (dashed: step starts; solid: final decision; dotted: a gate's bound)"
    )
    fig.suptitle(f"Rollout {outline.run_id}: {outline.outcome}", fontsize=12)
    handles = [plt.Line2D([], [], color=color, label=arm) for arm, color in ARM_COLORS.items()]
    fig.legend(handles=handles, loc="upper right", ncol=2, fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def _draw_panel(ax: Any, data: PanelData, t0: float) -> None:
    """A gate's series per arm in the panel's unit, and its bounds as dotted lines (named at the right)."""
    panel = data.panel
    for arm, points in sorted(data.series.items()):
        ys = [v * panel.scale for _, v in points]
        ax.plot([t - t0 for t, _ in points], ys, label=arm, color=ARM_COLORS.get(arm), linewidth=1.3)
    for bound in panel.bounds:
        ax.axhline(bound.value * panel.scale, color="#444444", linestyle=":", linewidth=1.0)
    if panel.bounds:
        text = ", ".join(_bound_text(b, panel) for b in panel.bounds)
        ax.set_title(text, fontsize=8, loc="right", color="#444444")
    missing = [f"{arm}: {data.errors[arm][:80]}" for arm in sorted(data.errors)]
    if missing and not data.series:
        _say(ax, "no data\n" + "\n".join(missing))
    elif missing:
        ax.text(
            0.01, 0.04, "no data for " + "; ".join(missing), transform=ax.transAxes, fontsize=7, color=MUTED
        )
    if panel.from_zero:
        ax.set_ylim(bottom=0)
    ax.set_ylabel(panel.unit)
    ax.set_title(panel.title, fontsize=10, loc="left")


def _bound_text(bound: Bound, panel: Panel) -> str:
    """e.g. `canary max 600 ms` (no arm named when both are judged)."""
    arms = "" if set(bound.arms) == set(ARMS) else "/".join(bound.arms) + " "
    return f"{arms}{bound.label} {bound.value * panel.scale:g} {panel.unit}".rstrip()


def _draw_weights(ax: Any, outline: RunOutline, t0: float) -> None:
    """Each arm's weight from each change to the next, the last held until the run ended (or now)."""
    end = outline.finished_at if outline.finished_at is not None else time.time()
    times = [at - t0 for at, _ in outline.weights] + [max(end, outline.weights[-1][0]) - t0]
    for arm, color in ARM_COLORS.items():
        values = [weights.as_dict()[arm] for _, weights in outline.weights]
        ax.step(times, [*values, values[-1]], where="post", color=color, linewidth=1.3)
    ax.set_ylim(0, 105)
    ax.set_ylabel("%")
    ax.set_title("traffic weight (as the rollout set it)", fontsize=10, loc="left")


def _say(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color=MUTED, fontsize=8)


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
    timeline: Sequence[PanelData] | None,
    loadtest_summary: dict[str, Any] | None = None,
) -> Path:
    """Write the three files and point `reports/latest` at this run; returns the run's directory."""
    run_dir = reports_dir / state.run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    decision = decision_record(state, loadtest_summary)
    (run_dir / "decision.json").write_text(json.dumps(decision, indent=1, default=str) + "\n")
    summary = summary_markdown(state, loadtest_summary)
    outline = RunOutline.of(state)
    (run_dir / "summary.md").write_text(summary)
    png = plot_timeline(outline, timeline or ())
    (run_dir / "timeline.png").write_bytes(png)
    (run_dir / "report.html").write_text(report_html(outline, summary, png))
    latest = reports_dir / "latest"
    tmp = reports_dir / f".latest-{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(state.run_id)
    os.replace(tmp, latest)
    return run_dir

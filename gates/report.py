"""Human and CI renderings of an Evaluation: the per-gate Markdown table, a Markdown summary and JUnit XML
(one test case per gate). Callers that wrap an evaluation (the rollout report, the CI gate) add their own
headers around `gate_table` and reuse `to_junit`; other per-gate renderings (chat notifications) take
their cells from `GateRow`."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gates.record import Evaluation, GateResult, Verdict


def _num(x: Any) -> str:
    if isinstance(x, float):
        return "n/a" if not math.isfinite(x) else f"{x:.4g}"
    if x is None:
        return "n/a"
    if isinstance(x, list | tuple):
        return "[" + ", ".join(_num(v) for v in x) + "]"
    return str(x)


def _cells(mapping: Any, sep: str = "<br>") -> str:
    if not mapping:
        return ""
    return sep.join(f"{k}: {_num(v)}" for k, v in dict(mapping).items())


def arm_counts(samples: Any) -> str:
    """`baseline/canary` sample counts (`-` for an arm the gate did not count)."""
    samples = dict(samples or {})
    return "/".join(
        "-" if samples.get(arm) is None else f"{float(samples[arm]):.0f}" for arm in ("baseline", "canary")
    )


@dataclass(frozen=True)
class GateRow:
    """One gate as every per-gate rendering shows it (the Markdown table, chat notifications): its cells
    as text, multi-valued cells joined by `sep`."""

    name: str
    verdict: str  # `fail (dry-run)` for a gate that cannot decide
    samples: str  # `baseline/canary` counts
    values: str  # every value, per arm and derived
    baseline: str  # the values of one arm: `baseline` itself, then `baseline_<what>` as `<what>: v`
    canary: str
    derived: str  # values of neither arm (ratios, differences, the method)
    threshold: str
    interval: str  # the confidence interval
    reason: str

    @classmethod
    def of(cls, g: GateResult, sep: str = "<br>") -> GateRow:
        return cls(
            name=g.name,
            verdict=g.verdict_text,
            samples=arm_counts(g.samples),
            values=_cells(g.values, sep),
            baseline=_arm_cells(g.values, "baseline", sep),
            canary=_arm_cells(g.values, "canary", sep),
            derived=_cells({k: v for k, v in dict(g.values).items() if _arm_of(k) is None}, sep),
            threshold=_cells(g.threshold, sep),
            interval=_cells(g.ci, sep),
            reason=g.reason,
        )


def _arm_of(key: str) -> str | None:
    return next((arm for arm in ("baseline", "canary") if key == arm or key.startswith(f"{arm}_")), None)


def _arm_cells(values: Mapping[str, Any], arm: str, sep: str) -> str:
    parts: list[str] = []
    for key, value in dict(values or {}).items():
        if key == arm:
            parts.insert(0, _num(value))
        elif _arm_of(key) == arm:
            parts.append(f"{key[len(arm) + 1 :]}: {_num(value)}")
    return sep.join(parts)


def gate_table(gates: Sequence[GateResult]) -> list[str]:
    """Markdown lines: one row per gate with its verdict, the samples it rested on, values per arm,
    threshold, interval and reason."""
    lines = [
        "| gate | verdict | samples (baseline/canary) | values | threshold | confidence interval | reason |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in (GateRow.of(g) for g in gates):
        reason = row.reason.replace("|", "\\|").replace("\n", " ")
        lines.append(
            f"| {row.name} | **{row.verdict}** | {row.samples} | {row.values} | "
            f"{row.threshold} | {row.interval} | {reason} |"
        )
    return lines


def to_markdown(ev: Evaluation) -> str:
    w = ev.weights
    lines = [
        f"# Gate evaluation: {ev.verdict.mark}",
        "",
        f"{ev.reason}. Window {ev.end - ev.start:.0f} s (unix {ev.start:.0f} to {ev.end:.0f}), weights baseline "
        f"{w.get('baseline', 0):g}% / canary {w.get('canary', 0):g}%, offered "
        f"{'n/a' if ev.offered_rps is None else f'{ev.offered_rps:g} rps'}, profile `{ev.profile}`, gate file `{ev.gate_file}`.",
        "",
        *gate_table(ev.gates),
    ]
    lines += ["", "## Queries", ""]
    for g in ev.gates:
        for arm, roles in g.queries.items():
            for role, query in roles.items():
                lines.append(f"- `{g.name}` {arm} {role} ({g.source}): `{query}`")
    return "\n".join(lines) + "\n"


def to_junit(ev: Evaluation, *, suite_name: str = "canary-gates", inconclusive_fails: bool = False) -> str:
    """Pass -> passed case, fail -> <failure>, inconclusive -> <skipped> with the reason (CI shows both),
    or a <failure> too with `inconclusive_fails` (missing data must not pass a required check). A dry-run
    gate is never a failure: <skipped> whatever its verdict, the message saying it. An evaluation that
    could not run at all is one failing case that says why."""
    suite = ET.Element("testsuite", name=suite_name, timestamp=f"{ev.evaluated_at:.0f}")
    failures = skipped = 0
    if not ev.gates:
        case = ET.SubElement(suite, "testcase", classname=suite_name, name="evaluation")
        ET.SubElement(case, "failure", message=ev.reason)
        failures = 1
    for g in ev.gates:
        case = ET.SubElement(suite, "testcase", classname=f"gates.{g.kind}", name=g.name)
        if g.dry_run:
            ET.SubElement(case, "skipped", message=f"dry-run, {g.verdict}: {g.reason}")
            skipped += 1
        elif g.verdict is Verdict.FAIL or (g.verdict is Verdict.INCONCLUSIVE and inconclusive_fails):
            ET.SubElement(
                case, "failure", message=f"{g.verdict}: {g.reason}", type=g.verdict.value
            ).text = _detail(g)
            failures += 1
        elif g.verdict is Verdict.INCONCLUSIVE:
            ET.SubElement(case, "skipped", message=f"inconclusive: {g.reason}")
            skipped += 1
        ET.SubElement(case, "system-out").text = _detail(g)
    suite.set("tests", str(max(1, len(ev.gates))))
    suite.set("failures", str(failures))
    suite.set("errors", "0")
    suite.set("skipped", str(skipped))
    ET.indent(suite)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"


def _detail(g: Any) -> str:
    return "\n".join(
        f"{label}: {_cells(m, ', ')}"
        for label, m in (
            ("values", g.values),
            ("threshold", g.threshold),
            ("ci", g.ci),
            ("samples", g.samples),
        )
    )

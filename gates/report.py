"""Human and CI renderings of an Evaluation: a Markdown summary and JUnit XML (one test case per gate)."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from typing import Any

from gates.record import Evaluation

_MARK = {"pass": "PASS", "fail": "FAIL", "inconclusive": "INCONCLUSIVE"}


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


def to_markdown(ev: Evaluation) -> str:
    w = ev.weights
    lines = [
        f"# Gate evaluation: {_MARK[ev.verdict]}",
        "",
        f"{ev.reason}. Window {ev.end - ev.start:.0f} s (unix {ev.start:.0f} to {ev.end:.0f}), weights baseline "
        f"{w.get('baseline', 0):g}% / canary {w.get('canary', 0):g}%, offered "
        f"{'n/a' if ev.offered_rps is None else f'{ev.offered_rps:g} rps'}, profile `{ev.profile}`, gate file `{ev.gate_file}`.",
        "",
        "| gate | verdict | values | threshold | confidence interval | samples | reason |",
        "|---|---|---|---|---|---|---|",
    ]
    for g in ev.gates:
        reason = g.reason.replace("|", "\\|")
        lines.append(
            f"| {g.name} | {_MARK[g.verdict]} | {_cells(g.values)} | {_cells(g.threshold)} | {_cells(g.ci)} | "
            f"{_cells(g.samples)} | {reason} |"
        )
    lines += ["", "## Queries", ""]
    for g in ev.gates:
        for arm, roles in g.queries.items():
            for role, query in roles.items():
                lines.append(f"- `{g.name}` {arm} {role} ({g.source}): `{query}`")
    return "\n".join(lines) + "\n"


def to_junit(ev: Evaluation) -> str:
    """Pass -> passed case, fail -> <failure>, inconclusive -> <skipped> with the reason (CI shows both)."""
    failures = sum(g.verdict == "fail" for g in ev.gates)
    skipped = sum(g.verdict == "inconclusive" for g in ev.gates)
    suite = ET.Element(
        "testsuite",
        name="canary-gates",
        tests=str(len(ev.gates)),
        failures=str(failures),
        errors="0",
        skipped=str(skipped),
        timestamp=f"{ev.evaluated_at:.0f}",
    )
    for g in ev.gates:
        case = ET.SubElement(suite, "testcase", classname=f"gates.{g.kind}", name=g.name)
        if g.verdict == "fail":
            ET.SubElement(case, "failure", message=g.reason).text = _detail(g)
        elif g.verdict == "inconclusive":
            ET.SubElement(case, "skipped", message=f"inconclusive: {g.reason}")
        ET.SubElement(case, "system-out").text = _detail(g)
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

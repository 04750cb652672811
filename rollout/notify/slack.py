"""A notice as a Slack incoming-webhook message: Block Kit blocks within Slack's limits, and the same
in mrkdwn text. The per-gate cells come from `gates.report.GateRow`, like the Markdown gate table."""

from __future__ import annotations

import time
from typing import Any

from gates.record import Verdict
from gates.report import GateRow
from rollout.notify.notices import Notice

MARKS = {Verdict.PASS: ":white_check_mark:", Verdict.FAIL: ":x:", Verdict.INCONCLUSIVE: ":grey_question:"}
SLACK_BLOCKS = 50  # Slack's limits: blocks per message, characters per text object and per field
SLACK_TEXT = 3000
SLACK_FIELD = 2000


def _esc(text: Any) -> str:
    """Slack mrkdwn: &, < and > are control characters."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _summary_lines(notice: Notice) -> list[str]:
    lines = [
        f"*{notice.event}* at step {notice.step + 1}/{len(notice.steps)} ({notice.canary_weight}% canary)"
    ]
    lines.append(f"*Reason:* {_esc(notice.reason)}")
    if notice.who != "rollout":
        lines.append(f"*Who:* {_esc(notice.who)}")
    if notice.failing_gates:
        lines.append("*Failing gates:* " + ", ".join(f"`{_esc(g)}`" for g in notice.failing_gates))
    return lines


def _gate_line(row: GateRow) -> str:
    return (
        f"• `{_esc(row.name)}` *{_esc(row.verdict.upper())}*: canary {_esc(row.canary or 'n/a')}, "
        f"baseline {_esc(row.baseline or 'n/a')}, threshold {_esc(row.threshold or 'n/a')}, "
        f"interval {_esc(row.interval or 'n/a')}, samples {row.samples}"
    )


def _gate_block(row: GateRow, verdict: Verdict) -> dict[str, Any]:
    cells = [
        ("Canary", row.canary),
        ("Baseline", row.baseline),
        ("Threshold", row.threshold),
        ("Interval", row.interval),
        ("Samples (baseline/canary)", row.samples),
    ]
    if row.derived:
        cells.append(("Compared", row.derived))
    return {
        "type": "section",
        "text": {
            "type": "mrkdwn",
            "text": _clip(
                f"{MARKS[verdict]} *{_esc(row.name)}*: *{_esc(row.verdict.upper())}*\n{_esc(row.reason)}",
                SLACK_TEXT,
            ),
        },
        "fields": [
            {"type": "mrkdwn", "text": _clip(f"*{label}*\n{_esc(value or 'n/a')}", SLACK_FIELD)}
            for label, value in cells
        ],
    }


def slack_message(notice: Notice) -> dict[str, Any]:
    """A Slack incoming-webhook message: Block Kit blocks (header, summary, then one section per gate of
    the evaluation the notice rests on) and the same in mrkdwn `text` for clients without blocks."""
    w = notice.weights
    context = (
        f"run `{_esc(notice.run_id)}` · phase {notice.phase} · traffic baseline {w.baseline}% / "
        f"canary {w.canary}% · {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(notice.at))}"
    )
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(notice.title(), 150)}},
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": _clip("\n".join(_summary_lines(notice)), SLACK_TEXT)},
        },
        {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]},
    ]
    text = [f"*{_esc(notice.title())}*", *_summary_lines(notice)]
    entry = notice.evaluation
    if entry is not None:
        ev = entry.evaluation
        heading = f"*Gates* at {entry.canary_weight}% canary: *{ev.verdict.mark}*, {_esc(ev.reason)}"
        blocks += [
            {"type": "divider"},
            {"type": "section", "text": {"type": "mrkdwn", "text": _clip(heading, SLACK_TEXT)}},
        ]
        text.append(heading)
        rows = [(GateRow.of(g, sep="\n"), g.verdict) for g in ev.gates]
        room = SLACK_BLOCKS - len(blocks) - 1
        blocks += [_gate_block(row, verdict) for row, verdict in rows[:room]]
        if len(rows) > room:
            more = f"{len(rows) - room} more gate(s) in the run's decision.json"
            blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": more}]})
        text += [_gate_line(GateRow.of(g, sep="; ")) for g in ev.gates]
    text.append(context)
    return {"text": _clip("\n".join(text), 3 * SLACK_TEXT), "blocks": blocks}

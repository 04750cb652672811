"""Notifications: what a rollout did, sent to chat (Slack-compatible incoming webhooks) and to JSON
webhooks, as Flagger's alerts and Argo Rollouts' notifications do.

A hooks file may carry, beside `hooks:`, a list of targets (parsed by `rollout.hooks`):

notifications:
  - {name: team-slack, type: slack, url_env: SLACK_WEBHOOK_URL, events: [promoted, reverted, rolled-back]}
  - {name: audit, type: webhook, url_file: /etc/rollout-notify/audit-url, timeout_s: 3, attempts: 5}

A webhook URL is a secret (whoever holds it can post): it comes from an environment variable or a
file (a mounted Kubernetes Secret), read when sending, never from the file itself or the state.

What to announce is derived from what the state recorded between two versions of it (new events and
evaluations, a phase change), so every writer (an orchestrator's interval, a rollback by hand) announces
the same way. Delivery never raises and never decides anything: each result (ok or not, attempts,
detail) is recorded as a `notify` event, which lands in decision.json with the others.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gates.record import Verdict
from gates.report import GateRow
from rollout.events import (
    Event,
    Notification,
    Pause,
    Promotion,
    Resume,
    Rollback,
    StepPassed,
    StepStarted,
    Takeover,
)
from rollout.plan import Phase, max_bake
from rollout.routers.base import Weights
from rollout.state import EvaluationEntry, Holder, RolloutState, StateConflict, StateStore

SCHEMA = "rollout-notification/v1"
EVENTS = (
    "step-started",  # a step's weights are being set
    "step-passed",  # its bake is over with passing gates
    "held-inconclusive",  # past the bake, an evaluation is inconclusive: the step holds (first of a run)
    "paused",  # held by hand (`rollout pause`)
    "resumed",
    "promoted",  # all steps passed, or promoted by hand
    "reverted",  # the rollout reverted itself: a failing gate, too many inconclusive, a failed hook
    "rolled-back",  # rolled back by a person (or by the orchestrator on its own error or interruption)
    "orchestrator-lost",  # a new orchestrator took over from one whose heartbeat lapsed
)
TARGET_TYPES = ("slack", "webhook")
TARGET_KEYS = frozenset(
    {"name", "type", "url_env", "url_file", "events", "timeout_s", "attempts", "backoff_s", "budget_s"}
)
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RECORD_RETRIES = 5  # the ConfigMap store has no lock: a concurrent write refuses ours, read again
ROUNDS = 4  # announce, record, and announce what others wrote meanwhile, at most this often
BASELINE_ONLY = Weights(baseline=100, canary=0)
Say = Callable[[str], None]


class UrlUnavailable(Exception):
    """The target's URL cannot be read now (variable unset, file missing or empty, not an http(s) URL)."""


@dataclass(frozen=True)
class NotifyTarget:
    name: str
    type: str  # slack | webhook
    url_env: str | None = None  # the environment variable holding the URL
    url_file: str | None = None  # or the file holding it (a mounted Secret's key)
    events: tuple[str, ...] = EVENTS
    timeout_s: float = 5.0  # each attempt
    attempts: int = 3  # tries per message, the first included
    backoff_s: float = 1.0  # wait before the second try, doubled before each next one
    budget_s: float = 30.0  # the most one batch (one interval's messages) may spend on this target

    def __post_init__(self) -> None:
        if self.type not in TARGET_TYPES:
            raise ValueError(f"type {self.type!r} is not one of {TARGET_TYPES}")
        if (self.url_env is None) == (self.url_file is None):
            raise ValueError(
                "needs exactly one of url_env (an environment variable holding the URL) or url_file "
                "(a file holding it, e.g. a mounted Kubernetes Secret)"
            )
        if self.url_env is not None and not (isinstance(self.url_env, str) and ENV_NAME.match(self.url_env)):
            raise ValueError(f"url_env {self.url_env!r} is not an environment variable name")
        if self.url_file is not None and not (isinstance(self.url_file, str) and self.url_file.strip()):
            raise ValueError(f"url_file {self.url_file!r} is not a path")
        unknown = [e for e in self.events if e not in EVENTS]
        if unknown or not self.events:
            raise ValueError(
                f"events {list(self.events)!r}: unknown or none; known events are {list(EVENTS)}"
            )
        if not self.timeout_s > 0 or not self.budget_s > 0 or self.backoff_s < 0:
            raise ValueError("timeout_s and budget_s must be > 0, backoff_s >= 0")
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int) or self.attempts < 1:
            raise ValueError(f"attempts {self.attempts!r} must be an integer >= 1")

    def wants(self, event: str) -> bool:
        return event in self.events

    def source(self) -> str:
        return f"${self.url_env}" if self.url_env is not None else f"file {self.url_file}"

    def url(self) -> str:
        """The URL as it is now; raises UrlUnavailable (saying where it looked, never what it found)."""
        if self.url_env is not None:
            value = os.environ.get(self.url_env, "").strip()
            if not value:
                raise UrlUnavailable(f"environment variable {self.url_env} is not set: no URL to send to")
        else:
            assert self.url_file is not None
            try:
                value = Path(self.url_file).read_text().strip()
            except OSError as exc:
                raise UrlUnavailable(f"URL file {self.url_file}: {exc.strerror or exc}") from None
            if not value:
                raise UrlUnavailable(f"URL file {self.url_file} is empty")
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise UrlUnavailable(f"{self.source()} does not hold an http(s) URL")
        return value

    def as_dict(self) -> dict[str, Any]:
        """What the state records: names of where the URL is, never the URL."""
        data: dict[str, Any] = {"name": self.name, "type": self.type}
        data.update({"url_env": self.url_env} if self.url_env is not None else {"url_file": self.url_file})
        data.update(
            events=list(self.events),
            timeout_s=self.timeout_s,
            attempts=self.attempts,
            backoff_s=self.backoff_s,
            budget_s=self.budget_s,
        )
        return data


def parse_targets(entries: Any, path: str) -> tuple[NotifyTarget, ...]:
    """Targets from a hooks file's `notifications:` list (or what the state recorded); a ValueError names
    the file and the entry."""
    if not isinstance(entries, list):
        raise ValueError(f"hooks file {path}: 'notifications:' must be a list of targets")
    targets: list[NotifyTarget] = []
    for i, entry in enumerate(entries):
        where = f"hooks file {path}: notifications[{i}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where} is not a mapping")
        if "url" in entry:
            raise ValueError(
                f"{where}: a literal url is refused, a webhook URL is a secret (whoever reads it can post); "
                "name where it is instead: url_env: SLACK_WEBHOOK_URL (an environment variable) or "
                "url_file: /etc/rollout-notify/url (a mounted Kubernetes Secret)"
            )
        unknown = sorted(set(entry) - TARGET_KEYS)
        if unknown:
            raise ValueError(f"{where} has unknown key(s) {unknown}; known: {sorted(TARGET_KEYS)}")
        events = entry.get("events", list(EVENTS))
        if not isinstance(events, list):
            raise ValueError(f"{where}: events must be a list of event names, one of {list(EVENTS)}")
        try:
            targets.append(
                NotifyTarget(
                    name=str(entry.get("name") or f"{entry.get('type', 'target')}-{i + 1}"),
                    type=str(entry.get("type", "")),
                    url_env=entry.get("url_env"),
                    url_file=entry.get("url_file"),
                    events=tuple(str(e) for e in events),
                    timeout_s=float(entry.get("timeout_s", 5.0)),
                    attempts=entry.get("attempts", 3),
                    backoff_s=float(entry.get("backoff_s", 1.0)),
                    budget_s=float(entry.get("budget_s", 30.0)),
                )
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: {exc}") from exc
    names = [t.name for t in targets]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"hooks file {path}: notification target name(s) {twice} used more than once")
    return tuple(targets)


# -- what happened ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Notice:
    """One thing to announce, with the gate record it rests on (the latest evaluation at its step)."""

    event: str
    run_id: str
    phase: str
    step: int
    steps: tuple[int, ...]
    weights: Weights  # the traffic split once it happened
    reason: str
    who: str
    at: float
    failing_gates: tuple[str, ...] = ()
    evaluation: EvaluationEntry | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)

    @property
    def canary_weight(self) -> int:
        return self.steps[self.step]

    def title(self) -> str:
        step = f"step {self.step + 1}/{len(self.steps)}"
        at = f"{self.canary_weight}% canary"
        text = {
            "step-started": f"{step} started, {at}",
            "step-passed": f"{step} passed at {at}",
            "held-inconclusive": f"holding at {at}: gates inconclusive",
            "paused": f"paused at {at} by {self.who}",
            "resumed": f"resumed at {at} by {self.who}",
            "promoted": "promoted: 100% canary",
            "reverted": f"REVERTED at {at}",
            "rolled-back": f"rolled back at {at} by {self.who}",
            "orchestrator-lost": f"orchestrator lost at {at}, taken over",
        }[self.event]
        return f"Rollout {self.run_id}: {text}"

    def to_dict(self) -> dict[str, Any]:
        """The generic webhook's body: the record as decision.json has it."""
        return {
            "schema": SCHEMA,
            "event": self.event,
            "title": self.title(),
            "run_id": self.run_id,
            "phase": self.phase,
            "step": self.step,
            "step_number": self.step + 1,
            "steps": list(self.steps),
            "canary_weight": self.canary_weight,
            "weights": self.weights.as_dict(),
            "reason": self.reason,
            "who": self.who,
            "at": self.at,
            "failing_gates": list(self.failing_gates),
            "evaluation": None if self.evaluation is None else self.evaluation.to_dict(),
            "detail": dict(self.detail),
        }


def notices_between(before: RolloutState, after: RolloutState) -> list[Notice]:
    """What happened from `before` to `after` (two versions of one run's state: events only ever appended,
    evaluations appended with the oldest of a long-held step dropped): one notice per step start, step pass, pause, resume, rollback that moved
    traffic and takeover; a promotion when the phase became promoted; a hold when an evaluation past
    the bake began a run of inconclusive ones."""
    if (
        before.run_id != after.run_id
        or len(before.events) > len(after.events)
        or _latest_evaluation_at(before) > _latest_evaluation_at(after)
    ):
        return []
    notices = []
    step = 0  # the step each event happened at: the latest step started before it
    for i, event in enumerate(after.events):
        if isinstance(event, StepStarted):
            step = event.step
        if i >= len(before.events) and (notice := _from_event(after, event, step)) is not None:
            notices.append(notice)
    if after.phase is Phase.PROMOTED and before.phase is not Phase.PROMOTED:
        latest = _latest_at(after, after.step_index)
        notices.append(
            _notice(
                after,
                "promoted",
                after.step_index,
                Weights.for_canary(100),
                reason=after.reason or "promoted",
                who=after.decided_by or "rollout",
                at=after.finished_at or after.started_at,
                evaluation=latest,
                phase=after.phase.value,
                # By hand past failing gates (`promote --force`): which ones.
                failing_gates=forced.forced if (forced := after.last_event(Promotion)) else (),
            )
        )
    held = _held_inconclusive(before, after)
    if held is not None:
        notices.append(held)
    return notices


def _latest_at(state: RolloutState, step: int, until: float | None = None) -> EvaluationEntry | None:
    """The step's latest evaluation (made by `until`, when given)."""
    return next(
        (e for e in reversed(state.evaluations) if e.step == step and (until is None or e.at <= until)), None
    )


def _notice(state: RolloutState, event: str, step: int, weights: Weights, **fields: Any) -> Notice:
    fields.setdefault("phase", Phase.PROGRESSING.value)
    return Notice(event=event, run_id=state.run_id, step=step, steps=state.steps, weights=weights, **fields)


def _from_event(state: RolloutState, event: Event, step: int) -> Notice | None:
    at = event.at
    if isinstance(event, StepStarted | StepPassed):
        passed = isinstance(event, StepPassed)
        latest = _latest_at(state, step) if passed else None
        return _notice(
            state,
            "step-passed" if passed else "step-started",
            step,
            Weights.for_canary(event.canary_weight),
            reason=(
                latest.evaluation.reason if latest else f"{event.canary_weight}% of traffic to the canary"
            ),
            who="rollout",
            at=at,
            evaluation=latest,
        )
    here = Weights.for_canary(state.steps[step])
    latest = _latest_at(state, step, until=at)
    if isinstance(event, Pause | Resume) and event.changed:
        return _notice(
            state,
            "paused" if isinstance(event, Pause) else "resumed",
            step,
            here,
            reason=event.reason,
            who=event.who,
            at=at,
            evaluation=latest,
        )
    if isinstance(event, Rollback) and event.changed:
        reverted = event.who == "rollout" and state.phase is Phase.REVERTED
        failing = latest.evaluation.gates_with(Verdict.FAIL) if latest is not None else ()
        before = event.weights_before
        return _notice(
            state,
            "reverted" if reverted else "rolled-back",
            step,
            BASELINE_ONLY,
            reason=event.reason,
            who=event.who,
            at=at,
            failing_gates=failing,
            evaluation=latest,
            phase=state.phase.value,
            detail={
                "weights_before": before.as_dict() if isinstance(before, Weights) else before,
                "verified": event.verified,
            },
        )
    if isinstance(event, Takeover):
        reason = (
            f"{event.previous} stopped renewing its lease (last heartbeat {event.heartbeat_age_s:.0f}s "
            f"ago, lease {event.lease_s:.0f}s); {event.holder} steers the rollout now"
        )
        detail = {
            "previous": event.previous,
            "heartbeat_age_s": event.heartbeat_age_s,
            "lease_s": event.lease_s,
            "holder": event.holder,
        }
        return _notice(
            state,
            "orchestrator-lost",
            step,
            here,
            reason=reason,
            who=event.holder,
            at=at,
            evaluation=latest,
            detail=detail,
        )
    return None


def _latest_evaluation_at(state: RolloutState) -> float:
    """When the state's latest evaluation ran (-inf: none): what is new since, a later state says (the
    oldest evaluations of a long-held step are dropped, so counting them does not)."""
    return state.evaluations[-1].at if state.evaluations else float("-inf")


def _held_inconclusive(before: RolloutState, after: RolloutState) -> Notice | None:
    new = [e for e in after.evaluations if e.at > _latest_evaluation_at(before)]
    if not new or after.phase.terminal or after.paused is not None or after.inconclusive_count < 1:
        return None
    last = new[-1]
    if last.verdict is not Verdict.INCONCLUSIVE or last.step != after.step_index:
        return None
    if before.step_index == after.step_index and before.inconclusive_count > 0:
        return None  # the hold was announced when it began
    return _notice(
        after,
        "held-inconclusive",
        after.step_index,
        Weights.for_canary(after.current_canary_weight),
        reason=last.evaluation.reason,
        who="rollout",
        at=last.at,
        evaluation=last,
        detail={
            "inconclusive_gates": list(last.evaluation.gates_with(Verdict.INCONCLUSIVE)),
            "inconclusive_count": after.inconclusive_count,
            "max_bake_s": max_bake(after.profile, after.step_index),
        },
    )


def took_over(state: RolloutState, *, previous: Holder, holder: Holder, now: float) -> RolloutState:
    """Record that `holder` takes the rollout over from `previous`, whose heartbeat lapsed (the event the
    orchestrator-lost notice is made of)."""
    return state.with_event(
        Takeover(
            now,
            previous=previous.describe(),
            heartbeat_age_s=round(previous.age(now), 1),
            lease_s=previous.lease_s,
            holder=holder.describe(),
        )
    )


# -- rendering ----------------------------------------------------------------------------------------
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


def payload(target: NotifyTarget, notice: Notice) -> dict[str, Any]:
    return slack_message(notice) if target.type == "slack" else notice.to_dict()


# -- delivery -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Delivery:
    target: str
    type: str
    event: str
    step: int
    ok: bool
    attempts: int  # HTTP requests made (0: none could be, e.g. no URL)
    detail: str
    elapsed_s: float

    def as_event(self, at: float) -> Notification:
        """The delivery as the state records it."""
        return Notification(
            at,
            event=self.event,
            target=self.target,
            type=self.type,
            step=self.step,
            ok=self.ok,
            attempts=self.attempts,
            detail=self.detail,
            elapsed_s=round(self.elapsed_s, 3),
        )


def _scrub(text: str, url: str) -> str:
    """Error texts must not carry the secret URL (or its path, the secret part of a Slack URL)."""
    path = urlsplit(url).path
    text = text.replace(url, "<url>")
    return text.replace(path, "/<secret>") if len(path) > 1 else text


def _post_once(url: str, body: bytes, timeout_s: float) -> tuple[bool, bool, str, float]:
    """(ok, worth retrying, detail, seconds the receiver asked to wait)."""
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "sglang-vlm-canary-rollout"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            resp.read(1024)
            return True, False, f"HTTP {resp.status}", 0.0
    except urllib.error.HTTPError as exc:
        text = exc.read(200).decode(errors="replace").strip()
        wait = exc.headers.get("Retry-After", "") if exc.headers else ""
        retry = exc.code >= 500 or exc.code in (408, 425, 429)
        return False, retry, f"HTTP {exc.code}: {text}".rstrip(": "), float(wait) if wait.isdigit() else 0.0
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            return False, True, f"no answer within {timeout_s:g}s", 0.0
        return False, True, f"unreachable: {exc.reason}", 0.0
    except TimeoutError:
        return False, True, f"no answer within {timeout_s:g}s", 0.0
    except Exception as exc:  # a broken connection, a malformed answer: worth another try
        return False, True, f"{type(exc).__name__}: {exc}", 0.0


def deliver(target: NotifyTarget, notice: Notice, *, deadline: float) -> Delivery:
    """POST one notice, retrying connection failures, timeouts, 429 and 5xx with exponential backoff
    until `attempts` or the batch's `deadline` (monotonic) runs out. Never raises."""
    began = time.monotonic()

    def result(ok: bool, attempts: int, detail: str) -> Delivery:
        return Delivery(
            target.name,
            target.type,
            notice.event,
            notice.step,
            ok,
            attempts,
            detail,
            time.monotonic() - began,
        )

    try:
        url = target.url()
    except UrlUnavailable as exc:
        return result(False, 0, str(exc))
    try:
        body = json.dumps(payload(target, notice), default=str).encode()
    except Exception as exc:  # a renderer bug must not stop the rollout either
        return result(False, 0, f"message not rendered: {type(exc).__name__}: {exc}")
    detail, made = "not sent", 0
    for attempt in range(1, target.attempts + 1):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        made = attempt
        ok, retry, detail, asked = _post_once(url, body, min(target.timeout_s, remaining))
        detail = _scrub(detail, url)
        if ok:
            return result(True, made, detail)
        if not retry or attempt == target.attempts:
            return result(False, made, detail)
        wait = max(target.backoff_s * 2 ** (attempt - 1), min(asked, 60.0))
        if time.monotonic() + wait >= deadline:
            break
        time.sleep(wait)
    spent = f"the target's {target.budget_s:g}s budget for this batch ran out"
    return result(False, made, f"{detail}; {spent}" if made else f"not sent: {spent}")


class Notifier:
    """The run's targets; with none (the default) it announces nothing, sparing callers None checks."""

    def __init__(self, targets: Sequence[NotifyTarget] = ()) -> None:
        self.targets = tuple(targets)

    @classmethod
    def recorded(cls, state: RolloutState) -> Notifier:
        """The targets recorded with the run (so a later command notifies the same places)."""
        return cls(parse_targets(list(state.notifications), "recorded in the rollout state"))

    def problems(self) -> list[str]:
        """Targets whose URL cannot be read now (said at the start; sending records the failure)."""
        found = []
        for t in self.targets:
            try:
                t.url()
            except UrlUnavailable as exc:
                found.append(f"target {t.name}: {exc}")
        return found

    def send(self, notices: Sequence[Notice]) -> list[Delivery]:
        """Every notice each target wants, targets side by side (a slow one delays no other), each
        target's notices in order within its budget. Never raises."""
        batches = [(t, [n for n in notices if t.wants(n.event)]) for t in self.targets]
        batches = [(t, ns) for t, ns in batches if ns]
        if not batches:
            return []
        with ThreadPoolExecutor(max_workers=len(batches), thread_name_prefix="notify") as pool:
            done = list(pool.map(lambda batch: _send_batch(*batch), batches))
        return [d for deliveries in done for d in deliveries]


def _send_batch(target: NotifyTarget, notices: list[Notice]) -> list[Delivery]:
    deadline = time.monotonic() + target.budget_s
    out = []
    for notice in notices:
        try:
            out.append(deliver(target, notice, deadline=deadline))
        except Exception as exc:  # deliver never raises; this keeps a bug there from reaching the rollout
            out.append(
                Delivery(target.name, target.type, notice.event, notice.step, False, 0, repr(exc), 0.0)
            )
    return out


def announce(
    store: StateStore,
    notifier: Notifier,
    before: RolloutState,
    after: RolloutState,
    *,
    now: float,
    say: Say,
) -> tuple[RolloutState, RolloutState]:
    """Send what happened from `before` to `after` (`after` already saved), then record each delivery as
    a `notify` event under the store's lock. Call it WITHOUT the lock held: sending may take the targets'
    budgets, and a rollback by hand must not wait for a webhook. What someone else wrote in the meantime
    (found when recording) is announced too. Returns (the state as recorded, the state announced up to);
    never raises: a failed notification decides nothing."""
    state, through = after, before
    try:
        for _ in range(ROUNDS):
            notices = notices_between(through, state)
            deliveries = notifier.send(notices) if notices else []
            through = state
            if not deliveries:
                return state, through
            for d in deliveries:
                if not d.ok:
                    say(f"notification {d.event} to {d.target} failed ({d.attempts} attempt(s)): {d.detail}")
            state = _record(store, deliveries, now=now, fallback=state, say=say)
    except Exception as exc:  # the store failed while recording: the rollout goes on, the next write tells
        say(f"notifications: results not recorded: {type(exc).__name__}: {exc}")
    return state, through


def _record(
    store: StateStore, deliveries: list[Delivery], *, now: float, fallback: RolloutState, say: Say
) -> RolloutState:
    for _ in range(RECORD_RETRIES):
        with store.locked():
            current = store.load()
            if current is None or current.run_id != fallback.run_id:
                return fallback
            for d in deliveries:
                current = current.with_event(d.as_event(now))
            try:
                store.save(current)
                return current
            except StateConflict:
                continue
    say(f"notifications: the state kept changing; {len(deliveries)} delivery result(s) not recorded")
    return fallback

"""Sending notices and recording what happened: each target's messages posted with retries, backoff,
a per-attempt timeout and a per-batch budget, targets side by side; every result recorded as a
`Notification` event (so it lands in decision.json with the others). Delivery never raises and never
decides anything; the store's lock is not held while sending.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from rollout.events import Notification
from rollout.notify.notices import Notice, NoticeKind, notices_between
from rollout.notify.slack import slack_message
from rollout.notify.targets import NotifyTarget, UrlUnavailable, parse_targets
from rollout.state import RolloutState, StateConflict, StateStore

RECORD_RETRIES = 5  # the ConfigMap store has no lock: a concurrent write refuses ours, read again
ROUNDS = 4  # announce, record, and announce what others wrote meanwhile, at most this often
Say = Callable[[str], None]


def payload(target: NotifyTarget, notice: Notice) -> dict[str, Any]:
    """What the target is sent: a Slack message, or the notice's JSON record."""
    return slack_message(notice) if target.type == "slack" else notice.to_dict()


@dataclass(frozen=True)
class Delivery:
    target: str
    type: str
    event: NoticeKind
    step: int
    ok: bool
    attempts: int  # HTTP requests made (0: none could be, e.g. no URL)
    detail: str
    elapsed_s: float

    def as_event(self, at: float) -> Notification:
        """The delivery as the state records it."""
        return Notification(
            at,
            event=self.event.value,
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

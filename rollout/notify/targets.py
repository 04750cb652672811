"""Where notifications go: the targets of a hooks file's `notifications:` list, and their URLs.

notifications:
  - {name: team-slack, type: slack, url_env: SLACK_WEBHOOK_URL, events: [promoted, reverted, rolled-back]}
  - {name: audit, type: webhook, url_file: /etc/rollout-notify/audit-url, timeout_s: 3, attempts: 5}

A webhook URL is a secret (whoever holds it can post): it comes from an environment variable or a
file (a mounted Kubernetes Secret), read when sending, never from the file itself or the state.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

from rollout.notify.notices import EVENTS, NoticeKind

TARGET_TYPES = ("slack", "webhook")
TARGET_KEYS = frozenset(
    {"name", "type", "url_env", "url_file", "events", "timeout_s", "attempts", "backoff_s", "budget_s"}
)
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
KNOWN = [k.value for k in NoticeKind]  # as error messages list them


class UrlUnavailable(Exception):
    """The target's URL cannot be read now (variable unset, file missing or empty, not an http(s) URL)."""


@dataclass(frozen=True)
class NotifyTarget:
    name: str
    type: str  # slack | webhook
    url_env: str | None = None  # the environment variable holding the URL
    url_file: str | None = None  # or the file holding it (a mounted Secret's key)
    events: tuple[NoticeKind, ...] = EVENTS
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
        object.__setattr__(self, "events", notice_kinds(self.events))
        if not self.timeout_s > 0 or not self.budget_s > 0 or self.backoff_s < 0:
            raise ValueError("timeout_s and budget_s must be > 0, backoff_s >= 0")
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int) or self.attempts < 1:
            raise ValueError(f"attempts {self.attempts!r} must be an integer >= 1")

    def wants(self, event: NoticeKind) -> bool:
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
            events=[e.value for e in self.events],
            timeout_s=self.timeout_s,
            attempts=self.attempts,
            backoff_s=self.backoff_s,
            budget_s=self.budget_s,
        )
        return data


def notice_kinds(names: Sequence[str]) -> tuple[NoticeKind, ...]:
    """A target's `events:` as notice kinds; a ValueError lists the known ones."""
    unknown = [e for e in names if e not in KNOWN]
    if unknown or not names:
        raise ValueError(f"events {list(names)!r}: unknown or none; known events are {KNOWN}")
    return tuple(NoticeKind(e) for e in names)


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
        events = entry.get("events", KNOWN)
        if not isinstance(events, list):
            raise ValueError(f"{where}: events must be a list of event names, one of {KNOWN}")
        try:
            targets.append(
                NotifyTarget(
                    name=str(entry.get("name") or f"{entry.get('type', 'target')}-{i + 1}"),
                    type=str(entry.get("type", "")),
                    url_env=entry.get("url_env"),
                    url_file=entry.get("url_file"),
                    # names as written: __post_init__ checks them (after type and URL) into NoticeKinds
                    events=cast(tuple[NoticeKind, ...], tuple(str(e) for e in events)),
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

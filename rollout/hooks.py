"""Hooks as data: a kind, then a URL (POSTed a JSON context) or a command (context in env and stdin).

hooks:
  - {kind: pre-step, url: "http://127.0.0.1:30001/rehearsal/faults", body: {leak_kib_per_request: 512}}
  - {kind: rollback, command: ["sh", "-c", "echo rolled back >> rollbacks.log"], timeout_s: 5}
notifications:  # optional: chat and webhook targets (rollout/notify/targets.py)
  - {name: team-slack, type: slack, url_env: SLACK_WEBHOOK_URL, events: [promoted, reverted]}
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rollout.notify.targets import NotifyTarget, parse_targets

HOOK_KINDS = ("pre-step", "post-step", "promotion", "rollback")


@dataclass(frozen=True)
class Hook:
    kind: str
    url: str | None = None
    command: tuple[str, ...] | None = None
    body: dict[str, Any] = field(default_factory=dict)  # merged over the context for URL hooks
    timeout_s: float = 10.0
    steps: tuple[int, ...] | None = None  # pre/post-step: only at these canary weights (all when None)

    def __post_init__(self) -> None:
        if self.kind not in HOOK_KINDS:
            raise ValueError(f"hook kind {self.kind!r} is not one of {HOOK_KINDS}")
        if (self.url is None) == (self.command is None):
            raise ValueError(f"hook {self.kind!r} needs exactly one of url or command")
        if not self.timeout_s > 0:
            raise ValueError(f"hook {self.kind!r}: timeout_s={self.timeout_s!r} must be > 0")

    def applies(self, kind: str, canary_weight: int | None) -> bool:
        if kind != self.kind:
            return False
        return self.steps is None or canary_weight is None or canary_weight in self.steps

    def describe(self) -> str:
        return self.url if self.url is not None else " ".join(self.command or ())

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind, "timeout_s": self.timeout_s}
        if self.url is not None:
            data["url"] = self.url
        if self.command is not None:
            data["command"] = list(self.command)
        if self.body:
            data["body"] = dict(self.body)
        if self.steps is not None:
            data["steps"] = list(self.steps)
        return data


@dataclass(frozen=True)
class HookResult:
    kind: str
    target: str
    ok: bool
    detail: str


SECTIONS = ("hooks", "notifications")


def _read(path: Path) -> Any:
    try:
        return yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"hooks file {path}: {exc}") from exc


def load_hooks(path: Path | None) -> tuple[Hook, ...]:
    if path is None:
        return ()
    return parse_hooks(_read(path), str(path))


def load_notifications(path: Path | None) -> tuple[NotifyTarget, ...]:
    """The hooks file's `notifications:` targets (none when the file has no such section)."""
    if path is None:
        return ()
    return parse_notifications(_read(path), str(path))


def parse_notifications(data: Any, path: str = "hooks") -> tuple[NotifyTarget, ...]:
    if not isinstance(data, dict) or data.get("notifications") is None:
        return ()
    return parse_targets(data["notifications"], path)


def parse_hooks(data: Any, path: str = "hooks") -> tuple[Hook, ...]:
    """Hooks from `{"hooks": [...]}` (a hooks file's content, or what the state recorded); a file holding
    only `notifications:` has no hooks."""
    if isinstance(data, dict):
        unknown = sorted(set(data) - set(SECTIONS))
        if unknown:
            raise ValueError(
                f"hooks file {path}: unknown top-level key(s) {unknown}; known: {list(SECTIONS)}"
            )
    entries = data.get("hooks") if isinstance(data, dict) else None
    if entries is None and isinstance(data, dict) and "notifications" in data:
        entries = []
    if not isinstance(entries, list):
        raise ValueError(f"hooks file {path}: expected a top-level 'hooks:' list")
    hooks = []
    allowed = {"kind", "url", "command", "body", "timeout_s", "steps"}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ValueError(f"hooks file {path}: hooks[{i}] is not a mapping")
        unknown = sorted(set(entry) - allowed)
        if unknown:
            raise ValueError(f"hooks file {path}: hooks[{i}] has unknown key(s) {unknown}")
        try:
            hooks.append(
                Hook(
                    kind=entry.get("kind", ""),
                    url=entry.get("url"),
                    command=tuple(entry["command"]) if "command" in entry else None,
                    body=dict(entry.get("body") or {}),
                    timeout_s=float(entry.get("timeout_s", 10.0)),
                    steps=tuple(entry["steps"]) if "steps" in entry else None,
                )
            )
        except (ValueError, TypeError) as exc:
            raise ValueError(f"hooks file {path}: hooks[{i}]: {exc}") from exc
    return tuple(hooks)


def call_hook(hook: Hook, context: dict[str, Any]) -> HookResult:
    """The one function that runs any hook; never raises, the result says what happened."""
    payload = {"hook": hook.kind, **context}
    if hook.url is not None:
        request = urllib.request.Request(
            hook.url,
            data=json.dumps({**payload, **hook.body}).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=hook.timeout_s) as resp:
                return HookResult(hook.kind, hook.url, True, f"HTTP {resp.status}")
        except urllib.error.HTTPError as exc:
            return HookResult(hook.kind, hook.url, False, f"HTTP {exc.code}: {exc.read()[:200]!r}")
        except OSError as exc:
            return HookResult(hook.kind, hook.url, False, f"unreachable: {exc}")
    env = {f"ROLLOUT_{k.upper()}": str(v) for k, v in payload.items() if not isinstance(v, dict | list)}
    try:
        done = subprocess.run(
            list(hook.command or ()),
            input=json.dumps(payload),
            capture_output=True,
            text=True,
            timeout=hook.timeout_s,
            env={**os.environ, **env},
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return HookResult(hook.kind, hook.describe(), False, f"did not run to completion: {exc}")
    tail = (done.stdout + done.stderr).strip()[-200:]
    return HookResult(hook.kind, hook.describe(), done.returncode == 0, f"exit {done.returncode}: {tail}")


def run_hooks(hooks: tuple[Hook, ...], kind: str, context: dict[str, Any]) -> list[HookResult]:
    weight = context.get("canary_weight")
    return [
        call_hook(h, context) for h in hooks if h.applies(kind, weight if isinstance(weight, int) else None)
    ]

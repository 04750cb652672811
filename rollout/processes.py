"""Detached local processes that outlive the orchestrator, named by pid plus start time.

The local stack's processes run in their own sessions, so a SIGKILL of the orchestrator leaves the router
and the arms serving; a later `rollout rollback` or resumed run finds them again through the state file.
The start time guards against a recycled pid being mistaken for ours.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcessRef:
    pid: int
    start_ticks: int  # field 22 of /proc/<pid>/stat: unique together with the pid

    def as_dict(self) -> dict[str, int]:
        return {"pid": self.pid, "start_ticks": self.start_ticks}

    @classmethod
    def from_dict(cls, data: dict) -> ProcessRef:
        return cls(pid=int(data["pid"]), start_ticks=int(data["start_ticks"]))


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; everything after its closing paren is space-separated.
    return text[text.rindex(")") + 2 :].split()


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass  # not our child: its own parent (or init) reaps it


def is_alive(ref: ProcessRef) -> bool:
    _reap(ref.pid)
    fields = _stat_fields(ref.pid)
    if fields is None:
        return False
    state, start_ticks = fields[0], int(fields[19])
    return state not in ("Z", "X") and start_ticks == ref.start_ticks


def spawn_detached(cmd: list[str], *, log_path: Path, env: dict[str, str] | None = None) -> ProcessRef:
    """Start `cmd` in a new session (its own process group), output appended to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    fields = _stat_fields(proc.pid)
    if fields is None:
        raise RuntimeError(f"{cmd[0]} exited at once; see {log_path}")
    return ProcessRef(pid=proc.pid, start_ticks=int(fields[19]))


def terminate(ref: ProcessRef, *, timeout_s: float = 15.0) -> None:
    """SIGTERM the process group (a server and its worker ranks), SIGKILL what is left after `timeout_s`."""
    if not is_alive(ref):
        return
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(ref.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not is_alive(ref):
                return
            time.sleep(0.1)
    raise RuntimeError(f"process {ref.pid} survived SIGKILL")

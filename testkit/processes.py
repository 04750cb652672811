"""Processes the tests start: a server run until ready and always stopped after, the stub endpoint as one,
and the one way to stop a process (SIGTERM, a grace period, then SIGKILL to what is left)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from infra.net import free_port, wait_http_ok

ROOT = Path(__file__).resolve().parents[1]


def stop(proc: subprocess.Popen, *, grace_s: float = 10.0, group: bool = False) -> int | None:
    """Stop `proc`: SIGTERM and up to `grace_s` for it to exit (0: no SIGTERM, SIGKILL at once), then
    SIGKILL. With `group` (a process started in its own session) the SIGKILL goes to its whole process
    group even when it exited itself, so no child it started (a server's ranks) outlives it. Returns its
    exit status (None if it outlived even SIGKILL's wait)."""
    if proc.poll() is None and grace_s > 0:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace_s)
    if group:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    elif proc.poll() is None:
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    return proc.returncode


@contextlib.contextmanager
def serving(
    cmd: list[str],
    ready_url: str,
    log_path: Path | None = None,
    *,
    timeout_s: float = 60,
    interval_s: float = 0.1,
    grace_s: float = 10.0,
    env: dict[str, str] | None = None,
) -> Iterator[subprocess.Popen]:
    """A server process from the repository root in its own session, ready once `ready_url` answers 2xx
    (its output in `log_path`, told when it never gets ready); yields the process. Always stopped after,
    its whole process group with it (`stop`)."""
    with open(log_path or os.devnull, "wb") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=None if env is None else {**os.environ, **env},
        )
    try:
        try:
            wait_http_ok(ready_url, timeout_s, interval_s=interval_s, alive=lambda: proc.poll() is None)
        except Exception as exc:
            output = log_path.read_text(errors="replace")[-6000:] if log_path else ""
            raise RuntimeError(f"{' '.join(cmd)} did not become ready: {exc}\n{output}") from exc
        yield proc
    finally:
        stop(proc, grace_s=grace_s, group=True)


@contextlib.contextmanager
def stub_server(*args: str) -> Iterator[str]:
    """`python -m testkit.stub_server` (its options: `args`) on a free port; yields its base URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with serving([sys.executable, "-m", "testkit.stub_server", "--port", str(port), *args], url + "/health"):
        yield url

"""Helpers for loadtest's integration tests: a real stub endpoint and real Locust processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from infra.net import free_port, wait_http_ok

ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE = str(ROOT / "loadtest" / "vlm.py")
LOCUST = [sys.executable, "-m", "locust", "-f", LOCUSTFILE]


@contextlib.contextmanager
def stub_server(*args: str):
    """`python -m testkit.stub_server` on a free port; yields its base URL; always stopped."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "testkit.stub_server", "--port", str(port), *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_http_ok(f"http://127.0.0.1:{port}/health", timeout_s=30, alive=lambda: proc.poll() is None)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_locust(args: list[str], log_path: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "wb") as log:
        return subprocess.Popen([*LOCUST, *args], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)


def run_locust(args: list[str], tmp_path: Path, timeout_s: float = 60) -> tuple[int, str]:
    """Run Locust to completion; returns (exit code, combined output)."""
    log_path = tmp_path / f"locust-{len(list(tmp_path.glob('locust-*.log')))}.log"
    proc = start_locust(args, log_path)
    try:
        code = proc.wait(timeout=timeout_s)
    finally:
        stop(proc)
    return code, log_path.read_text(errors="replace")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

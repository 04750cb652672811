"""Helpers for loadtest's integration tests: real servers (the stub endpoint; embedded backends behind the
local router) and real Locust processes."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

from infra.net import free_port
from testkit.processes import serving, stop

ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE = str(ROOT / "loadtest" / "vlm.py")
LOCUST = [sys.executable, "-m", "locust", "-f", LOCUSTFILE]
BACKEND_MODEL = "test-vlm"
LOCUST_GRACE_S = 30.0  # on SIGTERM Locust drains its in-flight requests and writes its summary


@contextlib.contextmanager
def two_arm_stack(log_dir: Path, canary_args: tuple[str, ...] = ()):
    """Two embedded backends (`python -m backend`, TP=1) behind the local weighted router at 50/50, as
    the rollout runs them; yields the router's URL. The router names each response's arm in
    `x-canary-arm`; `canary_args` are extra backend flags for the canary (e.g. a rehearsal fault)."""
    ports = {name: free_port() for name in ("baseline", "canary", "router", "admin")}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    with contextlib.ExitStack() as stack:
        for arm, extra in (("baseline", ()), ("canary", canary_args)):
            command = [sys.executable, "-m", "backend", "--model-path", BACKEND_MODEL, "--tp-size", "1",
                       "--host", "127.0.0.1", "--port", str(ports[arm]), "--step-cost-ms", "0.5", *extra]  # fmt: skip
            stack.enter_context(serving(command, urls[arm] + "/ready", log_dir / f"{arm}.log"))
        router = [sys.executable, "-m", "rollout.routers.local_proxy_server", "--port", str(ports["router"]),
                  "--admin-port", str(ports["admin"]), "--baseline", urls["baseline"], "--canary", urls["canary"],
                  "--weights", "50,50"]  # fmt: skip
        stack.enter_context(serving(router, urls["admin"] + "/healthz", log_dir / "router.log"))
        yield urls["router"]


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
        stop(proc, grace_s=LOCUST_GRACE_S)
    return code, log_path.read_text(errors="replace")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

import subprocess
import sys
from pathlib import Path

import pytest

from infra.net import free_port, wait_http_ok
from rollout.processes import terminate
from rollout.routers.base import Weights
from rollout.routers.local import LocalProxySpec, start_local_proxy

HERE = Path(__file__).parent
# Test helpers (stand-ins at the rollout's own interfaces) import as `rollout_fakes` under importlib mode.
sys.path.insert(0, str(HERE))


@pytest.fixture
def standin_arms():
    """Two stand-in SSE upstreams, one per arm; stopped even when the test fails."""
    procs, urls = [], {}
    try:
        for arm in ("baseline", "canary"):
            port = free_port()
            procs.append(
                subprocess.Popen([sys.executable, str(HERE / "standin_upstream.py"), str(port), arm])
            )
            urls[arm] = f"http://127.0.0.1:{port}"
            wait_http_ok(urls[arm] + "/ready", timeout_s=20, alive=lambda p=procs[-1]: p.poll() is None)
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)


@pytest.fixture
def local_proxy(standin_arms, tmp_path):
    spec = LocalProxySpec(
        host="127.0.0.1",
        port=free_port(),
        admin_port=free_port(),
        baseline_url=standin_arms["baseline"],
        canary_url=standin_arms["canary"],
    )
    ref = start_local_proxy(spec, Weights(100, 0), log_path=tmp_path / "proxy.log")
    try:
        yield spec, ref
    finally:
        terminate(ref)

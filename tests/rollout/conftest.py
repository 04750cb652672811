import contextlib
import sys
from pathlib import Path

import pytest

from infra.net import free_port
from rollout.processes import terminate
from rollout.routers.base import Weights
from rollout.routers.local import LocalProxySpec, start_local_proxy
from testkit.processes import stub_server

HERE = Path(__file__).parent
# Test helpers (stand-ins at the rollout's own interfaces) import as `rollout_fakes` under importlib mode.
sys.path.insert(0, str(HERE))

from rollout_fakes import Receiver  # noqa: E402


@pytest.fixture
def receiver():
    """A loopback HTTP receiver for hooks and notifications (rollout_fakes.Receiver), closed after."""
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def standin_arms():
    """Two stand-in SSE upstreams (the test kit's stub endpoint), one per arm; stopped even when the test
    fails."""
    with contextlib.ExitStack() as stack:
        yield {arm: stack.enter_context(stub_server("--arm", arm)) for arm in ("baseline", "canary")}


@pytest.fixture
def start_proxy(standin_arms, tmp_path):
    """Starts the local proxy at `weights` in front of the stand-in arms (`canary_url` in place of the
    canary's): (spec, process); every one started is stopped after."""
    started = []

    def start(weights, *, canary_url=None):
        spec = LocalProxySpec(
            host="127.0.0.1",
            port=free_port(),
            admin_port=free_port(),
            baseline_url=standin_arms["baseline"],
            canary_url=canary_url or standin_arms["canary"],
        )
        ref = start_local_proxy(spec, weights, log_path=tmp_path / "proxy.log")
        started.append(ref)
        return spec, ref

    try:
        yield start
    finally:
        for ref in started:
            terminate(ref)


@pytest.fixture
def local_proxy(start_proxy):
    """The local proxy at 100/0 in front of the stand-in arms: (spec, process)."""
    return start_proxy(Weights(100, 0))

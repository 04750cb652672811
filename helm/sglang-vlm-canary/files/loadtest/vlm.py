"""Open-loop VLM chat load for Locust.

    locust -f loadtest/vlm.py --host http://127.0.0.1:8000 --rate 20 [--headless --run-time 60s]

Arrivals follow an absolute, seeded schedule (constant, Poisson or gamma; optional stages) and are
sent on time whatever earlier responses do; each streamed response is measured (TTFT, inter-token
latency, TPOT, end-to-end, per arm). Options: `locust -f loadtest/vlm.py --help` (group "open-loop
VLM load"), each also a LOCUST_* environment variable. Outputs and exit codes: docs/loadtest.md.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from locust import User, constant, events, task

# Locust puts this file's folder on sys.path, not the repository root that holds the package.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from loadtest import options  # noqa: E402
from loadtest.runtime import LoadRuntime  # noqa: E402


@events.init_command_line_parser.add_listener
def _register_options(parser: Any, **_: Any) -> None:
    options.register(parser)


@events.init.add_listener
def _attach_runtime(environment: Any, **_: Any) -> None:
    environment.vlm_load = LoadRuntime(environment)


class OpenLoopUser(User):
    """Locust needs a user class; the load itself comes from one open-loop dispatcher per process.

    The dispatcher starts and stops with the test (see loadtest/runtime.py), so the number of users
    does not change the request rate: `--rate`/`--stages` do. One idle user is all a run needs.
    """

    wait_time = constant(60)

    @task
    def idle(self) -> None:
        """Nothing to do: requests are sent by the dispatcher at their scheduled times."""

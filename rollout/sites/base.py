"""The one interface every place a rollout runs implements (the local stack, a cluster's release).

A rollout (`rollout.run.run`) and a CI gate (`rollout.ci_gate.gate_once`) are each one function over a
site: the site gives the router, the state store, the gate context and the report's panels, starts or
reattaches to what serves the arms, and takes it down again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from gates.config import GateConfig
from rollout.gating import PrometheusGates
from rollout.report import Panel
from rollout.routers.base import TrafficRouter
from rollout.state import StateStore

Say = Callable[[str], None]


class Site(Protocol):
    kind: str  # "local" | "kubernetes", recorded in the state's `stack`
    drives_load: bool  # the site runs the load test itself (its rate is the offered rate)
    settle_s: float  # after a measurement window: time for the last scrape of it to land

    @property
    def router(self) -> TrafficRouter:
        """Moves traffic between the arms (available after `start` or `attach`)."""

    @property
    def prometheus_url(self) -> str: ...

    def state_store(self) -> StateStore: ...

    def exclusive(self) -> contextlib.AbstractContextManager[None]:
        """Held for a whole run: a second orchestrator on the same state refuses instead of racing."""

    def start(
        self, run_dir: Path, *, rate: float, seed: int, loadtest_args: tuple[str, ...], say: Say
    ) -> None:
        """Bring up what serves the arms (and the load, where the site drives it) at 100% baseline."""

    def attach(self, stack: dict[str, Any], router: dict[str, Any]) -> None:
        """Reattach to what `describe()` and the router recorded (a resumed run, a rollback)."""

    def describe(self) -> dict[str, Any]:
        """What the rollout state keeps of the site (processes and URLs, or cluster coordinates)."""

    def arms(self) -> dict[str, str]:
        """A line per arm saying what serves it, for reports."""

    def gate_config(self, gate_file: Path | None, overrides: dict[str, dict[str, Any]] | None) -> GateConfig:
        """The gate file in this site's query profile, with a rollout profile's sizing where it applies."""

    def gates(self, config: GateConfig, *, offered_rps: float | None) -> PrometheusGates:
        """The evaluator with this site's Prometheus, variables and load-test samples."""

    def panels(self, config: GateConfig) -> tuple[Panel, ...]:
        """The report's timeline panels, limited to what the gates judge."""

    def hook_context(self) -> dict[str, Any]:
        """Extra fields hooks receive (e.g. the arms' URLs)."""

    def wait_for_data(self) -> None:
        """Block until Prometheus holds every arm's series (nothing is judged before)."""

    def dead_parts(self) -> list[str]:
        """Parts of the site that have stopped running (shown while waiting)."""

    def serving(self) -> bool:
        """Whether the baseline still serves, so there is traffic to move."""

    def orchestrator_gone(self) -> bool:
        """Whether no orchestrator holds this run (then a rollback finishes the run's job itself)."""

    def stop_load(self, say: Say) -> dict[str, Any] | None:
        """Stop the load the site drives so its summary is written; the summary, when there is one."""

    def retire_canary(self, say: Say) -> None:
        """After a revert or rollback: take the canary out of service."""

    def teardown(self, say: Say, *, keep_serving: bool = False) -> None:
        """Stop what the site started; `keep_serving` leaves the router and the baseline up."""


@contextlib.contextmanager
def no_lock() -> Any:
    yield

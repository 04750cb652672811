"""Where a rollout runs: a site is a few parts with one job each, and a registry entry that builds it.

A rollout (`rollout.run.run`) and a CI gate (`rollout.ci_gate.gate_once`) are each one function over a
`Site`; they ask the part they need:
- `serving` (`Serving`): what serves the arms and the router between them; started (or found), reattached,
  the canary retired, taken down;
- `observability` (`Observability`): Prometheus, and the gate file in this site's query profile and its
  variables (the report draws each gate's panel from them);
- `state` (`SiteState`): where the rollout state lives, and the lock a run holds on it (None: a site that
  keeps no rollout state, e.g. a CI gate's);
- `load` (`LoadDriver`): the load the site drives itself at the offered rate (None: whatever traffic
  reaches it).
A site kind is the module `rollout/sites/<kind>.py` with `SITE = SiteKind("<kind>", ...)` (`rollout.sites`).
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from gates.config import GateConfig
from rollout.gating import PrometheusGates
from rollout.routers.base import TrafficRouter
from rollout.state import StateStore

Say = Callable[[str], None]


class Serving(Protocol):
    """What serves the arms and the router between them."""

    @property
    def router(self) -> TrafficRouter:
        """Moves traffic between the arms (available after `start` or `attach`)."""

    def start(self, run_dir: Path, *, say: Say) -> None:
        """Bring up both arms and the router at 100% baseline (a release already serving: nothing to do)."""

    def attach(self, stack: dict[str, Any], router: dict[str, Any]) -> None:
        """Reattach to what `describe()` and the router recorded (a resumed run, a rollback)."""

    def describe(self) -> dict[str, Any]:
        """What the rollout state keeps of the site (processes and URLs, or cluster coordinates)."""

    def arms(self) -> dict[str, str]:
        """A line per arm saying what serves it, for reports."""

    def hook_context(self) -> dict[str, Any]:
        """Extra fields hooks receive (e.g. the arms' URLs)."""

    def dead_parts(self) -> list[str]:
        """Parts this site started that have stopped running (shown while waiting; `baseline`: no traffic
        to move)."""

    def retire_canary(self, say: Say) -> None:
        """After a revert or rollback: take the canary out of service."""

    def teardown(self, say: Say, *, keep_serving: bool = False) -> None:
        """Stop what the site started (the router included); `keep_serving` leaves the router and the
        baseline up."""


class Observability(Protocol):
    """The site's Prometheus and how the gates and the report read it."""

    settle_s: float  # after a measurement window: time for the last scrape of it to land

    @property
    def prometheus_url(self) -> str: ...

    def gate_config(self, gate_file: Path | None, overrides: dict[str, dict[str, Any]] | None) -> GateConfig:
        """The gate file in this site's query profile, with a rollout profile's sizing where it applies."""

    def variables(self, config: GateConfig) -> dict[str, Any]:
        """The gate queries' variables on this site (e.g. a release's namespace and pods)."""

    def wait_for_data(self) -> None:
        """Block until Prometheus holds every arm's series (nothing is judged before)."""


class LoadDriver(Protocol):
    """Load the site offers itself, through its router: the rate it is started at is the offered rate."""

    @property
    def samples(self) -> Path:
        """The per-request records the gates may judge (client-side latency per arm)."""

    def start(self, run_dir: Path, *, rate: float, seed: int, extra_args: tuple[str, ...], say: Say) -> None:
        """Start offering `rate` requests per second through the router `Serving.start` brought up."""

    def stop(self, say: Say) -> dict[str, Any] | None:
        """Stop the load so its summary is written; the summary, when there is one."""


@dataclass(frozen=True)
class SiteState:
    """Where a site keeps its rollout state, and the lock a run holds on it for its whole length."""

    store: StateStore
    # A second orchestrator on the same state refuses instead of racing. None: the store's versioned
    # writes refuse a second writer's stale save instead (a ConfigMap's resourceVersion).
    lock: Callable[[], contextlib.AbstractContextManager[None]] | None = None

    def exclusive(self) -> contextlib.AbstractContextManager[None]:
        """Held for a whole run."""
        return contextlib.nullcontext() if self.lock is None else self.lock()

    def orchestrator_gone(self) -> bool:
        """Whether no orchestrator holds this run (then a command by hand finishes the run's job itself).
        Without a lock there is nothing local to finish: the command's own work is the whole job."""
        if self.lock is None:
            return True
        try:
            with self.lock():
                return True
        except RuntimeError:
            return False


@dataclass(frozen=True)
class Site:
    """A place a rollout runs, as its parts."""

    kind: str  # recorded in the state's `stack` and printed ("local", "kubernetes")
    serving: Serving
    observability: Observability
    state: SiteState | None = None  # None: this site keeps no rollout state (a CI gate)
    load: LoadDriver | None = None  # None: the load is whatever reaches the router

    @property
    def router(self) -> TrafficRouter:
        return self.serving.router

    def require_state(self) -> SiteState:
        if self.state is None:
            raise ValueError(f"this {self.kind} site keeps no rollout state (no state directory)")
        return self.state

    def start(
        self, run_dir: Path, *, rate: float | None, seed: int, loadtest_args: tuple[str, ...], say: Say
    ) -> None:
        """Bring up what serves the arms, then the load where the site drives it; a load that does not
        start takes the rest down again."""
        if self.load is not None and rate is None:
            raise ValueError(f"the {self.kind} site drives its load and needs a rate")
        self.serving.start(run_dir, say=say)
        if self.load is None or rate is None:
            return
        try:
            self.load.start(run_dir, rate=rate, seed=seed, extra_args=loadtest_args, say=say)
        except BaseException:
            self.serving.teardown(say)
            raise

    def gates(self, config: GateConfig, *, offered_rps: float | None) -> PrometheusGates:
        """The evaluator with this site's Prometheus, variables and (where it drives the load) samples."""
        return PrometheusGates(
            config=config,
            prometheus_url=self.observability.prometheus_url,
            offered_rps=offered_rps,
            variables=self.observability.variables(config),
            loadtest_samples=None if self.load is None else self.load.samples,
        )


class SiteFromArgs(Protocol):
    def __call__(self, args: argparse.Namespace, *, needs_prometheus: bool, canary_flag: str) -> Site:
        """The site the command's flags (and environment) describe; a ValueError names a bad or missing
        one. `canary_flag` is how the command spells the canary's options (`canary`, `candidate`)."""
        ...


@dataclass(frozen=True)
class SiteKind:
    """A site kind as the registry (`rollout.sites.site_kind_for`) finds it: the module
    `rollout/sites/<name>.py` defines `SITE = SiteKind("<name>", ...)`."""

    name: str
    from_args: SiteFromArgs
    gate_profile: str  # the gate file's query profile on this site (a plan is made without building one)
    # Whether the command's flags ask for this site; None: the site when no other is asked for (local).
    applies: Callable[[argparse.Namespace], bool] | None = None

"""The local site: the embedded stack on this machine (`rollout.local_stack`), state in a file.

Both arms, the weighted proxy, a real Prometheus and Locust run as detached processes recorded in the
state, so a resumed run reattaches to them and a rollback after the orchestrator's SIGKILL finds them.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from gates.config import GateConfig
from rollout.gating import PrometheusGates, load_gate_config
from rollout.local_stack import ArmSpec, LoadSpec, LocalStack, start_local_stack, wait_for_first_samples
from rollout.report import LOCAL_PANELS, Panel
from rollout.routers import router_from_description
from rollout.routers.base import TrafficRouter
from rollout.sites.base import Say
from rollout.state import FileStateStore, StateStore, single_runner


class LocalSite:
    kind = "local"
    drives_load = True
    settle_s = 2.0  # Prometheus scrapes the stack every second

    def __init__(
        self,
        *,
        state_dir: Path | None,
        arms: dict[str, ArmSpec] | None = None,
        keep_stack: bool = False,
    ) -> None:
        if arms is not None and set(arms) != {"baseline", "canary"}:
            raise ValueError(f"arms must be baseline and canary, got {sorted(arms)}")
        self.state_dir = state_dir  # None: no rollout state (a CI gate)
        self.arm_specs = arms
        self.keep_stack = keep_stack  # leave the stack running after the decision (for inspection)
        self.stack: LocalStack | None = None
        self._router: TrafficRouter | None = None

    # -- what serves the arms ----------------------------------------------------------------------
    def _stack(self) -> LocalStack:
        if self.stack is None:
            raise RuntimeError("the local stack is neither started nor attached")
        return self.stack

    @property
    def router(self) -> TrafficRouter:
        if self._router is None:
            raise RuntimeError("the local stack is neither started nor attached")
        return self._router

    @property
    def prometheus_url(self) -> str:
        return self._stack().prometheus_url

    def start(
        self, run_dir: Path, *, rate: float, seed: int, loadtest_args: tuple[str, ...], say: Say
    ) -> None:
        if self.arm_specs is None:
            raise ValueError("starting the local stack needs both arms' specs")
        self.stack, self._router = start_local_stack(
            run_dir=run_dir,
            arms=self.arm_specs,
            load=LoadSpec(rate=rate, seed=seed, extra_args=loadtest_args),
            say=say,
        )

    def attach(self, stack: dict[str, Any], router: dict[str, Any]) -> None:
        self.stack = LocalStack.from_dict(stack)
        self._router = router_from_description(router)

    def describe(self) -> dict[str, Any]:
        return self._stack().as_dict()

    def arms(self) -> dict[str, str]:
        if self.arm_specs is None:
            return {arm: str(entry.get("url")) for arm, entry in self._stack().arms.items()}
        return {arm: _arm_text(spec) for arm, spec in self.arm_specs.items()}

    # -- state -----------------------------------------------------------------------------------
    def _state_dir(self) -> Path:
        if self.state_dir is None:
            raise ValueError("this local site keeps no rollout state (no state directory)")
        return Path(self.state_dir)

    def state_store(self) -> StateStore:
        return FileStateStore(self._state_dir())

    def exclusive(self) -> contextlib.AbstractContextManager[None]:
        return single_runner(self._state_dir())

    def orchestrator_gone(self) -> bool:
        try:
            with single_runner(self._state_dir()):
                return True
        except RuntimeError:
            return False

    # -- gates and report ------------------------------------------------------------------------
    def gate_config(self, gate_file: Path | None, overrides: dict[str, dict[str, Any]] | None) -> GateConfig:
        # Two CPU-only backends on one machine: the rollout profile sizes some gates to them.
        return load_gate_config(gate_file, gate_profile="local", overrides=overrides or None)

    def gates(self, config: GateConfig, *, offered_rps: float | None) -> PrometheusGates:
        stack = self._stack()
        return PrometheusGates(
            config=config,
            prometheus_url=stack.prometheus_url,
            offered_rps=offered_rps,
            loadtest_samples=stack.requests_jsonl,
        )

    def panels(self, config: GateConfig) -> tuple[Panel, ...]:
        return LOCAL_PANELS

    def hook_context(self) -> dict[str, Any]:
        stack = self._stack()
        return {
            "baseline_url": stack.arms["baseline"]["url"],
            "canary_url": stack.arms["canary"]["url"],
            "router_url": stack.router_url,
            "prometheus_url": stack.prometheus_url,
        }

    # -- lifecycle -------------------------------------------------------------------------------
    def wait_for_data(self) -> None:
        wait_for_first_samples(self._stack())

    def dead_parts(self) -> list[str]:
        return self._stack().dead_parts()

    def serving(self) -> bool:
        return self._stack().serving()

    def stop_load(self, say: Say) -> dict[str, Any] | None:
        stack = self._stack()
        stack.stop(("loadtest",), say=say)  # Locust writes its summary on SIGTERM
        path = Path(stack.loadtest.get("summary_json", ""))
        return json.loads(path.read_text()) if path.is_file() else None

    def retire_canary(self, say: Say) -> None:
        if not self.keep_stack:
            self._stack().stop(("canary",), say=say)

    def teardown(self, say: Say, *, keep_serving: bool = False) -> None:
        if self.keep_stack:
            return
        stack = self._stack()
        if keep_serving:
            stack.stop(("prometheus",), say=say)
            say("router and baseline keep serving; `python -m rollout down` stops them")
            return
        stack.stop(("prometheus", "canary", "baseline"), say=say)
        say("stopping router")
        self.router.finalize()


def _arm_text(spec: ArmSpec) -> str:
    if spec.url is not None:
        return f"server at {spec.url}"
    if spec.command is not None:
        return f"command `{spec.command}`"
    extra = f" {' '.join(spec.extra_args)}" if spec.extra_args else ""
    return f"embedded backend, mm-input mode `{spec.mm_input_mode}`, TP={spec.tp_size}{extra}"

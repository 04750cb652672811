"""Site kind `local`: the embedded stack on this machine (`rollout.local_stack`), state in a file.

Both arms, the weighted proxy, a real Prometheus and Locust run as detached processes recorded in the
state, so a resumed run reattaches to them and a rollback after the orchestrator's SIGKILL finds them.
The parts share the running stack: `LocalServing` starts it (and stops it, the proxy included), the
observability reads its Prometheus, `LocustLoad` drives the load through its proxy.
"""

from __future__ import annotations

import argparse
import functools
import json
import shlex
from pathlib import Path
from typing import Any

from gates.config import GateConfig
from rollout.gating import load_gate_config
from rollout.local_stack import (
    ArmSpec,
    LoadSpec,
    LocalStack,
    canary_default_mode,
    start_loadtest,
    start_local_stack,
    wait_for_first_samples,
)
from rollout.processes import terminate
from rollout.routers import router_from_description
from rollout.routers.local import LocalProxyRouter
from rollout.sites.base import Say, Site, SiteKind, SiteState
from rollout.state import FileStateStore, single_runner

ARMS = ("baseline", "canary")
GATE_PROFILE = "local"


class LocalServing:
    """Both arms, the weighted proxy in front of them and Prometheus, as processes on this machine."""

    def __init__(self, *, arms: dict[str, ArmSpec] | None = None, keep_stack: bool = False) -> None:
        if arms is not None and set(arms) != set(ARMS):
            raise ValueError(f"arms must be baseline and canary, got {sorted(arms)}")
        self.arm_specs = arms
        self.keep_stack = keep_stack  # leave the stack running after the decision (for inspection)
        self.stack: LocalStack | None = None
        self._router: LocalProxyRouter | None = None

    def running(self) -> LocalStack:
        if self.stack is None:
            raise RuntimeError("the local stack is neither started nor attached")
        return self.stack

    @property
    def router(self) -> LocalProxyRouter:
        if self._router is None:
            raise RuntimeError("the local stack is neither started nor attached")
        return self._router

    def start(self, run_dir: Path, *, say: Say) -> None:
        if self.arm_specs is None:
            raise ValueError("starting the local stack needs both arms' specs")
        self.stack, self._router = start_local_stack(run_dir=run_dir, arms=self.arm_specs, say=say)

    def attach(self, stack: dict[str, Any], router: dict[str, Any]) -> None:
        proxy = router_from_description(router)
        if not isinstance(proxy, LocalProxyRouter):
            raise ValueError(f"a local stack's router is the local proxy, not {router.get('kind')!r}")
        self.stack, self._router = LocalStack.from_dict(stack), proxy

    def describe(self) -> dict[str, Any]:
        return self.running().as_dict()

    def arms(self) -> dict[str, str]:
        if self.arm_specs is None:
            return {arm: str(entry.get("url")) for arm, entry in self.running().arms.items()}
        return {arm: _arm_text(spec) for arm, spec in self.arm_specs.items()}

    def hook_context(self) -> dict[str, Any]:
        stack = self.running()
        return {
            "baseline_url": stack.arms["baseline"]["url"],
            "canary_url": stack.arms["canary"]["url"],
            "router_url": stack.router_url,
            "prometheus_url": stack.prometheus_url,
        }

    def dead_parts(self) -> list[str]:
        return self.running().dead_parts()

    def retire_canary(self, say: Say) -> None:
        if not self.keep_stack:
            self.running().stop(("canary",), say=say)

    def teardown(self, say: Say, *, keep_serving: bool = False) -> None:
        if self.keep_stack:
            return
        stack = self.running()
        if keep_serving:
            stack.stop(("prometheus",), say=say)
            say("router and baseline keep serving; `python -m rollout down` stops them")
            return
        stack.stop(("prometheus", "canary", "baseline"), say=say)
        say("stopping router")
        # The proxy this stack started, or the one its router started again after it died.
        process = self.router.process
        if process is not None:
            terminate(process)


class LocalObservability:
    """The stack's own Prometheus, scraping every arm and the proxy once a second."""

    settle_s = 2.0  # one scrape interval and a margin

    def __init__(self, serving: LocalServing) -> None:
        self.serving = serving

    @property
    def prometheus_url(self) -> str:
        return self.serving.running().prometheus_url

    def gate_config(self, gate_file: Path | None, overrides: dict[str, dict[str, Any]] | None) -> GateConfig:
        # Two CPU-only backends on one machine: the rollout profile sizes some gates to them.
        return load_gate_config(gate_file, gate_profile=GATE_PROFILE, overrides=overrides or None)

    def variables(self, config: GateConfig) -> dict[str, Any]:
        return {}  # the `local` profile's queries select the arms by the scrape config's `arm` label

    def wait_for_data(self) -> None:
        wait_for_first_samples(self.serving.running())


class LocustLoad:
    """Locust through the stack's proxy at the offered rate (Poisson arrivals), recorded in the stack."""

    def __init__(self, serving: LocalServing) -> None:
        self.serving = serving

    @property
    def samples(self) -> Path:
        return self.serving.running().requests_jsonl

    def start(self, run_dir: Path, *, rate: float, seed: int, extra_args: tuple[str, ...], say: Say) -> None:
        stack = self.serving.running()
        load = LoadSpec(rate=rate, seed=seed, extra_args=extra_args)
        stack.loadtest = start_loadtest(stack.router_url, load, run_dir)
        say(
            f"load: {load.rate:g} req/s Poisson (seed {load.seed}) through the router, "
            f"pid {stack.loadtest['process']['pid']}"
        )

    def stop(self, say: Say) -> dict[str, Any] | None:
        stack = self.serving.running()
        stack.stop(("loadtest",), say=say)  # Locust writes its summary on SIGTERM
        path = Path(stack.loadtest.get("summary_json", ""))
        return json.loads(path.read_text()) if path.is_file() else None


def local_site(
    *, state_dir: Path | None, arms: dict[str, ArmSpec] | None = None, keep_stack: bool = False
) -> Site:
    """The local stack's site; `state_dir` None keeps no rollout state (a CI gate), `arms` None only
    reattaches to a recorded stack."""
    serving = LocalServing(arms=arms, keep_stack=keep_stack)
    state = None
    if state_dir is not None:
        state = SiteState(
            FileStateStore(Path(state_dir)), lock=functools.partial(single_runner, Path(state_dir))
        )
    return Site(
        kind="local",
        serving=serving,
        observability=LocalObservability(serving),
        state=state,
        load=LocustLoad(serving),
    )


def arm_specs(args: argparse.Namespace) -> dict[str, ArmSpec]:
    """Each arm as the `--baseline-*` and `--canary-*` (`--candidate-*`) flags describe it."""
    return {
        arm: ArmSpec(
            arm=arm,
            mm_input_mode=getattr(args, f"{arm}_mode") or canary_default_mode(),
            tp_size=args.tp_size,
            cpu_cores=getattr(args, f"{arm}_cpu_cores"),
            extra_args=tuple(shlex.split(getattr(args, f"{arm}_args"))),
            command=getattr(args, f"{arm}_cmd"),
            url=getattr(args, f"{arm}_url"),
        )
        for arm in ARMS
    }


def from_args(args: argparse.Namespace, *, needs_prometheus: bool, canary_flag: str) -> Site:
    """The state directory, the arms (commands that start arms have their flags) and `--keep-stack`."""
    return local_site(
        state_dir=getattr(args, "state_dir", None),
        arms=arm_specs(args) if hasattr(args, "tp_size") else None,
        keep_stack=getattr(args, "keep_stack", False),
    )


def _arm_text(spec: ArmSpec) -> str:
    if spec.url is not None:
        return f"server at {spec.url}"
    if spec.command is not None:
        return f"command `{spec.command}`"
    extra = f" {' '.join(spec.extra_args)}" if spec.extra_args else ""
    return f"embedded backend, mm-input mode `{spec.mm_input_mode}`, TP={spec.tp_size}{extra}"


SITE = SiteKind("local", from_args=from_args, gate_profile=GATE_PROFILE)  # no `applies`: the default site

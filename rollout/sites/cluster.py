"""Site kind `cluster`: a release of the chart (`helm/sglang-vlm-canary`) already serving both arms.

Traffic moves through the router kind `ROLLOUT_ROUTER` names (default `httproute`: the chart's Gateway API
HTTPRoute; any kind in `rollout/routers/` with a `for_cluster`), state lives in its ConfigMap (so a rollback works from
anywhere), the gates read the cluster's Prometheus with the `kubernetes` query profile, and a revert
scales the canary Deployment to zero. Inside the chart's orchestrator Job the names come from its
environment (ROLLOUT_*); from a laptop they follow the chart's naming (`<fullname>-baseline`,
`<fullname>-rollout-state`, ...).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gates.config import GateConfig
from gates.spec import traefik_backend_regex
from rollout.gating import load_gate_config
from rollout.routers import cluster_router_kind
from rollout.routers.base import ClusterRelease, TrafficRouter
from rollout.sites.base import Say, Site, SiteKind, SiteState
from rollout.state import ConfigMapStateStore

CHART_NAME = "sglang-vlm-canary"
ARMS = ("baseline", "canary")
DEFAULT_ROUTER = "httproute"
KIND = "kubernetes"  # what the state's `stack` and a CI gate's decision record of the site
GATE_PROFILE = "kubernetes"
# Options that describe locally started arms; a cluster's arms are its release's Deployments.
LOCAL_ONLY = ("cmd", "url", "args")


def chart_fullname(release: str) -> str:
    """The chart's `fullname` helper: the release name if it contains the chart name, else both; 40 chars."""
    name = release if CHART_NAME in release else f"{release}-{CHART_NAME}"
    return name[:40].rstrip("-")


@dataclass(frozen=True)
class ClusterTarget:
    namespace: str
    release: str
    context: str | None
    baseline_service: str
    canary_service: str
    baseline_deployment: str
    canary_deployment: str
    state_configmap: str
    prometheus_url: str | None
    router: str = DEFAULT_ROUTER  # the router kind (`rollout/routers/<router>.py`)
    settings: Mapping[str, str] = field(default_factory=dict)  # the ROLLOUT_* environment, for the router

    @classmethod
    def resolve(
        cls,
        *,
        namespace: str,
        release: str,
        context: str | None = None,
        prometheus_url: str | None = None,
        router: str | None = None,
        env: dict[str, str] | None = None,
    ) -> ClusterTarget:
        env = dict(os.environ if env is None else env)
        full = chart_fullname(release)
        router = router or env.get("ROLLOUT_ROUTER") or DEFAULT_ROUTER
        cluster_router_kind(router)  # an unknown kind is a usage error here, naming the known ones
        # Only `run` needs Prometheus (checked there): `status` and `rollback` act without it.
        prom = prometheus_url or env.get("ROLLOUT_PROMETHEUS_URL") or None
        return cls(
            namespace=namespace,
            release=release,
            context=context,
            baseline_service=env.get("ROLLOUT_BASELINE_SERVICE", f"{full}-baseline"),
            canary_service=env.get("ROLLOUT_CANARY_SERVICE", f"{full}-canary"),
            baseline_deployment=env.get("ROLLOUT_BASELINE_DEPLOYMENT", f"{full}-baseline"),
            canary_deployment=env.get("ROLLOUT_CANARY_DEPLOYMENT", f"{full}-canary"),
            state_configmap=env.get("ROLLOUT_STATE_CONFIGMAP", f"{full}-rollout-state"),
            prometheus_url=prom,
            router=router,
            settings={key: value for key, value in env.items() if key.startswith("ROLLOUT_")},
        )

    def release_for_router(self) -> ClusterRelease:
        return ClusterRelease(
            namespace=self.namespace,
            context=self.context,
            fullname=chart_fullname(self.release),
            services={arm: self.service(arm) for arm in ARMS},
            settings=self.settings,
        )

    def require_prometheus(self) -> str:
        if not self.prometheus_url:
            raise ValueError("a cluster rollout needs --prometheus-url (or ROLLOUT_PROMETHEUS_URL)")
        return self.prometheus_url

    def deployment(self, arm: str) -> str:
        return self.baseline_deployment if arm == "baseline" else self.canary_deployment

    def pod_regex(self, arm: str) -> str:
        """One arm's pods (`<deployment>-<template hash>-<suffix>`) and nothing else: an anchored RE2
        (PromQL `=~`) that cannot match the other arm, the orchestrator or the load test."""
        return self.deployment(arm).replace(".", "\\.") + "-[a-z0-9]+-[a-z0-9]+"

    def service(self, arm: str) -> str:
        return self.baseline_service if arm == "baseline" else self.canary_service

    def gate_variables(self) -> dict[str, Any]:
        """The `kubernetes` gate queries' variables for this release."""
        return {
            "namespace": self.namespace,
            "pod_regex": {arm: self.pod_regex(arm) for arm in ARMS},
            "gateway_service_regex": {
                arm: traefik_backend_regex(self.namespace, self.service(arm)) for arm in ARMS
            },
        }


def cluster_gate_variables(
    target: ClusterTarget,
    *,
    file_variables: Mapping[str, Any],
    packaged_variables: Mapping[str, Any],
) -> dict[str, Any]:
    """The release's gate variables, except where the gate file set a value of its own.

    The packaged defaults (`namespace: default`, `sglang-<arm>-.*`) are placeholders that match none of
    the chart's pods, so a value equal to the packaged one (e.g. in a copy of the defaults) never wins
    over the release's; any other value in the gate file does (e.g. pods of a differently named chart).
    """
    merged = target.gate_variables()
    for key, value in file_variables.items():
        if value != packaged_variables.get(key):
            merged[key] = value
    return merged


class ReleaseServing:
    """The release's two Deployments, already serving, and the router the release's traffic moves through."""

    def __init__(self, target: ClusterTarget, *, router: TrafficRouter | None = None) -> None:
        self.target = target
        if router is None:
            build = cluster_router_kind(target.router).for_cluster
            assert build is not None  # cluster_router_kind refuses a kind without one
            router = build(target.release_for_router())
        self._router = router

    @property
    def router(self) -> TrafficRouter:
        return self._router

    def start(self, run_dir: Path, *, say: Say) -> None:
        """The release already serves both arms; nothing to start."""

    def attach(self, stack: dict[str, Any], router: dict[str, Any]) -> None:
        """The release is found by its names; the router is the target's."""

    def describe(self) -> dict[str, Any]:
        t = self.target
        return {
            "kind": KIND,
            "namespace": t.namespace,
            "release": t.release,
            "router": self.router.describe(),
        }

    def arms(self) -> dict[str, str]:
        t = self.target
        return {arm: f"Deployment {t.namespace}/{t.deployment(arm)}" for arm in ARMS}

    def hook_context(self) -> dict[str, Any]:
        return {"namespace": self.target.namespace, "release": self.target.release}

    def dead_parts(self) -> list[str]:
        return []  # the Deployments' controllers keep their pods running

    def retire_canary(self, say: Say) -> None:
        from rollout import kube

        t = self.target
        kube.scale_deployment(context=t.context, namespace=t.namespace, name=t.canary_deployment, replicas=0)
        say(f"scaled {t.canary_deployment} to 0")

    def teardown(self, say: Say, *, keep_serving: bool = False) -> None:
        """The release stays as installed."""


class ClusterObservability:
    """The cluster's Prometheus, read with the `kubernetes` query profile for this release's pods."""

    def __init__(self, target: ClusterTarget, *, settle_s: float = 15.0) -> None:
        self.target = target
        self.settle_s = settle_s  # the cluster's scrape interval (15 s) lands the window's last scrape

    @property
    def prometheus_url(self) -> str:
        return self.target.require_prometheus()

    def gate_config(self, gate_file: Path | None, overrides: dict[str, dict[str, Any]] | None) -> GateConfig:
        # The gates as shipped: a rollout profile's overrides size them to two CPU-only local backends,
        # while a cluster's GPU servers are judged by the real bounds.
        return load_gate_config(gate_file, gate_profile=GATE_PROFILE)

    def variables(self, config: GateConfig) -> dict[str, Any]:
        from gates.config import load_gate_file

        return cluster_gate_variables(
            self.target,
            file_variables=config.variables,
            packaged_variables=load_gate_file(None, profile=GATE_PROFILE).variables,
        )

    def wait_for_data(self) -> None:
        """The release's series are already being scraped."""


def cluster_site(
    target: ClusterTarget, *, settle_s: float = 15.0, router: TrafficRouter | None = None
) -> Site:
    """The release's site: state in its ConfigMap (whose versioned writes refuse a stale second writer, so
    a run holds no lock), and no load of its own (whatever reaches the Gateway: the chart's Locust, users)."""
    t = target
    return Site(
        kind=KIND,
        serving=ReleaseServing(target, router=router),
        observability=ClusterObservability(target, settle_s=settle_s),
        state=SiteState(
            ConfigMapStateStore(namespace=t.namespace, name=t.state_configmap, context=t.context)
        ),
    )


def applies(args: argparse.Namespace) -> bool:
    """A namespace or a release (flags or ROLLOUT_* for `rollout` commands) asks for the cluster."""
    return bool(getattr(args, "kube_namespace", None) or getattr(args, "release", None))


def from_args(args: argparse.Namespace, *, needs_prometheus: bool, canary_flag: str) -> Site:
    """Both `--kube-namespace` and `--release`, no local-arm option; Prometheus where the command judges."""
    namespace, release = getattr(args, "kube_namespace", None), getattr(args, "release", None)
    if not (namespace and release):
        raise ValueError("a cluster target needs both --kube-namespace and --release")
    if hasattr(args, "tp_size"):
        given = [
            f"--{canary_flag if arm == 'canary' else arm}-{what}"
            for arm in ARMS
            for what in LOCAL_ONLY
            if getattr(args, f"{arm}_{what}")
        ]
        if given:
            raise ValueError(
                f"{', '.join(given)}: local-mode options; in cluster mode the arms are the release's"
            )
    target = ClusterTarget.resolve(
        namespace=namespace, release=release, context=args.kube_context, prometheus_url=args.prometheus_url
    )
    if needs_prometheus:
        target.require_prometheus()
    return cluster_site(target)


SITE = SiteKind("cluster", from_args=from_args, gate_profile=GATE_PROFILE, applies=applies)

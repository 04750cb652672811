"""Kubernetes coordinates of a rollout, named by the chart (`helm/sglang-vlm-canary`).

Inside the chart's orchestrator Job the names come from its environment (ROLLOUT_*); from a laptop they
follow the chart's naming (`<fullname>-baseline`, `<fullname>-rollout-state`, ...).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

CHART_NAME = "sglang-vlm-canary"
ARMS = ("baseline", "canary")


def chart_fullname(release: str) -> str:
    """The chart's `fullname` helper: the release name if it contains the chart name, else both; 40 chars."""
    name = release if CHART_NAME in release else f"{release}-{CHART_NAME}"
    return name[:40].rstrip("-")


@dataclass(frozen=True)
class ClusterTarget:
    namespace: str
    release: str
    context: str | None
    route: str
    baseline_service: str
    canary_service: str
    baseline_deployment: str
    canary_deployment: str
    state_configmap: str
    prometheus_url: str | None

    @classmethod
    def resolve(
        cls,
        *,
        namespace: str,
        release: str,
        context: str | None = None,
        prometheus_url: str | None = None,
        env: dict[str, str] | None = None,
    ) -> ClusterTarget:
        env = dict(os.environ if env is None else env)
        full = chart_fullname(release)
        # Only `run` needs Prometheus (checked there): `status` and `rollback` act without it.
        prom = prometheus_url or env.get("ROLLOUT_PROMETHEUS_URL") or None
        return cls(
            namespace=namespace,
            release=release,
            context=context,
            route=env.get("ROLLOUT_HTTPROUTE", full),
            baseline_service=env.get("ROLLOUT_BASELINE_SERVICE", f"{full}-baseline"),
            canary_service=env.get("ROLLOUT_CANARY_SERVICE", f"{full}-canary"),
            baseline_deployment=env.get("ROLLOUT_BASELINE_DEPLOYMENT", f"{full}-baseline"),
            canary_deployment=env.get("ROLLOUT_CANARY_DEPLOYMENT", f"{full}-canary"),
            state_configmap=env.get("ROLLOUT_STATE_CONFIGMAP", f"{full}-rollout-state"),
            prometheus_url=prom,
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

    def gate_variables(self) -> dict[str, Any]:
        """The `kubernetes` gate queries' variables for this release."""
        return {"namespace": self.namespace, "pod_regex": {arm: self.pod_regex(arm) for arm in ARMS}}


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

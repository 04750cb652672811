"""Kubernetes coordinates of a rollout, named by the chart (`helm/sglang-vlm-canary`).

Inside the chart's orchestrator Job the names come from its environment (ROLLOUT_*); from a laptop they
follow the chart's naming (`<fullname>-baseline`, `<fullname>-rollout-state`, ...).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

CHART_NAME = "sglang-vlm-canary"


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
    canary_deployment: str
    state_configmap: str
    prometheus_url: str

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
        prom = prometheus_url or env.get("ROLLOUT_PROMETHEUS_URL")
        if not prom:
            raise ValueError("a cluster rollout needs --prometheus-url (or ROLLOUT_PROMETHEUS_URL)")
        return cls(
            namespace=namespace,
            release=release,
            context=context,
            route=env.get("ROLLOUT_HTTPROUTE", full),
            baseline_service=env.get("ROLLOUT_BASELINE_DEPLOYMENT", f"{full}-baseline"),
            canary_service=env.get("ROLLOUT_CANARY_DEPLOYMENT", f"{full}-canary"),
            canary_deployment=env.get("ROLLOUT_CANARY_DEPLOYMENT", f"{full}-canary"),
            state_configmap=env.get("ROLLOUT_STATE_CONFIGMAP", f"{full}-rollout-state"),
            prometheus_url=prom,
        )

"""Traffic routers behind one interface (`base.TrafficRouter`), one module each, and the factory."""

from __future__ import annotations

from rollout.routers.base import TrafficRouter


def router_from_description(data: dict) -> TrafficRouter:
    """Rebuild a router from what `describe()` persisted in the rollout state."""
    kind = data.get("kind")
    if kind == "local":
        from rollout.routers.local_proxy import LocalProxyRouter

        return LocalProxyRouter.from_description(data)
    if kind == "httproute":
        from rollout.routers.httproute import HTTPRouteRouter

        return HTTPRouteRouter.from_description(data)
    raise ValueError(f"router description has unknown kind {kind!r} (expected 'local' or 'httproute')")

"""Traffic routers behind one interface (`base.TrafficRouter`), one module each, found by name.

A router kind is the module `rollout/routers/<kind>.py` with a `ROUTER = RouterKind("<kind>", ...)`:
a new router is that one file (and its test); nothing here lists the kinds (`infra.registry` finds them).
"""

from __future__ import annotations

from infra.registry import kind_names, load_kind
from rollout.routers.base import RouterKind, TrafficRouter


def router_kind(name: object) -> RouterKind:
    """The router kind `name` (e.g. from a persisted description or the cluster's `ROLLOUT_ROUTER`)."""
    kind = load_kind(__name__, name, "ROUTER", RouterKind, "router")
    if kind is None:
        raise ValueError(f"unknown router kind {name!r} (known: {', '.join(known_router_kinds())})")
    return kind


def cluster_router_kind(name: object) -> RouterKind:
    """The router kind `name`, which must be able to move a cluster release's traffic."""
    kind = router_kind(name)
    if kind.for_cluster is None:
        able = [n for n in known_router_kinds() if router_kind(n).for_cluster is not None]
        raise ValueError(
            f"router kind {name!r} cannot route a cluster release (cluster routers: {', '.join(able)})"
        )
    return kind


def known_router_kinds() -> list[str]:
    return kind_names(__name__, __path__, "ROUTER", RouterKind, "router")


def router_from_description(data: dict) -> TrafficRouter:
    """Rebuild a router from what `describe()` persisted in the rollout state."""
    return router_kind(data.get("kind")).from_description(data)

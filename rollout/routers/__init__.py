"""Traffic routers behind one interface (`base.TrafficRouter`), one module each, found by name.

A router kind is the module `rollout/routers/<kind>.py` with a `ROUTER = RouterKind("<kind>", ...)`:
a new router is that one file (and its test); nothing here lists the kinds.
"""

from __future__ import annotations

import importlib
import pkgutil

from rollout.routers.base import RouterKind, TrafficRouter


def router_kind(name: object) -> RouterKind:
    """The router kind `name` (e.g. from a persisted description or the cluster's `ROLLOUT_ROUTER`)."""
    kind = _load(name) if isinstance(name, str) else None
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
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if _load(m.name) is not None)


def router_from_description(data: dict) -> TrafficRouter:
    """Rebuild a router from what `describe()` persisted in the rollout state."""
    return router_kind(data.get("kind")).from_description(data)


def _load(name: str) -> RouterKind | None:
    if not name.isidentifier() or name.startswith("_"):
        return None
    module_name = f"{__name__}.{name}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            return None
        raise  # the router's module exists but one of its imports does not: not an unknown kind
    kind = getattr(module, "ROUTER", None)
    if not isinstance(kind, RouterKind):
        return None
    if kind.name != name:
        raise ValueError(
            f"{module_name}.ROUTER is named {kind.name!r}; a router kind is named after its module"
        )
    return kind

"""Router kind `httproute`, Gateway API HTTPRoute: traffic weights are the `weight` of the two arms' backendRefs.

The chart owns the route (backendRefs, the arm header filters); this router only patches weights, with
RFC 6902 `test` operations so it never rewrites a route whose backendRefs moved under it. It verifies
through the route's status, as the gateway controllers write it: the weights are in effect when they
are in the spec and every parent's controller reports Accepted and ResolvedRefs for the current
generation. A controller still reporting an older generation, or refusing this one, means they are
not in effect (DIFFERS, with who and why); only a route no controller reports on is UNKNOWN.
"""

from __future__ import annotations

from typing import Any

from rollout import kube as default_kube
from rollout.kube import CustomResource
from rollout.routers.base import (
    ARMS,
    ClusterRelease,
    RouterKind,
    RouterUnavailable,
    Verification,
    WeightCheck,
    Weights,
)

HTTPROUTE = CustomResource("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute")


class HTTPRouteRouter:
    name = "httproute"

    def __init__(
        self,
        *,
        namespace: str,
        route: str,
        services: dict[str, str],  # arm -> backendRef name (the arm's Service)
        context: str | None = None,
        kube: Any = None,
    ) -> None:
        missing = [arm for arm in ARMS if arm not in services]
        if missing:
            raise ValueError(f"HTTPRoute router needs a backendRef name for arm(s) {missing}")
        self.kube = default_kube if kube is None else kube
        self.namespace = namespace
        self.route = route
        self.services = dict(services)
        self.context = context

    def describe(self) -> dict:
        return {
            "kind": self.name,
            "namespace": self.namespace,
            "route": self.route,
            "services": self.services,
            "context": self.context,
        }

    @classmethod
    def from_description(cls, data: dict) -> HTTPRouteRouter:
        return cls(
            namespace=data["namespace"],
            route=data["route"],
            services=data["services"],
            context=data.get("context"),
        )

    def _get(self) -> dict[str, Any]:
        try:
            return self.kube.get_custom_object(
                context=self.context, resource=HTTPROUTE, namespace=self.namespace, name=self.route
            )
        except Exception as exc:
            raise RouterUnavailable(f"HTTPRoute {self.namespace}/{self.route}: {exc}") from exc

    def _arm_refs(self, route: dict[str, Any]) -> list[tuple[int, int, str]]:
        """(rule index, backendRef index, arm) for every backendRef naming an arm's Service."""
        by_service = {svc: arm for arm, svc in self.services.items()}
        found = []
        for r, rule in enumerate(route.get("spec", {}).get("rules", []) or []):
            for b, ref in enumerate(rule.get("backendRefs", []) or []):
                arm = by_service.get(ref.get("name"))
                if arm is not None:
                    found.append((r, b, arm))
        if not any(arm == "baseline" for _, _, arm in found):
            raise RouterUnavailable(
                f"HTTPRoute {self.namespace}/{self.route} has no backendRef named {self.services['baseline']!r}"
            )
        return found

    def set_weights(self, weights: Weights) -> None:
        route = self._get()
        refs = self._arm_refs(route)
        if weights.canary > 0 and not any(arm == "canary" for _, _, arm in refs):
            raise RouterUnavailable(
                f"HTTPRoute {self.namespace}/{self.route} has no backendRef {self.services['canary']!r} to send "
                f"{weights.canary}% to"
            )
        operations: list[dict[str, Any]] = []
        for r, b, arm in refs:
            path = f"/spec/rules/{r}/backendRefs/{b}"
            operations.append({"op": "test", "path": f"{path}/name", "value": self.services[arm]})
            operations.append({"op": "add", "path": f"{path}/weight", "value": getattr(weights, arm)})
        try:
            self.kube.json_patch_custom_object(
                context=self.context,
                resource=HTTPROUTE,
                namespace=self.namespace,
                name=self.route,
                operations=operations,
            )
        except Exception as exc:
            raise RouterUnavailable(
                f"HTTPRoute {self.namespace}/{self.route}: weights not set: {exc}"
            ) from exc

    def _spec_weights(self, route: dict[str, Any]) -> Weights:
        seen: dict[str, set[int]] = {arm: set() for arm in ARMS}
        rules = route.get("spec", {}).get("rules", [])
        for r, b, arm in self._arm_refs(route):
            seen[arm].add(int(rules[r]["backendRefs"][b].get("weight", 1)))
        values = {}
        for arm in ARMS:
            if len(seen[arm]) > 1:
                raise RouterUnavailable(
                    f"HTTPRoute {self.namespace}/{self.route}: rules disagree on {arm} weight {sorted(seen[arm])}"
                )
            values[arm] = seen[arm].pop() if seen[arm] else 0
        total = values["baseline"] + values["canary"]
        if total == 0:
            raise RouterUnavailable(f"HTTPRoute {self.namespace}/{self.route}: both arms have weight 0")
        if total != 100:
            # Gateway API weights are relative; express them as percent (exact for the usual 100 total).
            canary = round(100 * values["canary"] / total)
            return Weights.for_canary(canary)
        return Weights(baseline=values["baseline"], canary=values["canary"])

    def get_weights(self) -> Weights:
        return self._spec_weights(self._get())

    def verify_weights(self, expected: Weights) -> Verification:
        try:
            route = self._get()
            actual = self._spec_weights(route)
        except RouterUnavailable as exc:
            return Verification(WeightCheck.UNKNOWN, str(exc))
        if actual != expected:
            return Verification(WeightCheck.DIFFERS, f"the route's spec has {actual.as_dict()}")
        generation = route.get("metadata", {}).get("generation")
        parents = route.get("status", {}).get("parents", []) or []
        if not parents:
            return Verification(WeightCheck.UNKNOWN, "no gateway controller reports on this route")
        for parent in parents:
            controller = parent.get("controllerName", "?")
            conditions = {c.get("type"): c for c in parent.get("conditions", []) or []}
            for kind in ("Accepted", "ResolvedRefs"):
                condition = conditions.get(kind)
                if condition is None or condition.get("observedGeneration") != generation:
                    seen = None if condition is None else condition.get("observedGeneration")
                    return Verification(
                        WeightCheck.DIFFERS,
                        f"{controller} has not reported {kind} for generation {generation} yet (last: {seen})",
                    )
                if condition.get("status") != "True":
                    return Verification(
                        WeightCheck.DIFFERS,
                        f"{controller} refuses generation {generation}: {kind}={condition.get('status')} "
                        f"({condition.get('reason')}: {condition.get('message')})",
                    )
        controllers = sorted({p.get("controllerName", "?") for p in parents})
        return Verification(
            WeightCheck.MATCHES, f"generation {generation} accepted by {', '.join(controllers)}"
        )


def for_cluster(release: ClusterRelease) -> HTTPRouteRouter:
    """The chart's route: `ROLLOUT_HTTPROUTE` (set by its orchestrator Job), else the chart's fullname."""
    return HTTPRouteRouter(
        namespace=release.namespace,
        route=release.settings.get("ROLLOUT_HTTPROUTE", release.fullname),
        services=dict(release.services),
        context=release.context,
    )


ROUTER = RouterKind(
    HTTPRouteRouter.name, from_description=HTTPRouteRouter.from_description, for_cluster=for_cluster
)

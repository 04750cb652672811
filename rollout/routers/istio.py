"""Router kind `istio`, Istio VirtualService: traffic weights are the `weight` of the arms' destinations
in one of its http routes.

The VirtualService belongs to whoever owns the mesh's routing (a chart, a platform team); this router only
patches the two destinations' weights, with RFC 6902 `test` operations on the route's name and each
destination's host and subset, so it never rewrites a route that moved or changed under it. An arm's
destination is a host (its Service: host-level splitting) and, optionally, a subset of a DestinationRule
(subset-level splitting, both arms on one host), as Argo Rollouts splits Istio traffic. The route is the
one named in the configuration, or the VirtualService's only http route.

Verification reads the VirtualService back from the API server, as Argo Rollouts and Flagger do for Istio:
istiod pushes what the API server holds to the proxies, and reports on a VirtualService (its status'
observedGeneration and Reconciled condition) only with its optional status feature on, so nothing here
waits on that: the weights are in effect when the API server holds them (MATCHES), and someone else's edit
shows as DIFFERS. Only a VirtualService that cannot be read is UNKNOWN.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from rollout import kube as default_kube
from rollout.kube import CustomResource, KubeNotFound
from rollout.routers.base import (
    ARMS,
    ClusterRelease,
    RouterKind,
    RouterUnavailable,
    Verification,
    WeightCheck,
    Weights,
)

VIRTUALSERVICE = CustomResource("networking.istio.io", "v1", "virtualservices", "VirtualService")


@dataclass(frozen=True)
class Destination:
    """An arm's destination in the route: a host (a Service's short name or FQDN) and optionally a subset."""

    host: str
    subset: str | None = None

    def __str__(self) -> str:
        return self.host + (f" subset {self.subset}" if self.subset else "")


def fqdn(host: str, namespace: str) -> str:
    """Istio reads a host without a dot as a Service in the VirtualService's namespace; any other as written."""
    return host if "." in host or "*" in host else f"{host}.{namespace}.svc.cluster.local"


class IstioRouter:
    name = "istio"

    def __init__(
        self,
        *,
        namespace: str,
        virtual_service: str,
        destinations: dict[str, Destination],  # arm -> its destination in the route
        route: str | None = None,  # the http route's `name`; None: the VirtualService's only http route
        context: str | None = None,
        kube: Any = None,
    ) -> None:
        missing = [arm for arm in ARMS if arm not in destinations]
        if missing:
            raise ValueError(f"Istio router needs a destination for arm(s) {missing}")
        self.namespace = namespace
        self.virtual_service = virtual_service
        self.destinations = dict(destinations)
        self.route = route
        self.context = context
        self.kube = default_kube if kube is None else kube
        if self._key(self.destinations["baseline"]) == self._key(self.destinations["canary"]):
            raise ValueError(
                f"both arms are destination {self.destinations['baseline']}: give each arm its own host "
                "(Service) or, on one host, its own subset"
            )

    def describe(self) -> dict:
        return {
            "kind": self.name,
            "namespace": self.namespace,
            "virtual_service": self.virtual_service,
            "route": self.route,
            "destinations": {arm: asdict(d) for arm, d in self.destinations.items()},
            "context": self.context,
        }

    @classmethod
    def from_description(cls, data: dict) -> IstioRouter:
        return cls(
            namespace=data["namespace"],
            virtual_service=data["virtual_service"],
            route=data.get("route"),
            destinations={arm: Destination(**d) for arm, d in data["destinations"].items()},
            context=data.get("context"),
        )

    # -- reading the VirtualService --------------------------------------------------------------------
    @property
    def _what(self) -> str:
        return f"VirtualService {self.namespace}/{self.virtual_service}"

    def _key(self, destination: dict[str, Any] | Destination) -> tuple[str, str | None]:
        if isinstance(destination, Destination):
            return fqdn(destination.host, self.namespace), destination.subset
        return fqdn(str(destination.get("host", "")), self.namespace), destination.get("subset")

    def _get(self) -> dict[str, Any]:
        try:
            return self.kube.get_custom_object(
                context=self.context,
                resource=VIRTUALSERVICE,
                namespace=self.namespace,
                name=self.virtual_service,
            )
        except KubeNotFound as exc:
            raise RouterUnavailable(
                f"{self._what} not found (the router sets weights in an existing VirtualService; its owner "
                f"creates it with both arms' destinations): {exc}"
            ) from exc
        except Exception as exc:
            raise RouterUnavailable(f"{self._what}: {exc}") from exc

    def _route(self, vs: dict[str, Any]) -> tuple[int, str]:
        """(index in spec.http, how messages name it) of the route this router splits."""
        routes = vs.get("spec", {}).get("http") or []
        names = [r.get("name") for r in routes]
        if self.route is None:
            if len(routes) != 1:
                raise RouterUnavailable(
                    f"{self._what} has {len(routes)} http routes {names}: name the one to split "
                    "(ROLLOUT_VIRTUALSERVICE_ROUTE)"
                )
            return 0, f"{self._what} http route {names[0] or 0!r}"
        if self.route not in names:
            raise RouterUnavailable(
                f"{self._what} has no http route named {self.route!r} (its http routes: {names})"
            )
        return names.index(self.route), f"{self._what} http route {self.route!r}"

    def _arm_destinations(self, vs: dict[str, Any]) -> tuple[int, str, dict[str, int]]:
        """(route index, its name for messages, arm -> index of the arm's destination in the route)."""
        index, where = self._route(vs)
        by_key = {self._key(d): arm for arm, d in self.destinations.items()}
        found: dict[str, int] = {}
        others = []
        for j, entry in enumerate(vs["spec"]["http"][index].get("route") or []):
            written = entry.get("destination") or {}
            arm = by_key.get(self._key(written))
            if arm is None:
                others.append(str(Destination(written.get("host", "?"), written.get("subset"))))
            elif arm in found:
                raise RouterUnavailable(f"{where} lists {self.destinations[arm]} ({arm}) twice")
            else:
                found[arm] = j
        if others:
            raise RouterUnavailable(
                f"{where} also routes to {others}, which is neither arm ({self.destinations['baseline']}, "
                f"{self.destinations['canary']}): the arms' weights would not be their share"
            )
        if "baseline" not in found:
            raise RouterUnavailable(f"{where} has no destination {self.destinations['baseline']} (baseline)")
        return index, where, found

    def _spec_weights(self, vs: dict[str, Any]) -> tuple[Weights, str]:
        index, where, found = self._arm_destinations(vs)
        entries = vs["spec"]["http"][index]["route"]
        if len(entries) == 1:  # Istio sends everything to a route's only destination, whatever its weight
            values = {arm: 100 if arm in found else 0 for arm in ARMS}
        else:
            values = {arm: int(entries[found[arm]].get("weight", 0)) if arm in found else 0 for arm in ARMS}
        total = values["baseline"] + values["canary"]
        if total == 0:
            raise RouterUnavailable(f"{where}: both arms have weight 0")
        if total != 100:  # weights are relative; as percent (exact for the usual total of 100)
            return Weights.for_canary(round(100 * values["canary"] / total)), where
        return Weights(baseline=values["baseline"], canary=values["canary"]), where

    # -- the router interface --------------------------------------------------------------------------
    def set_weights(self, weights: Weights) -> None:
        vs = self._get()
        index, where, found = self._arm_destinations(vs)
        if weights.canary > 0 and "canary" not in found:
            raise RouterUnavailable(
                f"{where} has no destination {self.destinations['canary']} to send {weights.canary}% to"
            )
        route_path = f"/spec/http/{index}"
        operations: list[dict[str, Any]] = []
        if self.route is not None:
            operations.append({"op": "test", "path": f"{route_path}/name", "value": self.route})
        for arm, j in found.items():
            path = f"{route_path}/route/{j}"
            written = vs["spec"]["http"][index]["route"][j]["destination"]
            operations.append({"op": "test", "path": f"{path}/destination/host", "value": written["host"]})
            if "subset" in written:
                operations.append(
                    {"op": "test", "path": f"{path}/destination/subset", "value": written["subset"]}
                )
            operations.append({"op": "add", "path": f"{path}/weight", "value": getattr(weights, arm)})
        try:
            self.kube.json_patch_custom_object(
                context=self.context,
                resource=VIRTUALSERVICE,
                namespace=self.namespace,
                name=self.virtual_service,
                operations=operations,
            )
        except Exception as exc:
            raise RouterUnavailable(f"{where}: weights not set: {exc}") from exc

    def get_weights(self) -> Weights:
        return self._spec_weights(self._get())[0]

    def verify_weights(self, expected: Weights) -> Verification:
        try:
            vs = self._get()
            actual, where = self._spec_weights(vs)
        except RouterUnavailable as exc:
            return Verification(WeightCheck.UNKNOWN, str(exc))
        generation = vs.get("metadata", {}).get("generation")
        if actual != expected:
            return Verification(
                WeightCheck.DIFFERS, f"{where} holds {actual.as_dict()} (generation {generation})"
            )
        return Verification(
            WeightCheck.MATCHES, f"{where} holds {actual.as_dict()} (generation {generation})"
        )


def for_cluster(release: ClusterRelease) -> IstioRouter:
    """The release's VirtualService `ROLLOUT_VIRTUALSERVICE` (default: the chart's fullname), its http route
    `ROLLOUT_VIRTUALSERVICE_ROUTE` (default: its only one), each arm's Service as host and, for subset-level
    splitting, `ROLLOUT_BASELINE_SUBSET` / `ROLLOUT_CANARY_SUBSET`."""
    settings = release.settings
    return IstioRouter(
        namespace=release.namespace,
        virtual_service=settings.get("ROLLOUT_VIRTUALSERVICE") or release.fullname,
        route=settings.get("ROLLOUT_VIRTUALSERVICE_ROUTE") or None,
        destinations={
            arm: Destination(release.services[arm], settings.get(f"ROLLOUT_{arm.upper()}_SUBSET") or None)
            for arm in ARMS
        },
        context=release.context,
    )


ROUTER = RouterKind(IstioRouter.name, from_description=IstioRouter.from_description, for_cluster=for_cluster)

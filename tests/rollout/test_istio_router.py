"""The Istio router against a real API server serving Istio's own VirtualService CRD (istio.io/api, put in
place by tools/k8s/istio-crds.sh). No Istio control or data plane: the router's whole contract is what the
API server holds, which is also how it verifies. Routers are built the way a cluster rollout builds them:
from the release's settings through the router registry."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rollout import kube
from rollout.routers import router_from_description
from rollout.routers.base import RouterUnavailable, WeightCheck, Weights
from rollout.routers.istio import IstioRouter, fqdn
from rollout.sites.cluster import ClusterTarget, cluster_site
from rollout.traffic import move_traffic

sys.path.insert(0, str(Path(__file__).parents[1] / "helm"))  # the k8s tier's shared helpers
from helm_chart_render import ROOT, load_tool  # noqa: E402

NAMESPACE = "mesh"
RELEASE = "demo"
FULL = "demo-sglang-vlm-canary"
BASELINE, CANARY = f"{FULL}-baseline", f"{FULL}-canary"
CRD = ROOT / ".cache" / "istio" / "crds" / "virtualservices.networking.istio.io.yaml"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A control plane (no nodes: nothing is scheduled) serving the VirtualService CRD; the rollout's
    Kubernetes calls reach it through KUBECONFIG, as from a laptop."""
    subprocess.run(["bash", str(ROOT / "tools" / "k8s" / "istio-crds.sh")], check=True, timeout=600)
    with load_tool("k8s/cluster").running(tmp_path_factory.mktemp("k8s") / "cluster", nodes=()) as running:
        running.kubectl("apply", "--server-side", "-f", str(CRD))
        running.kubectl("wait", "--for=condition=Established", "crd/virtualservices.networking.istio.io")
        running.create_namespace(NAMESPACE)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("KUBECONFIG", str(running.kubeconfig))
            mp.delenv("KUBERNETES_SERVICE_HOST", raising=False)  # never the in-cluster config
            yield running


def virtual_service(name: str, routes: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"hosts": [f"{FULL}.example"], "http": routes},
    }


def destination(host: str, weight: int | None = None, subset: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"destination": {"host": host, "port": {"number": 30000}}}
    if subset:
        entry["destination"]["subset"] = subset
    if weight is not None:
        entry["weight"] = weight
    return entry


# A header-matched route in front of the split one: the router must touch only the route it is given.
PINNED = {
    "name": "pinned",
    "match": [{"headers": {"x-arm": {"exact": "canary"}}}],
    "route": [destination(CANARY)],
}


def primary(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"name": "primary", "route": list(entries)}


def create(cluster, obj: dict[str, Any]) -> None:
    cluster.kubectl("create", "-f", "-", input_text=json.dumps(obj))


def held(cluster, name: str) -> dict[str, Any]:
    return json.loads(cluster.kubectl("get", "virtualservice", name, "-n", NAMESPACE, "-o", "json").stdout)


def route_weights(cluster, name: str, route: str = "primary") -> list[tuple[str, int | None]]:
    spec = held(cluster, name)["spec"]
    entries = next(r for r in spec["http"] if r.get("name") == route)["route"]
    return [
        (e["destination"]["host"] + "/" + e["destination"].get("subset", ""), e.get("weight"))
        for e in entries
    ]


def cluster_router(name: str, **settings: str) -> IstioRouter:
    """The router a cluster rollout builds from ROLLOUT_ROUTER=istio and the release's settings."""
    env = {"ROLLOUT_ROUTER": "istio", "ROLLOUT_VIRTUALSERVICE": name, **settings}
    router = cluster_site(ClusterTarget.resolve(namespace=NAMESPACE, release=RELEASE, env=env)).router
    assert isinstance(router, IstioRouter)
    return router


@pytest.mark.k8s
def test_weights_are_set_on_the_named_route_and_verified_from_the_api_server(cluster):
    create(
        cluster,
        virtual_service("host-split", [PINNED, primary(destination(BASELINE, 100), destination(CANARY, 0))]),
    )
    router = cluster_router("host-split", ROLLOUT_VIRTUALSERVICE_ROUTE="primary")
    for weights in (Weights(90, 10), Weights(50, 50), Weights(10, 90), Weights(100, 0)):
        check = move_traffic(router, weights, "a step", timeout_s=0)  # the one door: set, verify
        assert check.check is WeightCheck.MATCHES, check.reason
        assert "http route 'primary'" in check.reason and str(weights.as_dict()) in check.reason
        assert route_weights(cluster, "host-split") == [
            (f"{BASELINE}/", weights.baseline),
            (f"{CANARY}/", weights.canary),
        ]
        assert router.get_weights() == weights
    assert held(cluster, "host-split")["spec"]["http"][0] == PINNED  # the other route is untouched


@pytest.mark.k8s
def test_subset_level_split_on_one_host_written_as_fqdn(cluster):
    host = f"{FULL}.{NAMESPACE}.svc.cluster.local"  # the VirtualService spells it out; the release uses the short name
    vs = virtual_service(
        "subset-split", [{"route": [destination(host, 100, "stable"), destination(host, 0, "candidate")]}]
    )
    create(cluster, vs)
    router = cluster_router(
        "subset-split",
        ROLLOUT_BASELINE_SERVICE=FULL,
        ROLLOUT_CANARY_SERVICE=FULL,
        ROLLOUT_BASELINE_SUBSET="stable",
        ROLLOUT_CANARY_SUBSET="candidate",
    )
    assert router.get_weights() == Weights(100, 0)
    assert move_traffic(router, Weights(50, 50), "a step", timeout_s=0).matches
    entries = held(cluster, "subset-split")["spec"]["http"][0]["route"]
    assert [(e["destination"]["subset"], e["weight"]) for e in entries] == [("stable", 50), ("candidate", 50)]
    assert all(e["destination"]["host"] == host for e in entries)  # written as found


@pytest.mark.k8s
def test_an_edit_by_someone_else_is_seen_by_verify(cluster):
    create(cluster, virtual_service("edited", [primary(destination(BASELINE, 100), destination(CANARY, 0))]))
    router = cluster_router("edited")  # its only http route
    assert move_traffic(router, Weights(90, 10), "a step", timeout_s=0).matches
    generation = held(cluster, "edited")["metadata"]["generation"]
    patch = [{"op": "replace", "path": "/spec/http/0/route/1/weight", "value": 40}]
    cluster.kubectl(
        "patch", "virtualservice", "edited", "-n", NAMESPACE, "--type", "json", "-p", json.dumps(patch)
    )
    check = router.verify_weights(Weights(90, 10))
    assert check.check is WeightCheck.DIFFERS, check.reason
    # 90/40 is relative: 31% canary, as the mesh splits it; the reason says what the server holds now.
    assert "{'baseline': 69, 'canary': 31}" in check.reason and f"generation {generation + 1}" in check.reason
    # Someone removes the canary's destination: it gets nothing, which is not what was set either.
    patch = [{"op": "remove", "path": "/spec/http/0/route/1"}]
    cluster.kubectl(
        "patch", "virtualservice", "edited", "-n", NAMESPACE, "--type", "json", "-p", json.dumps(patch)
    )
    assert router.verify_weights(Weights(90, 10)).check is WeightCheck.DIFFERS
    with pytest.raises(RouterUnavailable, match=f"no destination {CANARY} to send 10% to"):
        router.set_weights(Weights(90, 10))
    move_traffic(router, Weights(100, 0), "a rollback", timeout_s=0)  # rollback still works
    assert route_weights(cluster, "edited") == [(f"{BASELINE}/", 100)]


class EditsBeforePatching:
    """rollout.kube, except that someone else reorders the route's destinations between our read and our patch."""

    def __init__(self, cluster, name: str):
        self.cluster, self.name = cluster, name

    def get_custom_object(self, **kwargs: Any) -> dict[str, Any]:
        return kube.get_custom_object(**kwargs)

    def json_patch_custom_object(self, **kwargs: Any) -> dict[str, Any]:
        vs = held(self.cluster, self.name)
        vs["spec"]["http"][0]["route"].reverse()
        self.cluster.kubectl("replace", "-f", "-", input_text=json.dumps(vs))
        return kube.json_patch_custom_object(**kwargs)


@pytest.mark.k8s
def test_destinations_that_moved_under_the_router_are_not_rewritten(cluster):
    create(cluster, virtual_service("moved", [primary(destination(BASELINE, 100), destination(CANARY, 0))]))
    description = cluster_router("moved").describe()
    router = IstioRouter.from_description(description)
    router.kube = EditsBeforePatching(cluster, "moved")
    with pytest.raises(RouterUnavailable, match="weights not set: .*HTTP 422"):
        router.set_weights(Weights(50, 50))
    assert route_weights(cluster, "moved") == [
        (f"{CANARY}/", 0),
        (f"{BASELINE}/", 100),
    ]  # as the other writer left it


@pytest.mark.k8s
def test_a_missing_virtual_service_route_or_destination_is_named(cluster):
    create(
        cluster,
        virtual_service("two-routes", [PINNED, primary(destination(BASELINE, 100), destination(CANARY, 0))]),
    )
    missing = cluster_router("two-routes", ROLLOUT_VIRTUALSERVICE_ROUTE="nope")
    message = r"VirtualService mesh/two-routes has no http route named 'nope' \(its http routes: \['pinned', 'primary'\]\)"
    with pytest.raises(RouterUnavailable, match=message):
        missing.set_weights(Weights(90, 10))
    check = missing.verify_weights(Weights(90, 10))
    assert check.check is WeightCheck.UNKNOWN and "no http route named 'nope'" in check.reason
    with pytest.raises(
        RouterUnavailable, match=r"has 2 http routes \['pinned', 'primary'\]: name the one to split"
    ):
        cluster_router("two-routes").get_weights()
    with pytest.raises(RouterUnavailable, match="VirtualService mesh/absent not found .*HTTP 404"):
        cluster_router("absent").set_weights(Weights(100, 0))
    assert cluster_router("absent").verify_weights(Weights(100, 0)).check is WeightCheck.UNKNOWN

    create(
        cluster,
        virtual_service(
            "third", [primary(destination(BASELINE, 80), destination(CANARY, 10), destination("mirror", 10))]
        ),
    )
    with pytest.raises(RouterUnavailable, match=r"also routes to \['mirror'\], which is neither arm"):
        cluster_router("third").set_weights(Weights(50, 50))
    create(cluster, virtual_service("no-baseline", [primary(destination(CANARY))]))
    with pytest.raises(
        RouterUnavailable, match=f"http route 'primary' has no destination {BASELINE} \\(baseline\\)"
    ):
        cluster_router("no-baseline").get_weights()
    assert held(cluster, "third")["spec"]["http"][0]["route"][2]["weight"] == 10  # nothing was written


@pytest.mark.k8s
def test_the_description_round_trips_through_the_registry(cluster):
    create(
        cluster, virtual_service("described", [primary(destination(BASELINE, 75), destination(CANARY, 25))])
    )
    router = cluster_router("described", ROLLOUT_VIRTUALSERVICE_ROUTE="primary")
    stored = json.loads(json.dumps(router.describe()))  # as the state store keeps it
    rebuilt = router_from_description(copy.deepcopy(stored))
    assert isinstance(rebuilt, IstioRouter) and rebuilt.describe() == stored
    assert rebuilt.get_weights() == Weights(75, 25)
    assert rebuilt.verify_weights(Weights(75, 25)).matches


def test_short_hosts_are_services_of_the_virtual_services_namespace():
    assert fqdn("svc", "ml") == "svc.ml.svc.cluster.local"
    assert fqdn("svc.other.svc.cluster.local", "ml") == "svc.other.svc.cluster.local"
    assert fqdn("svc.other", "ml") == "svc.other"  # Istio expands only names without a dot

"""The Gateway API router against a stand-in for `rollout.kube` (the one module that talks to the API)."""

import copy

import pytest

from rollout.routers import router_from_description
from rollout.routers.base import RouterUnavailable, WeightCheck, Weights
from rollout.routers.httproute import HTTPRouteRouter

SERVICES = {"baseline": "demo-sglang-vlm-canary-baseline", "canary": "demo-sglang-vlm-canary-canary"}


def route(baseline_weight=100, canary_weight=0, *, generation=3, accepted_generation=3):
    return {
        "metadata": {"name": "demo", "namespace": "ml", "generation": generation},
        "spec": {
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                    "backendRefs": [
                        {"name": SERVICES["baseline"], "port": 30000, "weight": baseline_weight},
                        {"name": SERVICES["canary"], "port": 30000, "weight": canary_weight},
                    ],
                }
            ]
        },
        "status": {
            "parents": [
                {
                    "controllerName": "traefik.io/gateway-controller",
                    "conditions": [
                        {"type": "Accepted", "status": "True", "observedGeneration": accepted_generation},
                        {"type": "ResolvedRefs", "status": "True", "observedGeneration": accepted_generation},
                    ],
                }
            ]
        },
    }


class FakeKube:
    """Holds one HTTPRoute; applies RFC 6902 test/add/replace the way the API server would."""

    def __init__(self, obj):
        self.obj = obj
        self.patches = []
        self.down = False

    def get_custom_object(self, *, context, resource, namespace, name):
        if self.down:
            raise OSError("connection refused")
        assert (resource.kind, resource.plural, namespace, name) == ("HTTPRoute", "httproutes", "ml", "demo")
        return copy.deepcopy(self.obj)

    def json_patch_custom_object(self, *, context, resource, namespace, name, operations):
        self.patches.append(operations)
        new = copy.deepcopy(self.obj)
        for op in operations:
            *parents, leaf = [int(p) if p.isdigit() else p for p in op["path"].strip("/").split("/")]
            target = new
            for part in parents:
                target = target[part]
            if op["op"] == "test":
                if target[leaf] != op["value"]:
                    raise RuntimeError(f"HTTP 422: test failed at {op['path']}")
            else:
                target[leaf] = op["value"]
        new["metadata"]["generation"] += 1
        self.obj = new
        return new


def make(obj):
    kube = FakeKube(obj)
    return HTTPRouteRouter(namespace="ml", route="demo", services=SERVICES, kube=kube), kube


def test_set_weights_patches_both_backend_refs_guarded_by_their_names():
    router, kube = make(route())
    router.set_weights(Weights(90, 10))
    assert router.get_weights() == Weights(90, 10)
    ops = kube.patches[0]
    assert {"op": "test", "path": "/spec/rules/0/backendRefs/1/name", "value": SERVICES["canary"]} in ops
    assert {"op": "add", "path": "/spec/rules/0/backendRefs/1/weight", "value": 10} in ops


def test_verify_needs_the_gateway_to_accept_the_current_generation():
    router, kube = make(route(90, 10, generation=4, accepted_generation=4))
    check = router.verify_weights(Weights(90, 10))
    assert check.check is WeightCheck.MATCHES and "traefik.io/gateway-controller" in check.reason
    assert router.verify_weights(Weights(50, 50)).check is WeightCheck.DIFFERS
    # A controller that reports an older generation has not applied this one: not in effect, and why.
    kube.obj["status"]["parents"][0]["conditions"][0]["observedGeneration"] = 3
    lagging = router.verify_weights(Weights(90, 10))
    assert lagging.check is WeightCheck.DIFFERS and "generation 4" in lagging.reason
    # A controller that refuses the current generation: not in effect either, with its reason.
    kube.obj["status"]["parents"][0]["conditions"] = [
        {"type": "Accepted", "status": "True", "observedGeneration": 4},
        {"type": "ResolvedRefs", "status": "False", "observedGeneration": 4, "reason": "BackendNotFound"},
    ]
    refused = router.verify_weights(Weights(90, 10))
    assert refused.check is WeightCheck.DIFFERS and "BackendNotFound" in refused.reason
    kube.obj["status"] = {}  # no controller reports: the only case nobody can tell
    assert router.verify_weights(Weights(90, 10)).check is WeightCheck.UNKNOWN
    kube.down = True
    assert router.verify_weights(Weights(90, 10)).check is WeightCheck.UNKNOWN


def test_a_route_whose_backend_refs_moved_is_not_rewritten():
    router, kube = make(route())
    original = copy.deepcopy(kube.obj)

    def moved_patch(**kwargs):
        # Someone reordered the backendRefs between our read and our patch: the `test` ops fail.
        kube.obj["spec"]["rules"][0]["backendRefs"].reverse()
        return FakeKube.json_patch_custom_object(kube, **kwargs)

    kube.json_patch_custom_object = moved_patch
    with pytest.raises(RouterUnavailable, match="weights not set"):
        router.set_weights(Weights(50, 50))
    assert sorted(r["weight"] for r in kube.obj["spec"]["rules"][0]["backendRefs"]) == sorted(
        r["weight"] for r in original["spec"]["rules"][0]["backendRefs"]
    )


def test_missing_canary_backend_ref_refuses_canary_traffic_but_allows_rollback():
    obj = route()
    obj["spec"]["rules"][0]["backendRefs"].pop()
    router, _ = make(obj)
    with pytest.raises(RouterUnavailable, match="no backendRef"):
        router.set_weights(Weights(90, 10))
    router.set_weights(Weights(100, 0))
    assert router.get_weights() == Weights(100, 0)


def test_relative_weights_read_as_percent_and_description_round_trips():
    router, _ = make(route(3, 1))
    assert router.get_weights() == Weights(75, 25)
    rebuilt = router_from_description(router.describe())
    assert isinstance(rebuilt, HTTPRouteRouter) and rebuilt.describe() == router.describe()


def test_unreachable_api_is_router_unavailable_with_the_route_named():
    router, kube = make(route())
    kube.down = True
    with pytest.raises(RouterUnavailable, match="ml/demo"):
        router.set_weights(Weights(100, 0))

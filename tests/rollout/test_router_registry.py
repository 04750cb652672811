"""Router kinds are found by name: `rollout/routers/<kind>.py` with its `ROUTER`, for descriptions and clusters."""

import sys
import textwrap

import pytest

import rollout.routers
from rollout.__main__ import main
from rollout.routers import cluster_router_kind, known_router_kinds, router_from_description, router_kind
from rollout.routers.httproute import HTTPRouteRouter
from rollout.routers.istio import Destination, IstioRouter
from rollout.sites.cluster import ClusterTarget, cluster_site


def test_each_router_module_is_a_kind_named_after_it():
    assert {"local", "httproute", "istio"} <= set(known_router_kinds())
    for name in known_router_kinds():
        assert router_kind(name).name == name
    assert cluster_router_kind("httproute").for_cluster is not None
    assert cluster_router_kind("istio").for_cluster is not None


@pytest.mark.parametrize("kind", ["nope", None, "base", "local_proxy_server", "../kube", "_private"])
def test_an_unknown_kind_is_refused_naming_the_known_ones(kind):
    with pytest.raises(ValueError, match=r"unknown router kind .*\(known: httproute, istio, local\)"):
        router_from_description({"kind": kind})


def test_the_cluster_router_kind_defaults_to_httproute_and_is_validated():
    site = cluster_site(ClusterTarget.resolve(namespace="ml", release="demo", env={}))
    assert isinstance(site.router, HTTPRouteRouter) and site.router.route == "demo-sglang-vlm-canary"
    assert site.serving.describe()["router"] == site.router.describe()
    with pytest.raises(ValueError, match=r"unknown router kind 'nope' \(known: httproute, istio, local\)"):
        ClusterTarget.resolve(namespace="ml", release="demo", env={"ROLLOUT_ROUTER": "nope"})
    with pytest.raises(
        ValueError, match=r"'local' cannot route a cluster release \(cluster routers: httproute, istio\)"
    ):
        ClusterTarget.resolve(namespace="ml", release="demo", env={"ROLLOUT_ROUTER": "local"})


def test_an_unknown_cluster_router_is_a_usage_error(monkeypatch, capsys):
    monkeypatch.setenv("ROLLOUT_ROUTER", "nope")
    assert main(["status", "--kube-namespace", "ml", "--release", "demo"]) == 3
    assert "unknown router kind 'nope'" in capsys.readouterr().err


def test_the_istio_router_reads_its_settings_from_the_release():
    env = {
        "ROLLOUT_ROUTER": "istio",
        "ROLLOUT_VIRTUALSERVICE": "vs",
        "ROLLOUT_VIRTUALSERVICE_ROUTE": "primary",
        "ROLLOUT_BASELINE_SERVICE": "demo",
        "ROLLOUT_CANARY_SERVICE": "demo",
        "ROLLOUT_BASELINE_SUBSET": "stable",
        "ROLLOUT_CANARY_SUBSET": "candidate",
    }
    router = cluster_site(ClusterTarget.resolve(namespace="ml", release="demo", env=env)).router
    assert isinstance(router, IstioRouter)
    assert (router.virtual_service, router.route) == ("vs", "primary")
    assert router.destinations == {
        "baseline": Destination("demo", "stable"),
        "canary": Destination("demo", "candidate"),
    }
    # One host without subsets cannot tell the arms apart: refused when the site is built.
    env = {"ROLLOUT_ROUTER": "istio", "ROLLOUT_BASELINE_SERVICE": "demo", "ROLLOUT_CANARY_SERVICE": "demo"}
    with pytest.raises(ValueError, match="both arms are destination demo"):
        cluster_site(ClusterTarget.resolve(namespace="ml", release="demo", env=env))


RECORDING = """
from rollout.routers.base import RouterKind, Verification, WeightCheck, Weights


class RecordingRouter:
    name = "recording"

    def __init__(self, target):
        self.target, self.weights = target, Weights(100, 0)

    def set_weights(self, weights):
        self.weights = weights

    def get_weights(self):
        return self.weights

    def verify_weights(self, expected):
        return Verification(WeightCheck.MATCHES if expected == self.weights else WeightCheck.DIFFERS)

    def describe(self):
        return {"kind": self.name, "target": self.target}


ROUTER = RouterKind(
    "recording",
    from_description=lambda data: RecordingRouter(data["target"]),
    for_cluster=lambda release: RecordingRouter(release.settings.get("ROLLOUT_RECORDING", release.fullname)),
)
"""


def test_a_new_router_is_one_file(tmp_path, monkeypatch):
    (tmp_path / "recording.py").write_text(textwrap.dedent(RECORDING))
    monkeypatch.setattr(rollout.routers, "__path__", [*rollout.routers.__path__, str(tmp_path)])
    monkeypatch.delitem(sys.modules, "rollout.routers.recording", raising=False)
    try:
        assert "recording" in known_router_kinds()
        target = ClusterTarget.resolve(namespace="ml", release="demo", env={"ROLLOUT_ROUTER": "recording"})
        router = cluster_site(target).router
        assert router.describe() == {"kind": "recording", "target": "demo-sglang-vlm-canary"}
        assert router_from_description(router.describe()).describe() == router.describe()
    finally:
        sys.modules.pop("rollout.routers.recording", None)

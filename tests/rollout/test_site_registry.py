"""Site kinds are found by name: `rollout/sites/<kind>.py` with its `SITE`; the command's flags pick one."""

import json
import sys
import textwrap

import pytest

import rollout.sites
from rollout.__main__ import main
from rollout.cli import build_parser
from rollout.sites import known_site_kinds, site_from_args, site_kind, site_kind_for


@pytest.fixture(autouse=True)
def no_cluster_in_the_environment(monkeypatch):
    for name in ("ROLLOUT_NAMESPACE", "ROLLOUT_RELEASE", "ROLLOUT_ROUTER"):
        monkeypatch.delenv(name, raising=False)


def test_each_site_module_is_a_kind_named_after_it():
    assert {"local", "cluster"} <= set(known_site_kinds())
    for name in known_site_kinds():
        assert site_kind(name).name == name
    assert site_kind("local").applies is None  # the site when the flags ask for no other
    assert (site_kind("local").gate_profile, site_kind("cluster").gate_profile) == ("local", "kubernetes")


@pytest.mark.parametrize("kind", ["nope", None, "base", "../kube", "_private"])
def test_an_unknown_kind_is_refused_naming_the_known_ones(kind):
    with pytest.raises(ValueError, match=r"unknown site kind .*\(known: cluster, local\)"):
        site_kind(kind)


def test_the_flags_pick_the_site(tmp_path):
    parse = build_parser().parse_args
    local = parse(["rollback", "--reason", "r", "--state-dir", str(tmp_path)])
    assert site_kind_for(local).name == "local"
    site = site_from_args(local, needs_prometheus=False)
    assert (site.kind, site.load is not None, site.state.store.describe()) == (
        "local",
        True,
        str(tmp_path / "state.json"),
    )
    cluster = parse(["rollback", "--reason", "r", "--kube-namespace", "ml", "--release", "demo"])
    assert site_kind_for(cluster).name == "cluster"
    site = site_from_args(cluster, needs_prometheus=False)
    assert (site.kind, site.load, site.state.lock) == ("kubernetes", None, None)
    assert site.state.store.describe() == "ConfigMap ml/demo-sglang-vlm-canary-rollout-state"
    with pytest.raises(ValueError, match="needs both --kube-namespace and --release"):
        site_from_args(parse(["status", "--release", "demo"]), needs_prometheus=False)


# A place to run that the product does not have: two arms nothing serves, a router that keeps its weights
# in a file, the rollout state in a directory; asked for by $STANDIN_SITE_DIR.
STANDIN = '''
"""Site kind `standin`: state and router weights in the directory $STANDIN_SITE_DIR."""

import json
import os
from pathlib import Path

from rollout.routers.base import Verification, WeightCheck, Weights
from rollout.sites.base import Site, SiteKind, SiteState
from rollout.state import FileStateStore


class FileRouter:
    name = "file"

    def __init__(self, path):
        self.path = path

    def set_weights(self, weights):
        self.path.write_text(json.dumps(weights.as_dict()))

    def get_weights(self):
        return Weights.from_dict(json.loads(self.path.read_text())) if self.path.exists() else Weights(100, 0)

    def verify_weights(self, expected):
        return Verification(WeightCheck.MATCHES if self.get_weights() == expected else WeightCheck.DIFFERS)

    def describe(self):
        return {"kind": self.name, "path": str(self.path)}


class StandInServing:
    def __init__(self, directory):
        self.router = FileRouter(directory / "weights.json")

    def start(self, run_dir, *, say):
        pass

    def attach(self, stack, router):
        pass

    def describe(self):
        return {"kind": "standin"}

    def arms(self):
        return {"baseline": "nothing", "canary": "nothing"}

    def hook_context(self):
        return {}

    def dead_parts(self):
        return []

    def retire_canary(self, say):
        say("canary retired")

    def teardown(self, say, *, keep_serving=False):
        pass


class NoObservability:
    settle_s = 0.0
    prometheus_url = "http://127.0.0.1:9"

    def gate_config(self, gate_file, overrides):
        raise ValueError("the stand-in site judges nothing")

    def variables(self, config):
        return {}

    def wait_for_data(self):
        pass


def from_args(args, *, needs_prometheus, canary_flag):
    directory = Path(os.environ["STANDIN_SITE_DIR"])
    return Site(
        kind="standin",
        serving=StandInServing(directory),
        observability=NoObservability(),
        state=SiteState(FileStateStore(directory)),
    )


SITE = SiteKind(
    "standin", from_args=from_args, gate_profile="local", applies=lambda args: "STANDIN_SITE_DIR" in os.environ
)
'''


def test_a_new_site_is_one_file(tmp_path, monkeypatch, capsys):
    from rollout.controller import new_state
    from rollout.plan import Phase, get_profile
    from rollout.routers.base import Weights

    (tmp_path / "standin.py").write_text(textwrap.dedent(STANDIN))
    monkeypatch.setattr(rollout.sites, "__path__", [*rollout.sites.__path__, str(tmp_path)])
    monkeypatch.delitem(sys.modules, "rollout.sites.standin", raising=False)
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    try:
        assert "standin" in known_site_kinds()
        assert main(["status", "--state-dir", str(tmp_path / "local")]) == 0  # not asked for: local
        assert f"no rollout recorded in {tmp_path / 'local' / 'state.json'}" in capsys.readouterr().out

        monkeypatch.setenv("STANDIN_SITE_DIR", str(state_dir))
        assert main(["status"]) == 0
        assert f"no rollout recorded in {state_dir / 'state.json'}" in capsys.readouterr().out
        site = site_from_args(build_parser().parse_args(["status"]), needs_prometheus=False)
        site.router.set_weights(Weights(90, 10))
        started = new_state(run_id="r1", profile=get_profile("quick"), router=site.router, stack={}, now=1.0)
        site.state.store.save(started)

        # The commands run on it as on any site: the weights move through its router, the state is its own.
        assert main(["rollback", "--reason", "pager", "--who", "alice"]) == 0
        out = capsys.readouterr().out
        assert "traffic: 100% baseline (router file, verified: matches)" in out and "canary retired" in out
        assert json.loads((state_dir / "weights.json").read_text()) == {"baseline": 100, "canary": 0}
        rolled = site.state.store.load()
        assert rolled.phase is Phase.ABORTED and rolled.decided_by == "alice"
        assert main(["down"]) == 0  # it drives no load: no local stack to stop
        assert "no local stack recorded" in capsys.readouterr().out

        # Flags asking for a second site at once are a usage error naming both.
        assert main(["status", "--kube-namespace", "ml", "--release", "demo"]) == 3
        assert "ask for more than one site: cluster, standin" in capsys.readouterr().err
    finally:
        sys.modules.pop("rollout.sites.standin", None)

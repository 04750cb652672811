"""State in the chart's ConfigMap, against a stand-in for `rollout.kube` with resourceVersion semantics."""

import json

import pytest
from rollout_fakes import FakeConfigMaps, MemoryRouter

from rollout.controller import new_state
from rollout.events import Rollback, StepStarted
from rollout.plan import get_profile
from rollout.routers.base import Weights
from rollout.state import ConfigMapStateStore, StateConflict


def test_state_round_trips_and_a_stale_writer_is_refused():
    kube = FakeConfigMaps()
    store = ConfigMapStateStore(namespace="ml", name="demo-rollout-state", kube=kube)
    assert store.load() is None
    state = new_state(run_id="r", profile=get_profile("default"), router=MemoryRouter(), stack={}, now=1.0)
    store.save(state)
    assert store.load().to_dict() == json.loads(json.dumps(state.to_dict()))
    other = ConfigMapStateStore(namespace="ml", name="demo-rollout-state", kube=kube)
    other.load()
    rollback = Rollback(
        2.0, who="alice", reason="x", weights_before=Weights(90, 10), verified="matches", changed=True
    )
    other.save(state.with_event(rollback))  # someone else wrote meanwhile
    with pytest.raises(StateConflict, match="changed since it was read"):
        store.save(state.with_event(StepStarted(3.0, step=0, canary_weight=10)))
    assert store.load().events == (rollback,)  # re-read: the other write won, nothing was lost

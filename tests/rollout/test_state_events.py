"""The rollout state's events: typed in memory, stored as the JSON they always were. The files under
state_files/ are states as the stores wrote them before events had types (every event kind the rollout
records: steps, weights set again, hooks, pause and resume, a takeover, a promotion forced by hand,
reverts, rollbacks with the weights before unknown or the stack stopped, notification results)."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
from rollout_fakes import FakeConfigMaps, MemoryRouter

from rollout.controller import new_state
from rollout.events import (
    EVENT_TYPES,
    Event,
    Notification,
    Promotion,
    Rollback,
    StepStarted,
    Takeover,
    WeightsSet,
)
from rollout.plan import Phase, get_profile
from rollout.routers.base import WeightCheck, Weights
from rollout.state import ConfigMapStateStore, FileStateStore, RolloutState

STATE_FILES = sorted((Path(__file__).parent / "state_files").glob("*.json"))


@pytest.mark.parametrize("path", STATE_FILES, ids=lambda p: p.stem)
def test_stored_states_read_as_typed_events_and_write_back_byte_for_byte(path, tmp_path):
    text = path.read_text()
    state = RolloutState.from_dict(json.loads(text))
    assert all(isinstance(e, Event) and type(e) in EVENT_TYPES for e in state.events)
    assert [e.to_dict() for e in state.events] == json.loads(text)["events"]
    store = FileStateStore(tmp_path)
    store.save(state)
    assert (tmp_path / "state.json").read_text() == text  # same keys, same order, same values
    assert state.outcome is state.phase and json.loads(text)["outcome"] == state.phase.value


def test_the_stored_states_hold_every_event_kind():
    kinds = {
        type(e) for path in STATE_FILES for e in RolloutState.from_dict(json.loads(path.read_text())).events
    }
    assert kinds == set(EVENT_TYPES)


def test_stored_values_come_back_as_their_types():
    states = {p.stem: RolloutState.from_dict(json.loads(p.read_text())) for p in STATE_FILES}
    first = states["aborted"].events[0]
    assert first == StepStarted(1_000_000.0, step=0, canary_weight=10)
    (weights, *_) = (e for e in states["aborted"].events if isinstance(e, WeightsSet))
    assert weights.weights == Weights(90, 10) and weights.after_check is WeightCheck.DIFFERS
    before = [e.weights_before for e in states["aborted"].events if isinstance(e, Rollback)]
    assert before == ["unknown (cannot read)", "stack stopped"]
    revert, again = (e for e in states["reverted"].events if isinstance(e, Rollback))
    assert (revert.who, revert.weights_before, revert.changed) == ("rollout", Weights(50, 50), True)
    assert states["reverted"].last_event(Rollback) == again and (again.who, again.changed) == ("bob", False)
    forced = states["forced"].last_event(Promotion)
    assert forced is not None and forced.forced == ("p99_latency",) and forced.who == "erin"
    takeover = states["promoted"].last_event(Takeover)
    assert takeover is not None and (takeover.previous, takeover.holder) == (
        "pod rollout-old",
        "pod rollout-new",
    )
    assert states["promoted"].last_event(Notification).event == "promoted"
    assert states["forced"].last_event(Takeover) is None


def test_the_outcome_is_the_phase_once_terminal():
    state = new_state(run_id="r", profile=get_profile("quick"), router=MemoryRouter(), stack={}, now=1.0)
    assert state.outcome is None and state.to_dict()["outcome"] is None
    assert replace(state, phase=Phase.PROGRESSING).outcome is None
    for phase in (Phase.PROMOTED, Phase.REVERTED, Phase.ABORTED):
        done = replace(state, phase=phase)
        assert done.outcome is phase and done.to_dict()["outcome"] == phase.value
        assert RolloutState.from_dict(done.to_dict()) == done


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"at": 1.0, "kind": "weights-changed"}, r"unknown kind 'weights-changed'; known: \['hook'"),
        ({"at": 1.0}, "unknown kind None"),
        ({"at": 1.0, "kind": "step-started", "step": 0}, r"missing key\(s\) \['canary_weight'\]"),
        (
            {"at": 1.0, "kind": "pause", "who": "a", "reason": "b", "changed": True, "why": "c"},
            r"unknown key\(s\) \['why'\]",
        ),
    ],
)
def test_an_event_that_fits_no_kind_is_refused_as_unknown_keys_are(event, message):
    with pytest.raises(ValueError, match=message):
        Event.from_dict(event)
    state = new_state(run_id="r", profile=get_profile("quick"), router=MemoryRouter(), stack={}, now=1.0)
    kube = FakeConfigMaps()
    kube.data = {"state.json": json.dumps({**state.to_dict(), "events": [event]})}
    with pytest.raises(ValueError, match="unreadable rollout state"):
        ConfigMapStateStore(namespace="ml", name="demo-rollout-state", kube=kube).load()

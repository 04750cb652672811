"""pause / resume / promote against the state machine (stand-ins at its own interfaces, a real state
file), and against a ConfigMap store that another writer changes between our read and our write."""

import pytest
from rollout_fakes import (
    PROFILE,
    FakeConfigMaps,
    ManualClock,
    MemoryRouter,
    ScriptedGates,
    advance,
    by_hand,
    make_controller,
    stand_in_site,
)

from rollout.controller import (
    Refused,
    RolloutController,
    new_state,
    pause_locked,
    promote_locked,
    resume_locked,
)
from rollout.events import Pause, Promotion, Resume, WeightsSet
from rollout.hooks import Hook
from rollout.plan import Phase
from rollout.routers.base import WeightCheck, Weights
from rollout.run import pause, promote
from rollout.state import ConfigMapStateStore, StateConflict


def test_pause_holds_past_the_bake_while_recording_and_resume_goes_on(tmp_path):
    controller, router, clock = make_controller(tmp_path, ScriptedGates("pass"))
    store = controller.store
    advance(controller, clock, 2)  # step 1 entered, one evaluation
    by_hand(store, pause_locked, clock, who="alice", reason="checking a dashboard")
    clock.tick(PROFILE.interval_s)
    state = advance(controller, clock, 6)  # far past the 30 s bake, every evaluation passing
    assert state.phase is Phase.PROGRESSING and state.step_index == 0 and router.weights == Weights(90, 10)
    assert len(state.evaluations) == 7  # the gates kept being recorded while paused
    assert state.paused["who"] == "alice" and state.last_event(Pause).reason == "checking a dashboard"
    # a second pause is recorded but changes nothing
    again = by_hand(store, pause_locked, clock, who="bob", reason="me too")
    assert again.paused["who"] == "alice" and again.last_event(Pause).changed is False
    by_hand(store, resume_locked, clock, who="alice", reason="looks fine")
    clock.tick(PROFILE.interval_s)
    state = controller.advance()  # the next interval: the step, long baked, passes
    assert state.step_index == 1 and state.paused is None and router.weights == Weights(50, 50)
    assert state.last_event(Resume).who == "alice"


def test_a_failing_gate_still_reverts_a_paused_rollout(tmp_path):
    controller, router, clock = make_controller(tmp_path, ScriptedGates("pass", "pass", "fail"))
    store = controller.store
    advance(controller, clock, 2)
    by_hand(store, pause_locked, clock, who="alice", reason="hold")
    clock.tick(PROFILE.interval_s)
    state = advance(controller, clock, 2)
    assert state.phase is Phase.REVERTED and router.weights == Weights(100, 0)


def test_paused_inconclusive_evaluations_do_not_count_towards_reverting(tmp_path):
    controller, _router, clock = make_controller(tmp_path, ScriptedGates("inconclusive"))
    store = controller.store
    advance(controller, clock, 1)
    by_hand(store, pause_locked, clock, who="alice", reason="hold")
    clock.tick(PROFILE.interval_s)
    state = advance(controller, clock, 8)  # would revert after the bake plus 2 if not paused
    assert state.phase is Phase.PROGRESSING and state.inconclusive_count == 0


def test_promote_is_refused_while_a_gate_fails_and_forced_is_recorded(tmp_path):
    hook_log = tmp_path / "promoted.log"
    hooks = (Hook(kind="promotion", command=("sh", "-c", f"echo $ROLLOUT_REASON >> {hook_log}")),)
    # the gate fails once: hysteresis holds it as inconclusive, but promoting past it needs --force
    controller, router, clock = make_controller(tmp_path, ScriptedGates("pass", "held"), hooks=hooks)
    store = controller.store
    state = advance(controller, clock, 3)
    assert state.phase is Phase.PROGRESSING and state.evaluations[-1].verdict == "inconclusive"
    kwargs = {"router": router, "hooks": hooks, "who": "carol", "reason": "release train"}
    with pytest.raises(Refused, match="failing gate.*p99_latency.*--force"):
        by_hand(store, promote_locked, clock, force=False, **kwargs)
    assert router.weights == Weights(90, 10) and store.load().phase is Phase.PROGRESSING  # untouched
    state = by_hand(store, promote_locked, clock, force=True, **kwargs)
    assert state.phase is Phase.PROMOTED and state.decided_by == "carol" and router.weights == Weights(0, 100)
    assert "forced past failing gate(s) p99_latency" in state.reason
    assert state.last_event(Promotion).forced == ("p99_latency",)
    assert hook_log.read_text().strip() == "release train"
    clock.tick(PROFILE.interval_s)
    assert controller.advance().phase is Phase.PROMOTED  # the orchestrator sees it and stops
    with pytest.raises(Refused, match="is promoted: nothing to pause"):
        by_hand(store, pause_locked, clock, who="alice", reason="late")


def test_promote_with_passing_gates_skips_the_remaining_steps(tmp_path):
    controller, router, clock = make_controller(tmp_path, ScriptedGates("pass"))
    store = controller.store
    advance(controller, clock, 2)
    state = by_hand(store, promote_locked, clock, router=router, hooks=(), who="c", reason="r", force=False)
    assert state.phase is Phase.PROMOTED and state.last_event(Promotion).forced == ()
    assert router.history[-1] == (0, 100) and "promoted by hand at 10%: r" == state.reason


SET_AGAIN = WeightsSet(
    2.0,
    step=0,
    weights=Weights(50, 50),
    after_check=WeightCheck.UNKNOWN,
    reason="restarted",
    verified="matches",
)


def test_a_concurrent_orchestrator_write_is_neither_lost_nor_overwritten():
    kube, router = FakeConfigMaps(), MemoryRouter(Weights(50, 50))

    def configmap():  # each process opens the store afresh
        return ConfigMapStateStore(namespace="ml", name="demo-rollout-state", kube=kube)

    site = stand_in_site(router, configmap(), held=True)
    orchestrator = configmap()
    orchestrator.save(new_state(run_id="r", profile=PROFILE, router=router, stack={}, now=1.0))

    def orchestrator_interval():  # lands between the command's read and its write
        orchestrator.save(orchestrator.load().with_event(SET_AGAIN))

    kube.before_write = orchestrator_interval
    paused = pause(site, who="alice", reason="hold", say=lambda _line: None)
    recorded = configmap().load()
    assert recorded.paused["who"] == "alice" == paused.paused["who"]
    assert [type(e) for e in recorded.events] == [WeightsSet, Pause]  # both writes kept

    kube.before_write = orchestrator_interval
    promoted = promote(site, reports_dir=None, who="bob", reason="ship", say=lambda _line: None)
    recorded = configmap().load()
    assert (
        recorded.phase is Phase.PROMOTED
        and promoted.decided_by == "bob"
        and router.weights == Weights(0, 100)
    )
    assert [type(e) for e in recorded.events] == [WeightsSet, Pause, WeightsSet, Promotion]


class RollbackLandsBeforeConverging(MemoryRouter):
    """A rollback by hand landing between the orchestrator's read and its weight check (one-shot)."""

    def __init__(self, weights, rollback):
        super().__init__(weights)
        self.rollback = rollback

    def verify_weights(self, expected):
        if self.rollback is not None:
            rollback, self.rollback = self.rollback, None
            rollback()
        return super().verify_weights(expected)


def test_an_interval_racing_a_rollback_by_hand_leaves_the_rollbacks_weights():
    from rollout.controller import rollback_locked

    kube = FakeConfigMaps()
    site_store = ConfigMapStateStore(namespace="ml", name="demo-rollout-state", kube=kube)

    def by_hand():
        store = ConfigMapStateStore(namespace="ml", name="demo-rollout-state", kube=kube)
        state = rollback_locked(
            store.load(), router=router, hooks=(), who="alice", reason="pager", outcome=Phase.ABORTED, now=5.0
        )
        store.save(state)

    router = RollbackLandsBeforeConverging(Weights(100, 0), None)
    started = new_state(run_id="r", profile=PROFILE, router=router, stack={}, now=0.0)
    site_store.save(started)
    clock = ManualClock(0.0)
    controller = RolloutController(store=site_store, router=router, gates=ScriptedGates("pass"), clock=clock)
    controller.advance()  # enters step 1 at 90/10
    router.rollback = by_hand  # armed for the next interval
    clock.tick(PROFILE.interval_s)
    with pytest.raises(StateConflict):
        controller.advance()  # saw 100/0, put 90/10 back, then lost the save to the rollback
    assert router.weights == Weights(100, 0) and router.history[-2:] == [(90, 10), (100, 0)]
    assert site_store.load().phase is Phase.ABORTED
    clock.tick(PROFILE.interval_s)
    assert controller.advance().phase is Phase.ABORTED and router.weights == Weights(100, 0)

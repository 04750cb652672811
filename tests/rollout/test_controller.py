"""The state machine against stand-ins at its own interfaces (router, gates, clock), with a real state file."""

import json

import pytest
from rollout_fakes import (
    PROFILE,
    MemoryRouter,
    ScriptedGates,
    advance,
    advance_until,
    make_controller,
    run_until_terminal,
)

from gates.sequential import Looks
from rollout.controller import RolloutController, new_state, resume_locked
from rollout.events import Pause, Rollback, StepPassed, WeightsSet
from rollout.hooks import Hook
from rollout.plan import Phase
from rollout.routers.base import RouterUnavailable, WeightCheck, Weights
from rollout.state import KEPT_PER_STEP, FileStateStore


def test_passing_gates_promote_through_every_step_after_each_bake(tmp_path):
    gates = ScriptedGates("pass")
    controller, router, clock = make_controller(tmp_path, gates)
    state = run_until_terminal(controller, clock)
    assert state.phase is Phase.PROMOTED and state.outcome is Phase.PROMOTED
    assert router.history == [(90, 10), (50, 50), (0, 100)]
    passed = [e for e in state.events if isinstance(e, StepPassed)]
    assert [e.canary_weight for e in passed] == [10, 50, 100]
    # No step passed before its bake: 30 s at 10% is 3 intervals.
    first_step = [e for e in state.evaluations if e.step == 0]
    assert len(first_step) == 3
    assert first_step[0].window[0] == pytest.approx(first_step[0].at - PROFILE.interval_s + PROFILE.settle_s)


def test_each_evaluation_is_told_the_looks_its_step_may_pass_at(tmp_path):
    # A pass counts from the bake to the maximum bake (3x), one look per interval, each window from the
    # step's start less its settling: the held step's pass bound is taken over those (gates/sequential.py).
    gates = ScriptedGates("pass")
    controller, _, clock = make_controller(tmp_path, gates)
    run_until_terminal(controller, clock)
    looks = {call["weights"].canary: call["looks"] for call in gates.calls}
    assert looks == {
        10: Looks(28.0, 88.0, 10.0),
        50: Looks(18.0, 58.0, 10.0),
        100: Looks(10.0, 28.0, 10.0),  # a bake shorter than its settling and one interval: one interval
    }


def test_a_failed_gate_reverts_at_once_and_names_the_gate(tmp_path):
    gates = ScriptedGates("pass", "pass", "pass", "fail", failing_gate="memory_leak")
    controller, router, clock = make_controller(tmp_path, gates)
    state = run_until_terminal(controller, clock)
    assert state.phase is Phase.REVERTED and state.outcome is Phase.REVERTED
    assert "memory_leak" in state.reason and "50% canary" in state.reason
    assert router.weights == Weights(100, 0)
    rollback = [e for e in state.events if isinstance(e, Rollback)]
    assert rollback[0].who == "rollout" and rollback[0].weights_before == Weights(50, 50)


def test_inconclusive_holds_for_evidence_then_pauses_and_never_promotes(tmp_path):
    # Inconclusive through the 30 s bake and up to the 90 s maximum (3x), then passing: too late.
    gates = ScriptedGates(*["inconclusive"] * 9, "pass")
    controller, router, clock = make_controller(tmp_path, gates)
    state = advance_until(controller, clock, lambda s: s.paused is not None)
    assert state.phase is Phase.PROGRESSING and state.paused["who"] == "rollout"
    assert "maximum bake of 90s" in state.paused["reason"] and "p99_latency" in state.paused["reason"]
    assert clock() - state.step_started_at == 90.0 and len(state.evaluations) == 9
    assert isinstance(state.events[-1], Pause)
    for _ in range(5):  # the gates pass now; paused, the rollout keeps judging and decides nothing
        clock.tick(PROFILE.interval_s)
        state = controller.advance()
    assert state.paused is not None and len(state.evaluations) == 14
    assert not any(isinstance(e, StepPassed) for e in state.events) and router.history == [(90, 10)]
    # A person resumes: the next pass promotes the step; a new maximum bake counts from the resume.
    with controller.store.locked():
        controller.store.save(
            resume_locked(controller.store.load(), who="alice", reason="bake on", now=clock())
        )
    resumed_at = clock() - state.step_started_at
    state = run_until_terminal(controller, clock)
    assert state.phase is Phase.PROMOTED and router.history == [(90, 10), (50, 50), (0, 100)]
    # Its pass bound covers the looks the resume added: the step's window kept growing through them.
    first_step = [call["looks"] for call in gates.calls if call["weights"].canary == 10]
    assert first_step[0] == Looks(28.0, 88.0, 10.0) and first_step[-1] == Looks(28.0, resumed_at + 88.0, 10.0)


def test_a_step_held_for_evidence_keeps_queries_and_bounds_on_its_latest_evaluation_only(tmp_path):
    controller, _, clock = make_controller(tmp_path, ScriptedGates("inconclusive"))
    state = advance_until(controller, clock, lambda s: len(s.evaluations) == 6)
    gates = [e.evaluation.gate("p99_latency") for e in state.evaluations]
    assert [bool(g.queries) for g in gates] == [False] * 5 + [True]
    assert [g.threshold for g in gates] == [{}] * 5 + [{"max": 1.0}]
    assert [g.reason for g in gates] == [""] * 5 + ["p99_latency said inconclusive"]
    assert all(g.verdict == "inconclusive" and g.samples for g in gates)  # what was judged stays
    saved = controller.store.load()  # and so it is stored
    assert not saved.evaluations[0].evaluation.gate("p99_latency").queries


def test_a_step_held_for_long_keeps_its_latest_evaluations_and_counts_those_dropped(tmp_path):
    controller, _, clock = make_controller(tmp_path, ScriptedGates("inconclusive"))
    state = advance_until(controller, clock, lambda s: s.evaluations_dropped == 5)  # paused after 90 s
    assert state.paused is not None and len(state.evaluations) == KEPT_PER_STEP
    assert state.evaluations[-1].at == clock() and state.evaluations[0].at == clock() - 39 * 10
    assert controller.store.load().evaluations_dropped == 5


def test_a_failure_while_paused_for_evidence_still_reverts(tmp_path):
    gates = ScriptedGates(*["inconclusive"] * 9, "fail")
    controller, router, clock = make_controller(tmp_path, gates)
    state = run_until_terminal(controller, clock)
    assert state.phase is Phase.REVERTED and "p99_latency" in state.reason
    assert any(isinstance(e, Pause) and e.who == "rollout" for e in state.events)
    assert router.history == [(90, 10), (100, 0)]


def test_a_pass_resets_the_inconclusive_count(tmp_path):
    gates = ScriptedGates("pass", "pass", "pass", "inconclusive", "pass", "pass", "pass")
    controller, _, clock = make_controller(tmp_path, gates)
    state = run_until_terminal(controller, clock)
    assert state.phase is Phase.PROMOTED


def test_an_evaluator_error_is_inconclusive_not_a_pass(tmp_path):
    gates = ScriptedGates(ConnectionError("prometheus down"))
    controller, router, clock = make_controller(tmp_path, gates)
    state = advance_until(controller, clock, lambda s: s.paused is not None)
    assert state.phase is Phase.PROGRESSING and router.history == [(90, 10)]
    assert all(e.verdict == "inconclusive" for e in state.evaluations)
    assert "prometheus down" in state.evaluations[0].evaluation.error


def test_restart_resumes_the_step_and_reapplies_weights_the_router_lost(tmp_path):
    gates = ScriptedGates("pass")
    controller, router, clock = make_controller(tmp_path, gates)
    advance(controller, clock, 4)  # into the 50% step (entered at t=30 s)
    clock.tick(PROFILE.interval_s)  # the clock at 40 s
    saved = controller.store.load()
    assert saved.step_index == 1
    router.weights = Weights(100, 0)  # as if a fresh router process came up
    fresh = RolloutController(store=controller.store, router=router, gates=gates, clock=clock)
    state = fresh.advance()
    assert state.step_index == 1 and state.step_started_at == saved.step_started_at
    assert router.weights == Weights(50, 50)
    last = state.events[-1]
    assert isinstance(last, WeightsSet) and last.after_check is WeightCheck.DIFFERS


def test_rollback_from_any_state_is_idempotent_and_records_who_and_why(tmp_path):
    calls = tmp_path / "hook-calls"
    hook = Hook(kind="rollback", command=("sh", "-c", f"echo $ROLLOUT_REASON >> {calls}"))
    controller, router, clock = make_controller(tmp_path, ScriptedGates("pass"), hooks=(hook,))
    advance(controller, clock, 2)
    first = controller.rollback(who="alice", reason="pager went off")
    second = controller.rollback(who="bob", reason="double-check")
    assert router.weights == Weights(100, 0)
    assert first.phase is Phase.ABORTED and first.decided_by == "alice" and first.reason == "pager went off"
    assert second.phase is Phase.ABORTED and second.decided_by == "alice"  # the outcome is not rewritten
    rollbacks = [e for e in second.events if isinstance(e, Rollback)]
    assert [(e.who, e.changed) for e in rollbacks] == [("alice", True), ("bob", False)]
    assert calls.read_text().splitlines() == ["pager went off"]  # hooks ran once
    assert controller.advance().phase is Phase.ABORTED  # a terminal rollout stays put


def test_rollback_that_cannot_reach_the_router_raises_and_records_nothing(tmp_path):
    controller, router, clock = make_controller(tmp_path, ScriptedGates("pass"))
    controller.advance()
    router.down = True
    with pytest.raises(RouterUnavailable):
        controller.rollback(who="alice", reason="x")
    assert controller.store.load().phase is Phase.PROGRESSING


def test_failed_pre_step_hook_reverts(tmp_path):
    hook = Hook(kind="pre-step", command=("sh", "-c", "exit 3"), steps=(50,))
    controller, router, clock = make_controller(tmp_path, ScriptedGates("pass"), hooks=(hook,))
    state = run_until_terminal(controller, clock)
    assert state.phase is Phase.REVERTED and "pre-step hook" in state.reason and "exit 3" in state.reason
    assert router.weights == Weights(100, 0)
    assert router.history == [(90, 10), (100, 0)]  # never moved to 50%


def test_state_file_is_json_and_rejects_unknown_keys(tmp_path):
    controller, _, _ = make_controller(tmp_path, ScriptedGates("pass"))
    controller.advance()
    path = controller.store.path
    data = json.loads(path.read_text())
    assert data["phase"] == "progressing" and data["profile"]["steps"] == [10, 50, 100]
    data["surprise"] = 1
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="surprise"):
        controller.store.load()


def test_each_evaluation_gets_the_failure_streaks_of_its_step_even_after_a_restart(tmp_path):
    gates = ScriptedGates("held", "held", "pass")
    controller, router, clock = make_controller(tmp_path, gates)
    advance(controller, clock, 3)
    fresh = RolloutController(store=controller.store, router=router, gates=gates, clock=clock)
    clock.tick(PROFILE.interval_s)
    fresh.advance()  # third evaluation of step 1 (then the step passes)
    clock.tick(PROFILE.interval_s)
    fresh.advance()  # first evaluation of step 2
    assert [c["streaks"].get("p99_latency") for c in gates.calls] == [None, 1, 2, None]
    assert gates.calls[3]["streaks"] == {}  # a new step starts its streaks afresh


def test_drive_holds_while_the_router_is_unreachable_then_gives_up(tmp_path):
    import threading

    from rollout.run import ROUTER_RETRIES, TerminalProgress, drive

    fast = PROFILE.with_overrides(interval_s=0.01, settle_s=0.0, bake_s=(0.0, 0.0, 0.0))
    router = MemoryRouter()
    router.down = True
    store = FileStateStore(tmp_path / "state")
    store.save(new_state(run_id="r", profile=fast, router=router, stack={}, now=0.0))
    lines = []
    controller = RolloutController(store=store, router=router, gates=ScriptedGates("pass"))
    with pytest.raises(RouterUnavailable):
        drive(controller, TerminalProgress(lines.append), threading.Event())
    assert sum("router unavailable" in line for line in lines) == ROUTER_RETRIES
    router.down = False  # it comes back: the same state resumes and promotes
    assert drive(controller, TerminalProgress(lines.append), threading.Event()).phase is Phase.PROMOTED


def _holder(name, clock, lease_s=60.0):
    import os
    import socket

    from rollout.state import Holder

    return Holder(
        id=name, host=socket.gethostname(), pid=os.getpid(), pod=None, heartbeat_at=clock(), lease_s=lease_s
    )


def test_a_second_orchestrator_steers_only_once_the_first_ones_lease_ran_out(tmp_path):
    from rollout.controller import LeaseLost

    first, router, clock = make_controller(tmp_path, ScriptedGates("pass"))
    first.holder = _holder("first", clock)
    assert first.advance().holder.id == "first"
    second = RolloutController(
        store=first.store,
        router=router,
        gates=ScriptedGates("pass"),
        clock=clock,
        holder=_holder("second", clock),
    )
    clock.tick(PROFILE.interval_s)
    first.advance()  # renews its heartbeat
    with pytest.raises(LeaseLost, match="pid"):
        second.advance()
    assert first.store.load().holder.id == "first"
    clock.tick(61.0)  # the first goes silent past its lease
    assert second.advance().holder.id == "second"
    with pytest.raises(LeaseLost):  # the first, back, finds the rollout taken and steers no more
        first.advance()
    assert second.release().holder is None


def test_status_says_when_nobody_steers_and_what_to_run(tmp_path):
    from dataclasses import replace

    from rollout.cli import orchestrator_status

    controller, _, clock = make_controller(tmp_path, ScriptedGates("pass"))
    controller.holder = _holder("live", clock)
    state = controller.advance()
    live = orchestrator_status(state, clock())
    assert live is not None and live["gone"] is False and "last heartbeat 0s ago" in live["text"]
    stale = orchestrator_status(state, clock() + 61.0)
    assert stale is not None and stale["gone"] is True and stale["text"].startswith("GONE (")
    assert "make rollback" in stale["text"] and "python -m rollout run" in stale["text"]
    dead = replace(state, holder=replace(state.holder, pid=2**22 + 1))  # no such process on this host
    assert orchestrator_status(dead, clock())["gone"] is True
    nobody = orchestrator_status(replace(state, holder=None), clock())
    assert nobody is not None and nobody["gone"] is True and nobody["text"].startswith("none holds")
    assert orchestrator_status(replace(state, phase=Phase.PROMOTED), clock()) is None


class LaggingRouter(MemoryRouter):
    """Configured at once, in effect only after `lag` verifications (a gateway controller's status)."""

    def __init__(self, lag):
        super().__init__()
        self.lag = lag

    def verify_weights(self, expected):
        from rollout.routers.base import Verification, WeightCheck

        if self.weights == expected and self.lag > 0:
            self.lag -= 1
            return Verification(WeightCheck.DIFFERS, "gateway has not reported generation 2 yet")
        return super().verify_weights(expected)


def test_a_weight_change_waits_until_in_effect_before_the_evaluation(tmp_path):
    """The one door for traffic waits for the gateway's report: an evaluation right after the change judges
    the new split instead of holding."""
    gates = ScriptedGates("pass")
    controller, router, clock = make_controller(tmp_path, gates, router=LaggingRouter(lag=3))
    state = controller.advance()  # step 1: set, then verified three times until the gateway reports it
    (change,) = [e for e in state.events if isinstance(e, WeightsSet)]
    assert change.verified == "matches" and router.lag == 0
    clock.tick(PROFILE.interval_s)
    controller.advance()
    assert len(gates.calls) == 1 and gates.calls[0]["weights"] == Weights(90, 10)


def test_an_evaluation_holds_while_the_weights_are_not_in_effect_and_says_why(tmp_path):
    gates = ScriptedGates("pass")
    controller, router, clock = make_controller(tmp_path, gates, router=LaggingRouter(lag=2))
    controller.in_effect_timeout_s = 0.0  # the gateway reports later than the change waits for it
    controller.advance()  # step 1 set: 90/10 configured, not yet in effect
    clock.tick(PROFILE.interval_s)
    state = controller.advance()
    assert gates.calls == []  # nothing judged while traffic is not split as the step says
    held = state.evaluations[-1]
    assert held.verdict == "inconclusive" and "not reported generation 2" in held.evaluation.error
    assert router.history == [(90, 10)]  # configured once: re-setting would not make it apply sooner
    clock.tick(PROFILE.interval_s)
    controller.advance()
    assert len(gates.calls) == 1  # in effect now: judged

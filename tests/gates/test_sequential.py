"""A step held for evidence: the pass bound that holds across its looks (gates/sequential.py)."""

from dataclasses import replace

import numpy as np
import pytest
from scipy.stats import norm

from gates import parse_gate_document
from gates.kinds import KINDS
from gates.kinds import error_rate as error_kind
from gates.provider import Sample
from gates.record import Verdict
from gates.sequential import Looks, crossing_probability, judge_held, pass_confidence
from tests.gates.test_evaluate import FakeProvider, run

# The default profile's first step: passes count from its bake (210 s) to its maximum bake (900 s), one
# look every 15 s, each window from the step's start less 3 s of settling.
FIRST_STEP = Looks(207.0, 897.0, 15.0)
ERRORS_DOC = {
    "version": 1,
    "gates": [
        {
            "name": "errors",
            "kind": "error_rate",
            "arms": ["canary"],
            "max": 0.001,
            "min_samples": 300,
            "confidence": 0.99,
            "queries": {"errors": 'errors{arm="${arm}"}', "requests": 'requests{arm="${arm}"}'},
        }
    ],
}
ERRORS = parse_gate_document(ERRORS_DOC, "local").gates[0]
MEMORY = parse_gate_document(
    {"version": 1, "gates": [{"name": "memory", "kind": "memory_leak", "queries": {"memory": "m"}}]},
    "local",
).gates[0]


def z_of(confidence):
    return float(norm.isf((1 - confidence) / 2))


def bound(gate, looks):
    return pass_confidence(gate, looks, KINDS[gate.kind])


def simulated_crossing(z, information, paths, rng):
    """A statistic with no drift, standardized, looked at these information levels: the share of paths that
    exceed z at some look (a Brownian motion at the levels, divided by the square root of each)."""
    levels = np.asarray(information, dtype=float)
    steps = np.diff(levels, prepend=0.0)
    walk = np.cumsum(rng.normal(0.0, 1.0, (paths, levels.size)) * np.sqrt(steps), axis=1)
    return float(np.mean((walk / np.sqrt(levels)).max(axis=1) >= z))


@pytest.mark.parametrize("gate", [ERRORS, MEMORY], ids=["counts", "slope"])
def test_the_held_bound_keeps_a_canary_at_the_harm_within_its_budget_across_the_looks(gate):
    information = KINDS[gate.kind].information
    levels = [information(gate, w) for w in FIRST_STEP.windows()]
    alpha = (1 - gate.confidence) / 2 / KINDS[gate.kind].pass_intervals  # each interval's share
    held = z_of(bound(gate, FIRST_STEP))
    assert crossing_probability(held, levels) == pytest.approx(alpha, rel=1e-3)
    rng = np.random.default_rng(7)
    # One look's bound is crossed at some look of the step several times more often than its budget ...
    assert simulated_crossing(z_of(gate.confidence), levels, 40_000, rng) > 4 * alpha
    # ... the held bound within it. Siegmund's approximation against 40,000 paths (standard error about 0.05%
    # at 1%): it may err by a quarter of the budget, no more.
    assert simulated_crossing(held, levels, 40_000, rng) <= 1.25 * alpha


def test_one_look_keeps_the_gates_confidence_and_more_looks_a_slope_or_two_intervals_need_a_stricter_one():
    assert bound(ERRORS, None) == ERRORS.confidence
    assert bound(ERRORS, Looks(300.0, 300.0, 15.0)) == ERRORS.confidence
    # the leak gate passes on either of two intervals: in one look too, each at half the budget
    assert bound(MEMORY, None) == pytest.approx(1 - (1 - MEMORY.confidence) / 2)
    short, long = Looks(207.0, 447.0, 15.0), FIRST_STEP
    assert ERRORS.confidence < bound(ERRORS, short) < bound(ERRORS, long) < 1
    # the same looks span 5.7x the span a slope judges after its warm-up, and its evidence grows as the cube
    slope = replace(MEMORY, confidence=ERRORS.confidence)
    assert bound(slope, long) > bound(ERRORS, long)


def test_looks_refuse_an_empty_or_backward_schedule():
    assert FIRST_STEP.count == 47 and FIRST_STEP.windows()[-1] == 897.0
    for bad in ((0.0, 10.0, 1.0), (20.0, 10.0, 1.0), (10.0, 20.0, 0.0)):
        with pytest.raises(ValueError, match="looks need"):
            Looks(*bad)


def errors_judge(errors, requests):
    return lambda gate: error_kind.judge(
        gate, {"canary": errors, "baseline": 0.0}, {"canary": requests, "baseline": requests}
    )


def test_a_pass_of_one_look_is_inconclusive_in_a_held_step_until_the_strict_bound_clears_the_harm():
    held = bound(ERRORS, FIRST_STEP)
    # no error in 6,000 requests excludes 0.1% at 99% (one look) but not at the held bound (~7,300 needed)
    assert errors_judge(0, 6000)(ERRORS).verdict is Verdict.PASS
    j = judge_held(errors_judge(0, 6000), ERRORS, held)
    assert j.verdict is Verdict.INCONCLUSIVE
    assert "passes one look but not a step's many" in j.reason and f"{held:.4g}" in j.reason
    assert j.more_data == pytest.approx(7300 / 6000, rel=0.03)
    assert judge_held(errors_judge(0, 8000), ERRORS, held).verdict is Verdict.PASS
    # a failure is judged as one look judges it
    failing = errors_judge(30, 6000)
    assert judge_held(failing, ERRORS, held) == failing(ERRORS) and failing(ERRORS).verdict is Verdict.FAIL


def test_evaluate_judges_a_pass_of_a_held_step_on_its_bound_and_fetches_each_query_once():
    answers = {
        'errors{arm="canary"}': [Sample({}, 0.0)],
        'errors{arm="baseline"}': [Sample({}, 0.0)],
        'requests{arm="canary"}': [Sample({}, 6000.0)],
        'requests{arm="baseline"}': [Sample({}, 6000.0)],
    }

    def judged(looks):
        provider = FakeProvider(answers)
        return run(provider, doc=ERRORS_DOC, looks=looks).gates[0], provider.queries

    single, queries = judged(None)
    assert single.verdict == "pass" and len(queries) == 4
    held, queries = judged(FIRST_STEP)
    assert held.verdict == "inconclusive" and "held step's pass bound" in held.reason
    assert held.more_s == pytest.approx(600 * (7300 / 6000 - 1), rel=0.15)
    assert len(queries) == 4  # judged twice, fetched once

"""A step held for evidence looks again and again: the pass bound that holds across all its looks.

A rollout step judges its growing window once per interval from the end of its bake to its maximum bake,
and promotes at the first look that passes. Each look alone passes a canary with the declared harm with
probability (1 - confidence) / 2, but a step of many looks gives that canary many chances: measured by
`make bench-gates`, a leak at the declared rate passed some look of the default profile's first step in
22.5% of 400 runs (3.0% on this bound). So within a held step a pass rests on a stricter bound, chosen so that a statistic at the
harm crosses it at any of the step's looks with probability (1 - confidence) / 2 at most.

The crossing probability is Siegmund's approximation for repeated significance tests (Sequential Analysis,
1985, ch. 4): a standardized estimate follows a Brownian motion divided by the square root of its
information, which crosses a bound z at some look between information I_0 and I_n with probability

    1 - Phi(z) + z phi(z) / 2 * sum_i nu(z sqrt(ds_i)) ds_i,    ds_i = ln(I_i / I_(i-1)),

where nu(x) ~ exp(-0.583 x) corrects for looking at discrete times. Information grows as the window does
for counts and quantiles, and as its cube for a slope (`GateKind.information`): a slope's step sees a far
wider range of evidence and pays more for it. A kind that passes on either of two intervals (the leak
gate: the canary's own slope, or its excess over the baseline's) gives each half of the budget, in one
look as in many. Fails are unaffected: they keep their own confidence and the hysteresis of consecutive
failures.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

from scipy import stats as sps

from gates import judge as J
from gates.kinds.base import GateKind
from gates.spec import GateSpec

DISCRETE_LOOKS = 0.583  # Siegmund's nu(x) ~ exp(-0.583 x): the overshoot of a bound between looks


@dataclass(frozen=True)
class Looks:
    """Where a step's passes count: windows of `first_s` up to `last_s` seconds, one every `every_s`."""

    first_s: float
    last_s: float
    every_s: float

    def __post_init__(self) -> None:
        if not (self.first_s > 0 and self.every_s > 0 and self.last_s >= self.first_s):
            raise ValueError(f"looks need 0 < first_s <= last_s and every_s > 0, got {self}")

    @property
    def count(self) -> int:
        return int((self.last_s - self.first_s) / self.every_s + 1e-9) + 1

    def windows(self) -> list[float]:
        return [self.first_s + i * self.every_s for i in range(self.count)]


def crossing_probability(z: float, information: list[float]) -> float:
    """The chance that a statistic with no drift exceeds `z` at some look, looks at these information
    levels (increasing): Siegmund's approximation with the discrete-look correction."""
    p = float(sps.norm.sf(z))
    for before, after in zip(information, information[1:], strict=False):
        if before > 0 and after > before:
            ds = math.log(after / before)
            p += z * float(sps.norm.pdf(z)) / 2.0 * math.exp(-DISCRETE_LOOKS * z * math.sqrt(ds)) * ds
    return p


def pass_confidence(gate: GateSpec, looks: Looks | None, kind: GateKind) -> float:
    """The two-sided confidence of the interval a pass rests on in a step with these `looks` (None: a
    single look), so that a canary at the harm passes at any of them with probability
    (1 - gate.confidence) / 2 at most: the gate's own for one look of a kind that passes on one interval;
    stricter for many looks (by how the kind's evidence grows with the window, `kind.information`), and
    for a kind that passes on any of several intervals (`kind.pass_intervals`), each of which gets an
    equal share of that probability."""
    alpha = (1.0 - gate.confidence) / 2.0 / kind.pass_intervals
    low, high = float(sps.norm.isf(alpha)), 12.0
    if looks is None or looks.count < 2:
        return 1.0 - 2.0 * alpha
    levels = [kind.information(gate, w) for w in looks.windows()]
    if crossing_probability(low, levels) <= alpha:
        return 1.0 - 2.0 * alpha
    while high - low > 1e-4:
        mid = (low + high) / 2.0
        low, high = (mid, high) if crossing_probability(mid, levels) > alpha else (low, mid)
    return 1.0 - 2.0 * float(sps.norm.sf(high))


def judge_held(judge: Callable[[GateSpec], J.Judgement], gate: GateSpec, confidence: float) -> J.Judgement:
    """`judge` the gate; a pass stands only if it also passes with its interval at `confidence` (the held
    step's pass bound, `pass_confidence`), else it is inconclusive with that interval's reason and the
    data it still needs."""
    first = judge(gate)
    if first.verdict is not J.PASS or confidence <= gate.confidence:
        return first
    strict = judge(replace(gate, confidence=confidence))
    if strict.verdict is J.PASS:
        return first
    reason = (
        f"passes one look but not a step's many: judged at {confidence:.4g}, the held step's pass bound, "
        f"{strict.reason}"
    )
    return replace(strict, verdict=J.INCONCLUSIVE, reason=reason)

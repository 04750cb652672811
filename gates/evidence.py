"""How long a healthy canary takes to give a gate the evidence to pass: the plan before a run.

A gate passes only when its interval excludes the harm it must catch (gates/judge.py), so how long a step
must bake depends on the rate, the canary's share and the gate's bounds. Each kind says what a healthy
canary's data look like after `seconds` of a step (`GateKind.healthy`): no errors, every arm serving its
share, both arms' latency drawn from one distribution, flat memory. The kind's own judge decides on
them, so the plan uses exactly the variance model the gates use. What the data cannot say by themselves
are `Assumptions`: the spread of the latency tail and of a pod's memory, measured on the serving stack
(docs/gates.md says how).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from gates.judge import Judgement
from gates.record import Verdict
from gates.spec import GateSpec

LIMIT_S = 24 * 3600.0  # a plan longer than a day is no plan: "never" within it


@dataclass(frozen=True)
class Assumptions:
    """What a healthy canary's data look like beyond counts. The defaults are measured on the embedded
    backends (`make canary`): a GPU server's tail and memory differ, so measure yours."""

    # The log latency's sparsity at the judged quantile, d log Q / d(-log(1 - q)): it sets how fast a
    # P99's interval narrows. For an exponential log-tail it equals the mean excess of log latency over
    # its 90th percentile, which is how the default was measured (0.16-0.34 under `make canary`); a
    # lighter tail has less (a lognormal's is 0.79 of its mean excess), so the plan errs long there.
    tail_scale: float = 0.25
    # Samples per request of each latency field: inter-token latency has one per output token but one.
    samples_per_request: Mapping[str, float] | None = None
    # The latency gates judge exact load-test samples (the local site passes them): the absolute bound then
    # rests on the P99's own interval, assumed well inside the bound. Otherwise on Prometheus histograms,
    # whose bound is judged by counting requests above it (no request above: 0 of n must exclude 1%), and
    # whose buckets are assumed fine enough for the ratio (sglang's defaults are not: docs/gates.md).
    latency_samples: bool = False
    # Standard deviation of one pod's memory around its trend, MiB, and the pods (processes) per arm.
    memory_noise_mib: float = 1.0
    pods_per_arm: int = 2

    def per_request(self, field: str) -> float:
        return float((self.samples_per_request or {}).get(field, 1.0))


@dataclass(frozen=True)
class Expectation:
    """A healthy canary after `seconds` of a step at `rate_rps` offered, split by `weights` (percent)."""

    seconds: float
    rate_rps: float
    weights: Mapping[str, float]
    assumptions: Assumptions

    def requests(self, arm: str) -> float:
        return self.rate_rps * self.weights.get(arm, 0.0) / 100.0 * self.seconds


@dataclass(frozen=True)
class GateEvidence:
    gate: str
    seconds: float | None  # from the step's start until the gate can pass (None: not within LIMIT_S)
    modelled: bool  # False: the kind has no model of healthy data (it is judged as it comes)
    judgement: Judgement | None  # the judgement at `seconds` (or at LIMIT_S when it never passes)


def time_to_pass(
    gate: GateSpec,
    healthy: Callable[[GateSpec, Expectation], Judgement] | None,
    *,
    rate_rps: float,
    weights: Mapping[str, float],
    assumptions: Assumptions,
) -> GateEvidence:
    """The shortest time into a step after which `gate` passes a healthy canary (1% resolution), by its
    kind's `healthy` judge (`gates.kinds.KINDS[gate.kind].healthy`; None: no model)."""
    if healthy is None:
        return GateEvidence(gate.name, 0.0, False, None)

    def judge(seconds: float) -> Judgement:
        return healthy(gate, Expectation(seconds, rate_rps, weights, assumptions))

    last = judge(LIMIT_S)
    if last.verdict is not Verdict.PASS:
        return GateEvidence(gate.name, None, True, last)
    low, high = 1.0, LIMIT_S
    if judge(low).verdict is Verdict.PASS:
        return GateEvidence(gate.name, low, True, judge(low))
    while high / low > 1.01:
        mid = (low * high) ** 0.5
        low, high = (low, mid) if judge(mid).verdict is Verdict.PASS else (mid, high)
    return GateEvidence(gate.name, high, True, judge(high))

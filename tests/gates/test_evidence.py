"""The evidence plan: how long a healthy canary takes to pass each gate, checked against the real judges
on simulated healthy data (the plan's model must be the gates' own)."""

import dataclasses
import math

import numpy as np
import pytest

from gates import judge as J
from gates import stats
from gates.config import load_gate_file
from gates.evidence import Assumptions, Expectation
from gates.evidence import time_to_pass as kind_time_to_pass
from gates.kinds import KINDS
from gates.memory_trend import memory_trends

GATES = {g.name: g for g in load_gate_file(None, profile="local").gates}
SPLIT = {"baseline": 90.0, "canary": 10.0}


def time_to_pass(gate, **kwargs):
    return kind_time_to_pass(gate, KINDS[gate.kind].healthy, **kwargs)


def test_error_rate_needs_the_requests_a_clopper_pearson_bound_needs():
    gate = GATES["error_rate"]  # max 0.1%, confidence 0.99
    evidence = time_to_pass(gate, rate_rps=20.0, weights=SPLIT, assumptions=Assumptions())
    # 0 errors in n requests: upper bound 1 - (0.005)^(1/n) < 0.001  <=>  n > ln(0.005) / ln(0.999)
    needed = math.log(0.005) / math.log(1 - 0.001)
    assert evidence.seconds == pytest.approx(needed / 2.0, rel=0.02)  # 2 req/s reach the canary
    assert evidence.judgement.verdict == "pass"


def test_a_gate_that_cannot_pass_within_a_day_says_never():
    gate = dataclasses.replace(GATES["error_rate"], params={**GATES["error_rate"].params, "max": 1e-6})
    evidence = time_to_pass(gate, rate_rps=1.0, weights=SPLIT, assumptions=Assumptions())
    assert evidence.seconds is None and evidence.judgement.verdict == "inconclusive"


def test_the_cpu_plan_waits_for_min_points_sub_windows():
    gate = GATES["cpu_utilisation"]  # 30 s sub-windows, 4 of them
    evidence = time_to_pass(gate, rate_rps=20.0, weights=SPLIT, assumptions=Assumptions())
    assert evidence.seconds == pytest.approx(120.0, rel=0.02) and evidence.judgement.verdict == "pass"
    early = KINDS["threshold"].healthy(gate, Expectation(90.0, 20.0, SPLIT, Assumptions()))
    assert early.verdict == "inconclusive" and early.more_data == pytest.approx(4 / 3)


def _judge_ratio(rng, n_canary, n_baseline, scale, gate):
    """The real latency judge on A/A samples whose log tail has mean excess `scale`."""
    canary = 0.1 * np.exp(rng.exponential(scale, n_canary))
    baseline = 0.1 * np.exp(rng.exponential(scale, n_baseline))
    q, conf = float(gate.params["quantile"]), gate.confidence
    estimates = {
        "canary": stats.harrell_davis_quantile(canary, q, conf),
        "baseline": stats.harrell_davis_quantile(baseline, q, conf),
    }
    j = J.judge_latency_quantile(
        estimates,
        quantile=q,
        arms=["canary"],
        max_seconds=None,
        max_ratio=float(gate.params["max_ratio"]),
        min_samples=int(gate.params["min_samples"]),
        confidence=conf,
        shift=stats.quantile_shift(canary, baseline, q, conf),
    )
    return j.verdict == "pass"


def test_the_latency_plan_matches_the_real_estimator_on_a_known_tail():
    gate = dataclasses.replace(
        GATES["latency_e2e_p99"], params={**GATES["latency_e2e_p99"].params, "max_seconds": None}
    )
    scale, rate, split = 0.2, 40.0, {"baseline": 50.0, "canary": 50.0}
    planned = time_to_pass(gate, rate_rps=rate, weights=split, assumptions=Assumptions(tail_scale=scale))
    n = planned.seconds * rate / 2
    rng = np.random.default_rng(3)

    def pass_rate(factor):
        m = int(n * factor)
        return np.mean([_judge_ratio(rng, m, m, scale, gate) for _ in range(40)])

    # At the planned time the interval's bound sits at the harm: about half the runs pass. A quarter of
    # the data leaves few passes, four times the data nearly all.
    assert pass_rate(0.25) <= 0.15
    assert 0.2 <= pass_rate(1.0) <= 0.9
    assert pass_rate(4.0) >= 0.9


def test_the_memory_plan_matches_the_real_estimator_on_flat_noisy_memory():
    gate = dataclasses.replace(
        GATES["memory_leak"],
        params={**GATES["memory_leak"].params, "warmup_seconds": 0, "step_seconds": 5, "min_cycles": 0},
    )
    noise = 4.0
    assumptions = Assumptions(memory_noise_mib=noise, pods_per_arm=2)
    planned = time_to_pass(gate, rate_rps=10.0, weights=SPLIT, assumptions=assumptions).seconds
    rng = np.random.default_rng(5)

    def pass_rate(factor):
        t = np.arange(0.0, planned * factor, 5.0)
        passes = 0
        for _ in range(40):
            pods = [(t, 500e6 + rng.normal(0, noise * J.MIB, t.size)) for _ in range(4)]
            estimate = memory_trends(pods[:2], pods[2:], gate.confidence, 10, use_floors=False)
            j = J.judge_memory_leak(
                estimate,
                leak_bytes_per_s=float(gate.params["leak_bytes_per_minute"]) / 60,
                min_points=10,
                min_cycles=0,
                confidence=gate.confidence,
            )
            passes += j.verdict == "pass"
        return passes / 40

    assert pass_rate(0.6) <= 0.5
    assert pass_rate(1.6) >= 0.9


def test_the_plan_counts_inter_token_samples_per_request():
    gate = GATES["latency_itl_p99"]
    one = time_to_pass(gate, rate_rps=20.0, weights=SPLIT, assumptions=Assumptions())
    seven = time_to_pass(
        gate, rate_rps=20.0, weights=SPLIT, assumptions=Assumptions(samples_per_request={"itl_ms": 7})
    )
    assert seven.seconds == pytest.approx(one.seconds / 7, rel=0.05)

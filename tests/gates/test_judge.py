import math

import pytest

from gates import judge as J
from gates import stats
from gates.memory_trend import FLOORS, SAMPLES, ArmTrend, LeakEstimate

MIB = 1024 * 1024


def q(value, n=1000, se=0.01):
    return stats.QuantileEstimate(value, value - 2 * se, value + 2 * se, n, se)


def test_combine_orders_fail_over_inconclusive_over_pass():
    assert J.combine([("pass", "a"), ("inconclusive", "b"), ("fail", "c")]) == ("fail", "c")
    assert J.combine([("pass", "a"), ("inconclusive", "b")]) == ("inconclusive", "b")
    assert J.combine([]) == ("inconclusive", "nothing was judged")


def test_threshold_fails_above_max_and_nan_is_inconclusive():
    assert J.judge_threshold({"canary": 0.7}, arms=["canary"], max_value=0.6).verdict == "fail"
    assert J.judge_threshold({"canary": 0.5}, arms=["canary"], max_value=0.6).verdict == "pass"
    assert J.judge_threshold({"canary": math.nan}, arms=["canary"], max_value=0.6).verdict == "inconclusive"
    assert J.judge_threshold({}, arms=["canary"], max_value=0.6).verdict == "inconclusive"
    few = J.judge_threshold(
        {"canary": 0.1}, arms=["canary"], max_value=0.6, samples={"canary": 3}, min_samples=10
    )
    assert few.verdict == "inconclusive" and "too few samples" in few.reason


def test_latency_relative_needs_significance_and_enough_samples():
    base = dict(
        quantile=0.99, arms=["canary"], max_seconds=None, max_ratio=1.10, min_samples=300, confidence=0.95
    )
    noisy = J.judge_latency_quantile({"baseline": q(0.5, se=0.1), "canary": q(0.58, se=0.1)}, **base)
    assert noisy.verdict == "pass" and "not significantly worse" in noisy.reason
    sharp = J.judge_latency_quantile({"baseline": q(0.5), "canary": q(0.58)}, **base)
    assert sharp.verdict == "fail" and sharp.ci["ratio"][0] > 1.0
    short = J.judge_latency_quantile({"baseline": q(0.5, n=200), "canary": q(0.58)}, **base)
    assert short.verdict == "inconclusive" and "baseline n=200" in short.reason
    solo = J.judge_latency_quantile({"canary": q(0.5)}, **{**base, "max_seconds": 0.6}, compare=False)
    assert solo.verdict == "pass" and "skipped" in solo.reason


def test_latency_absolute_bound_by_counting_requests_above_it():
    args = dict(
        quantile=0.99, arms=["canary"], max_seconds=0.6, max_ratio=None, min_samples=300, confidence=0.95
    )
    est = {"canary": q(0.55)}
    assert J.judge_latency_quantile(est, exceedance={"canary": (20.0, 1000.0)}, **args).verdict == "fail"
    assert J.judge_latency_quantile(est, exceedance={"canary": (5.0, 1000.0)}, **args).verdict == "pass"
    assert J.judge_latency_quantile({"canary": q(0.65)}, **args).verdict == "fail"
    near = J.judge_latency_quantile(est, exceedance={"canary": (6.0, 400.0)}, **args)  # 1.5% of 400: noise
    assert near.verdict == "pass" and "not significantly" in near.reason
    assert J.judge_latency_quantile({"canary": q(0.62, se=0.05)}, **args).verdict == "pass"


def test_throughput_poisson_noise_passes_and_a_real_shortfall_fails():
    args = dict(
        window_s=600.0,
        weights={"baseline": 90.0, "canary": 10.0},
        offered_rps=10.0,
        min_offered_fraction=0.98,
        max_share_drop=0.05,
        min_samples=100,
        confidence=0.95,
    )
    ok = J.judge_throughput({"baseline": 5350.0, "canary": 585.0}, **args)  # both a little under offered
    assert ok.verdict == "pass", ok.reason
    short = J.judge_throughput({"baseline": 5400.0, "canary": 450.0}, **args)
    assert short.verdict == "fail" and "canary: served" in short.reason
    assert "per unit of traffic" in short.reason
    unknown = J.judge_throughput({"baseline": 5400.0, "canary": 600.0}, **{**args, "offered_rps": None})
    assert unknown.verdict == "pass" and "not judged" in unknown.reason
    little = J.judge_throughput({"baseline": 50.0, "canary": 5.0}, **{**args, "offered_rps": 0.1})
    assert little.verdict == "inconclusive"
    full = J.judge_throughput(
        {"baseline": None, "canary": 6000.0}, **{**args, "weights": {"baseline": 0.0, "canary": 100.0}}
    )
    assert full.verdict == "pass", full.reason


def test_error_rate_bound_and_sample_floor():
    args = dict(arms=["canary"], max_rate=0.001, min_samples=300, confidence=0.95)
    assert J.judge_error_rate({"canary": 0.0}, {"canary": 1000.0}, **args).verdict == "pass"
    bad = J.judge_error_rate({"canary": 5.0}, {"canary": 1000.0}, **args)
    assert bad.verdict == "fail" and bad.ci["canary"][0] > 0
    unlucky = J.judge_error_rate({"canary": 1.0}, {"canary": 400.0}, **args)  # 0.25%, but one request
    assert unlucky.verdict == "pass" and "not significantly" in unlucky.reason
    assert J.judge_error_rate({"canary": 0.0}, {"canary": 100.0}, **args).verdict == "inconclusive"
    assert J.judge_error_rate({"canary": None}, {"canary": 1000.0}, **args).verdict == "inconclusive"


def trend(per_min_mib, half_width_mib=0.2, cycles=20):
    s = per_min_mib * MIB / 60
    h = half_width_mib * MIB / 60
    return ArmTrend(s, s - h, s + h, cycles + 2, 2, cycles + 2, cycles, None)


def leak(canary, baseline, method=FLOORS):
    diff = canary.slope - baseline.slope
    half = math.hypot(canary.high - canary.slope, baseline.high - baseline.slope)
    return LeakEstimate(method, canary, baseline, diff, diff - half, diff + half, 30.0, 0.0)


def test_memory_leak_rules():
    args = dict(floor_bytes_per_s=MIB / 60, min_points=20, min_cycles=2, confidence=0.98)
    failed = J.judge_memory_leak(leak(trend(1.0), trend(0.0)), **args)
    assert failed.verdict == "fail" and "collection floors: 20+20 cycles of 2+2 pods" in failed.reason
    assert failed.values["canary"] == pytest.approx(1.0) and failed.ci["canary_minus_baseline"][0] > 0
    both = J.judge_memory_leak(leak(trend(1.0), trend(1.0)), **args)
    assert both.verdict == "pass" and "not significantly above the baseline" in both.reason
    tiny = J.judge_memory_leak(leak(trend(0.1, 0.01), trend(0.0, 0.01)), **args)
    assert tiny.verdict == "pass" and "below the 1 MiB/min floor" in tiny.reason
    assert J.judge_memory_leak(leak(trend(0.0), trend(0.0)), **args).verdict == "pass"
    few = J.judge_memory_leak(leak(trend(3.0, cycles=1), trend(0.0)), **args)
    assert few.verdict == "inconclusive" and "too few collection cycles" in few.reason
    smooth = J.judge_memory_leak(leak(trend(3.0, cycles=1), trend(0.0), method=SAMPLES), **args)
    assert smooth.verdict == "fail"  # cycles only matter when the memory saws
    missing = J.judge_memory_leak(None, **args)
    assert missing.verdict == "inconclusive" and "too few memory points" in missing.reason
    nan = J.judge_memory_leak(leak(trend(math.nan), trend(0.0)), **args)
    assert nan.verdict == "inconclusive"


def test_relative_p99_fails_when_significantly_worse_and_possibly_beyond_tolerance():
    base = dict(
        quantile=0.99, arms=["canary"], max_seconds=None, max_ratio=1.10, min_samples=300, confidence=0.98
    )
    est = {"baseline": q(0.5, se=0.01), "canary": q(0.56, se=0.03)}  # ratio 1.12, wide canary interval

    def shift(low):
        return stats.ShiftTest(1.12, low, 3.0, 0.05, 300)

    assert J.judge_latency_quantile(est, **base).verdict == "pass"  # its own interval covers 1
    called = J.judge_latency_quantile(est, shift=shift(1.04), **base)
    assert called.verdict == "fail" and "significantly worse" in called.reason
    assert called.values["ratio_low_if_unchanged"] == 1.04
    assert J.judge_latency_quantile(est, shift=shift(0.99), **base).verdict == "pass"
    small = {"baseline": q(0.5, se=0.002), "canary": q(0.52, se=0.002)}  # 4% worse, interval below 1.10
    within = J.judge_latency_quantile(small, shift=stats.ShiftTest(1.04, 1.02, 9.0, 0.05, 300), **base)
    assert within.verdict == "pass" and "within 1.1x" in within.reason

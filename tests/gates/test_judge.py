import math
from dataclasses import replace

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


def test_data_needed_finds_where_the_bound_clears_the_harm():
    # A mean's bound: half-width 0.4 around 1.0 against a harm at 1.2 clears at (0.4 / 0.2)^2 = 4x the data.
    assert J.data_needed(J.shrinking(1.0, 1.4), 1.2) == pytest.approx(4.0, rel=0.02)
    assert J.data_needed(J.shrinking(1.0, 1.1), 1.2) == 1.0  # clears already
    assert J.data_needed(J.shrinking(1.3, 1.5), 1.2) is None  # the estimate itself is past the harm
    # A slope's bound narrows as the window to the power 1.5: 2^(1/1.5) windows halve it.
    assert J.data_needed(J.shrinking(0.0, 2.0, 1.5), 1.0) == pytest.approx(2 ** (1 / 1.5), rel=0.02)
    # A lower bound that must rise above the harm.
    assert J.data_needed(J.shrinking(1.0, 0.8), 0.9, upper=False) == pytest.approx(4.0, rel=0.02)


def test_latency_relative_passes_only_when_its_interval_excludes_the_tolerance():
    base = dict(
        quantile=0.99, arms=["canary"], max_seconds=None, max_ratio=1.10, min_samples=300, confidence=0.95
    )
    noisy = J.judge_latency_quantile({"baseline": q(0.5, se=0.1), "canary": q(0.5, se=0.1)}, **base)
    assert noisy.verdict == "inconclusive" and "cannot yet exclude 1.1x" in noisy.reason
    # The estimated data need holds up: with that many times the samples the same estimate passes.
    k = noisy.more_data
    assert k is not None and k > 10
    se = 0.1 / math.sqrt(k * 1.01)
    enough = J.judge_latency_quantile({"baseline": q(0.5, se=se), "canary": q(0.5, se=se)}, **base)
    assert enough.verdict == "pass" and "below 1.1x" in enough.reason and enough.more_data is None
    sharp = J.judge_latency_quantile({"baseline": q(0.5), "canary": q(0.58)}, **base)
    assert sharp.verdict == "fail" and sharp.ci["ratio"][0] > 1.0
    short = J.judge_latency_quantile({"baseline": q(0.5, n=200), "canary": q(0.58)}, **base)
    assert short.verdict == "inconclusive" and "baseline n=200" in short.reason
    assert short.more_data == pytest.approx(1.5)
    solo = J.judge_latency_quantile({"canary": q(0.5)}, **{**base, "max_seconds": 0.6}, compare=False)
    assert solo.verdict == "pass" and "skipped" in solo.reason


def test_latency_absolute_bound_by_counting_requests_above_it():
    args = dict(
        quantile=0.99, arms=["canary"], max_seconds=0.6, max_ratio=None, min_samples=300, confidence=0.95
    )
    est = {"canary": q(0.55)}
    assert J.judge_latency_quantile(est, exceedance={"canary": (20.0, 1000.0)}, **args).verdict == "fail"
    assert J.judge_latency_quantile(est, exceedance={"canary": (2.0, 1000.0)}, **args).verdict == "pass"
    assert J.judge_latency_quantile({"canary": q(0.65)}, **args).verdict == "fail"
    near = J.judge_latency_quantile(est, exceedance={"canary": (6.0, 400.0)}, **args)  # 1.5% of 400: noise
    assert near.verdict == "inconclusive" and near.more_data is None  # 1.5% is past 1%: data cannot pass it
    few = J.judge_latency_quantile(est, exceedance={"canary": (5.0, 1000.0)}, **args)  # 0.5%, CI up to 1.2%
    assert few.verdict == "inconclusive" and "cannot yet exclude a p99 above 600 ms" in few.reason
    assert few.more_data is not None and 1.5 < few.more_data < 5
    wide = J.judge_latency_quantile({"canary": q(0.58, se=0.05)}, **args)
    assert wide.verdict == "inconclusive"  # 580 +- 100 ms: clearing 600 ms takes (100 / 20)^2 = 25x the data
    assert wide.more_data == pytest.approx(25.0, rel=0.02)


def test_throughput_passes_when_shown_to_serve_and_fails_a_real_shortfall():
    args = dict(
        window_s=120.0,
        weights={"baseline": 50.0, "canary": 50.0},
        offered_rps=10.0,
        min_offered_fraction=0.90,
        max_share_drop=0.05,
        min_samples=100,
        confidence=0.95,
    )
    ok = J.judge_throughput({"baseline": 590.0, "canary": 610.0}, **args)
    assert ok.verdict == "inconclusive" and "cannot yet exclude a drop of 5%" in ok.reason
    k = ok.more_data
    assert k is not None and 1.5 < k < 10
    longer = J.judge_throughput({"baseline": 590.0 * k, "canary": 610.0 * k}, **{**args, "window_s": 120 * k})
    assert longer.verdict == "pass", longer.reason
    short = J.judge_throughput({"baseline": 600.0, "canary": 440.0}, **args)
    assert short.verdict == "fail" and "canary: served" in short.reason
    assert "per unit of traffic" in short.reason
    little = J.judge_throughput({"baseline": 50.0, "canary": 5.0}, **{**args, "offered_rps": 0.1})
    assert little.verdict == "inconclusive"
    full = J.judge_throughput(
        {"baseline": None, "canary": 6000.0}, **{**args, "weights": {"baseline": 0.0, "canary": 100.0}}
    )
    assert full.verdict == "pass", full.reason


def test_error_rate_passes_only_below_the_bound_with_its_interval():
    args = dict(arms=["canary"], max_rate=0.001, min_samples=300, confidence=0.95)
    # No error in 1000 requests: CI up to 0.37%, which 0.1% cannot exclude; no error in 3,700 can.
    none = J.judge_error_rate({"canary": 0.0}, {"canary": 1000.0}, **args)
    assert none.verdict == "inconclusive" and "cannot yet exclude 0.100%" in none.reason
    assert none.more_data == pytest.approx(math.log(0.025) / math.log(1 - 0.001) / 1000, rel=0.02)
    assert J.judge_error_rate({"canary": 0.0}, {"canary": 3700.0}, **args).verdict == "pass"
    bad = J.judge_error_rate({"canary": 5.0}, {"canary": 1000.0}, **args)
    assert bad.verdict == "fail" and bad.ci["canary"][0] > 0
    unlucky = J.judge_error_rate({"canary": 1.0}, {"canary": 400.0}, **args)  # 0.25%, but one request
    assert unlucky.verdict == "inconclusive" and unlucky.more_data is None
    short = J.judge_error_rate({"canary": 0.0}, {"canary": 100.0}, **args)
    assert short.verdict == "inconclusive" and short.more_data == pytest.approx(3.0)
    assert J.judge_error_rate({"canary": None}, {"canary": 1000.0}, **args).verdict == "inconclusive"


def trend(per_min_mib, half_width_mib=0.2, cycles=20, method=FLOORS):
    s = per_min_mib * MIB / 60
    h = half_width_mib * MIB / 60
    return ArmTrend(s, s - h, s + h, cycles + 2, 2, cycles + 2, cycles, None, method)


def leak(canary, baseline, method=FLOORS):
    canary, baseline = (replace(t, method=method) for t in (canary, baseline))
    diff = canary.slope - baseline.slope
    half = math.hypot(canary.high - canary.slope, baseline.high - baseline.slope)
    return LeakEstimate(method, canary, baseline, diff, diff - half, diff + half, 30.0, 0.0)


def test_memory_leak_rules():
    args = dict(leak_bytes_per_s=MIB / 60, min_points=20, min_cycles=2, confidence=0.98)
    failed = J.judge_memory_leak(leak(trend(2.0), trend(0.0)), **args)
    assert failed.verdict == "fail" and "collection floors: 20+20 cycles of 2+2 pods" in failed.reason
    assert failed.values["canary"] == pytest.approx(2.0) and failed.ci["canary_minus_baseline"][0] > 0
    # Growth whose interval only touches the harmful rate is no leak yet: a warm-up read over a short
    # window (1.72 MiB/min, 0.86..2.59, a healthy canary's 50% step in `make canary`) waits for more data.
    touching = J.judge_memory_leak(leak(trend(1.72 / 1.5, 0.87 / 1.5), trend(-0.42 / 1.5)), **args)
    assert touching.verdict == "inconclusive" and touching.more_data is None  # its estimate is past it
    assert J.judge_memory_leak(leak(trend(1.0), trend(0.0)), **args).verdict == "inconclusive"
    both = J.judge_memory_leak(leak(trend(1.0, 0.1), trend(1.0, 0.1)), **args)
    assert both.verdict == "pass" and "growth above the baseline's below 1 MiB/min" in both.reason
    tiny = J.judge_memory_leak(leak(trend(0.1, 0.01), trend(0.0, 0.01)), **args)
    assert tiny.verdict == "pass" and "growth below 1 MiB/min" in tiny.reason
    assert J.judge_memory_leak(leak(trend(0.0), trend(0.0)), **args).verdict == "pass"
    # -7.6..7.7 MiB/min (a 50% step seen in `make canary`) cannot tell a leak from none: not a pass.
    wide = J.judge_memory_leak(leak(trend(0.05, 7.65), trend(0.0, 1.0)), **args)
    assert wide.verdict == "inconclusive" and "cannot yet exclude a leak of 1 MiB/min" in wide.reason
    assert wide.more_data == pytest.approx((7.65 / 0.95) ** (1 / 1.5), rel=0.03)
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

    assert J.judge_latency_quantile(est, **base).verdict == "inconclusive"  # its own interval covers 1
    called = J.judge_latency_quantile(est, shift=shift(1.04), **base)
    assert called.verdict == "fail" and "significantly worse" in called.reason
    assert called.values["ratio_low_if_unchanged"] == 1.04
    assert J.judge_latency_quantile(est, shift=shift(0.99), **base).verdict == "inconclusive"
    small = {"baseline": q(0.5, se=0.002), "canary": q(0.52, se=0.002)}  # 4% worse, interval below 1.10
    within = J.judge_latency_quantile(small, shift=stats.ShiftTest(1.04, 1.02, 9.0, 0.05, 300), **base)
    assert within.verdict == "pass" and "below 1.1x" in within.reason

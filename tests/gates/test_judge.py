import math
from dataclasses import replace

import numpy as np
import pytest

from gates import judge as J
from gates import stats
from gates.memory_trend import FLOORS, SAMPLES, ArmTrend, LaterSlope, LeakEstimate
from gates.record import Verdict

MIB = 1024 * 1024


def q(value, n=1000, se=0.01):
    return stats.QuantileEstimate(value, value - 2 * se, value + 2 * se, n, se)


def test_combine_orders_fail_over_inconclusive_over_pass():
    assert J.combine([("pass", "a"), ("inconclusive", "b"), ("fail", "c")]) == ("fail", "c")
    assert J.combine([("pass", "a"), ("inconclusive", "b")]) == ("inconclusive", "b")
    assert J.combine([]) == ("inconclusive", "nothing was judged")
    assert J.combine([(Verdict.FAIL, "a"), (Verdict.PASS, "b"), (Verdict.FAIL, "c")]) == (
        Verdict.FAIL,
        "a; c",
    )


def test_the_worst_verdict_is_fail_then_inconclusive_then_pass_and_none_is_inconclusive():
    assert Verdict.worst([Verdict.PASS, Verdict.FAIL, Verdict.INCONCLUSIVE]) is Verdict.FAIL
    assert Verdict.worst([Verdict.PASS, Verdict.INCONCLUSIVE, Verdict.PASS]) is Verdict.INCONCLUSIVE
    assert Verdict.worst([Verdict.PASS, Verdict.PASS]) is Verdict.PASS
    assert Verdict.worst(["pass", "fail"]) is Verdict.FAIL  # a verdict as the records spell it
    assert Verdict.worst([]) is Verdict.INCONCLUSIVE  # nothing judged never passes


def cpu(mean, *, n=20, sd=0.03, rho=0.0, seed=3, min_points=5, **kw):
    """judge_threshold on `n` sub-window values of an AR(1) series around `mean` (max 0.6 unless given)."""
    rng = np.random.default_rng(seed)
    x = np.empty(n)
    x[0] = rng.normal(0, sd)
    for i in range(1, n):
        x[i] = rho * x[i - 1] + math.sqrt(1 - rho * rho) * rng.normal(0, sd)
    x += mean - x.mean()  # the sample mean exactly where the test puts it
    args = {"max_value": 0.6, **kw}
    return J.judge_threshold(
        {"canary": mean},
        arms=["canary"],
        subwindows={"canary": x},
        min_points=min_points,
        confidence=0.95,
        **args,
    )


def test_threshold_judges_the_interval_of_its_sub_windows_not_the_point():
    at = cpu(0.6)  # at the bound: a point rule passes or fails it on noise
    assert at.verdict == "inconclusive" and "cannot yet exclude max 0.6" in at.reason
    assert at.ci["canary"][0] < 0.6 < at.ci["canary"][1] and at.more_data is None  # no amount of data
    near = cpu(0.59)
    assert near.verdict == "inconclusive" and near.more_data > 1  # the interval may yet clear it
    assert cpu(0.59, n=int(20 * near.more_data) + 2).verdict == "pass"  # where more_data says it would
    below = cpu(0.4)
    assert below.verdict == "pass" and below.ci["canary"][1] < 0.6 and below.samples == {"canary": 20}
    above = cpu(0.7)
    assert above.verdict == "fail" and "significantly above max 0.6" in above.reason
    # the same bounds below: min 0.2
    assert cpu(0.1, max_value=None, min_value=0.2).verdict == "fail"
    assert cpu(0.21, max_value=None, min_value=0.2).verdict == "inconclusive"
    assert cpu(0.4, max_value=0.6, min_value=0.2).verdict == "pass"


def test_threshold_correlated_sub_windows_widen_the_interval():
    # The same 40 values as slow swings of the load (each like its neighbours), and in random order.
    rng = np.random.default_rng(4)
    swing = 0.58 + 0.03 * np.sin(np.linspace(0, 3 * math.pi, 40)) + rng.normal(0, 0.005, 40)
    shuffled = rng.permutation(swing)
    a, b = stats.mean_interval(shuffled, 0.95), stats.mean_interval(swing, 0.95)
    assert b.rho > 0.8 and (b.high - b.low) > 3 * (a.high - a.low) and a.value == pytest.approx(b.value)
    assert a.high < 0.6 < b.high
    judge = lambda x: J.judge_threshold(  # noqa: E731
        {"canary": 0.57},
        arms=["canary"],
        subwindows={"canary": x},
        min_points=5,
        confidence=0.95,
        max_value=0.6,
    )
    assert judge(shuffled).verdict == "pass" and judge(swing).verdict == "inconclusive"
    e = stats.mean_interval([0.5, 0.5, 0.5], 0.95)
    assert (e.low, e.high, e.rho) == (0.5, 0.5, 0.0)  # a flat series: no spread, nothing to inflate
    alternating = stats.mean_interval([0.4, 0.6] * 10, 0.95)
    assert alternating.rho == 0.0  # negative correlation does not narrow it


def test_threshold_too_few_sub_windows_missing_or_nan_is_inconclusive():
    few = cpu(0.1, n=3)
    assert few.verdict == "inconclusive" and "too few sub-windows (3 < 5)" in few.reason
    assert few.more_data == pytest.approx(5 / 3)
    assert cpu(0.1, n=3, min_points=3).verdict == "pass"
    none = J.judge_threshold(
        {"canary": 0.1}, arms=["canary"], subwindows={}, min_points=3, confidence=0.95, max_value=0.6
    )
    assert none.verdict == "inconclusive" and none.more_data is None
    judge = lambda v: J.judge_threshold(  # noqa: E731
        v, arms=["canary"], subwindows={"canary": [0.1] * 5}, min_points=3, confidence=0.95, max_value=0.6
    )
    assert judge({"canary": math.nan}).verdict == "inconclusive"
    assert judge({}).verdict == "inconclusive"
    few = cpu(0.1, samples={"canary": 3}, min_samples=10)
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


def trend(per_min_mib, half_width_mib=0.2, cycles=20, method=FLOORS, later_mib=None):
    """An arm's slope; its later half's slope is `later_mib` (default the same, as a leak keeps growing)
    with twice the half-width."""
    s = per_min_mib * MIB / 60
    h = half_width_mib * MIB / 60
    ls = s if later_mib is None else later_mib * MIB / 60
    later = LaterSlope(0.0, ls, ls - 2 * h, ls + 2 * h)
    return ArmTrend(s, s - h, s + h, cycles + 2, 2, cycles + 2, cycles, None, method, later)


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
    assert "still growing over the later half (2 MiB/min, CI 1.6..2.4)" in failed.reason
    # Growth that stopped before the window's middle (a one-time rise) is not a leak however steep it was.
    stopped = J.judge_memory_leak(leak(trend(2.0, later_mib=0.1), trend(0.0)), **args)
    assert stopped.verdict == "inconclusive" and "not significantly over the later half" in stopped.reason
    assert stopped.ci["canary_later_half"] == pytest.approx([-0.3, 0.5])
    assert stopped.more_data == pytest.approx(
        (0.4 / 0.1) ** (1 / 1.5), rel=0.03
    )  # the later half showing growth
    unknown = J.judge_memory_leak(leak(replace(trend(2.0), later=None), trend(0.0)), **args)
    assert unknown.verdict == "inconclusive" and "too few points there" in unknown.reason
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


# The relative P99 check alone, with the latency gates' confidence.
RELATIVE = dict(
    quantile=0.99, arms=["canary"], max_seconds=None, max_ratio=1.10, min_samples=300, confidence=0.98
)


def test_relative_p99_from_one_coarse_bucket_never_passes_and_says_why():
    bounds = [0.2, 0.4, 0.6, 0.8, math.inf]
    baseline = stats.histogram_quantile(bounds, [0.0, 9.1e5, 1e6, 1e6, 1e6], 0.99, 0.98)  # P99 ~0.44 s
    canary = stats.histogram_quantile(bounds, [0.0, 6.4e5, 1e6, 1e6, 1e6], 0.99, 0.98)  # ~0.51 s: x1.15
    j = J.judge_latency_quantile({"baseline": baseline, "canary": canary}, **{**RELATIVE, "max_ratio": 1.15})
    assert j.verdict == "inconclusive" and j.more_data is None
    assert "cannot show a ratio below 1.15x however many requests (at best 1.5x)" in j.reason


def test_relative_p99_fails_when_significantly_worse_and_possibly_beyond_tolerance():
    base = RELATIVE
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

"""The memory-trend estimator on its own: collection floors, per-arm floor slopes, intervals, set-aside rises."""

import math
import warnings

import numpy as np
import pytest

from gates import judge as J
from gates.memory_trend import (
    FLOORS,
    MIXED,
    SAMPLES,
    ArmTrend,
    LeakEstimate,
    collection_floors,
    memory_trends,
)
from testkit.synthetic_arms import MIB, MemoryModel, gc_sawtooth

PER_MIN = MIB / 60.0
FLOOR = 1 * PER_MIN  # the default gate's 1 MiB/min
STEP, WARMUP = 10.0, 60.0


def window(minutes: float) -> np.ndarray:
    t = np.arange(0.0, minutes * 60 + 1e-9, STEP)
    return t[t >= WARMUP]


def pods(rng, models, t):
    return [(t, m.sample(rng, t)) for m in models]


def judge(estimate, min_cycles=2):
    return J.judge_memory_leak(
        estimate, leak_bytes_per_s=FLOOR, min_points=20, min_cycles=min_cycles, confidence=0.98
    )


def test_floors_are_the_lowest_point_after_each_collection():
    t = np.arange(0.0, 600.0, 10.0)
    y = 1000.0 + 2.0 * (t % 100)  # drops every 100 s back to 1000
    floors = collection_floors(t, y)
    assert floors.collections == 5
    assert floors.times.tolist() == [100.0, 200.0, 300.0, 400.0, 500.0]
    assert np.all(floors.values == 1000.0)
    # the stretch before the first collection has no floor: the window opened mid-cycle
    assert 0.0 not in floors.times


def test_a_one_sample_dip_and_plain_noise_are_not_collections():
    rng = np.random.default_rng(1)
    t = np.arange(0.0, 600.0, 10.0)
    noise = 1000.0 + rng.normal(0, 1.0, t.size)
    assert collection_floors(t, noise).collections == 0
    dip = noise.copy()
    dip[30] -= 500.0  # a scrape that caught a transient low, back up at the next one
    assert collection_floors(t, dip).collections == 0
    spread = 1000.0 + 2.0 * (t % 100) + rng.normal(0, 1.0, t.size)
    spread[[10, 20, 30]] = spread[[9, 19, 29]] - 60.0  # a collection seen across two scrapes is one
    assert collection_floors(t, spread).collections == 5


def test_known_slope_is_recovered_under_a_sawtooth_and_the_interval_covers_it():
    rng = np.random.default_rng(7)
    t = window(25)
    covered = 0
    trials = 60
    for _ in range(trials):
        canary = pods(rng, [gc_sawtooth(64, 1, 2.0) for _ in range(2)], t)
        baseline = pods(rng, [gc_sawtooth(64, 1) for _ in range(2)], t)
        est = memory_trends(canary, baseline, 0.95, 20)
        assert est is not None and est.method == FLOORS
        assert est.canary.slope / PER_MIN == pytest.approx(2.0, abs=1.0)
        covered += est.low <= 2.0 * PER_MIN <= est.high
    assert covered >= 0.85 * trials  # 95% intervals; 60 trials leave room for chance
    assert est.canary.pods == 2 and est.canary.cycles >= 40  # ~24 cycles per pod


def test_a_raw_line_through_the_sawtooth_cannot_call_what_the_floors_can():
    """The issue's case: ~1.5 MiB/min per pod under a ~150 MiB sawtooth over 25 minutes."""
    rng = np.random.default_rng(11)
    t = window(25)
    canary = pods(rng, [gc_sawtooth(150, 5, 1.5) for _ in range(2)], t)
    baseline = pods(rng, [gc_sawtooth(150, 5) for _ in range(2)], t)
    est = memory_trends(canary, baseline, 0.98, 20)
    assert est is not None and est.method == FLOORS
    assert judge(est).verdict == "fail", judge(est).reason
    assert (est.high - est.low) / PER_MIN < 2.0  # the floors' interval; a raw line's spans tens of MiB/min


def test_flat_sawtooth_is_not_a_leak():
    rng = np.random.default_rng(3)
    t = window(25)
    verdicts = []
    for _ in range(40):
        canary = pods(rng, [gc_sawtooth(200, 5) for _ in range(2)], t)
        baseline = pods(rng, [gc_sawtooth(200, 5) for _ in range(2)], t)
        verdicts.append(judge(memory_trends(canary, baseline, 0.98, 20)).verdict)
    assert verdicts.count("fail") <= 2  # a 1% test: about 0.4 expected in 40 windows


def test_a_one_time_rise_then_flat_is_set_aside_not_a_leak():
    rng = np.random.default_rng(5)
    t = window(25)
    rise = [gc_sawtooth(64, 1, rise_mib=200, rise_delay_s=10, rise_s=240) for _ in range(2)]
    canary = pods(rng, rise, t)
    baseline = pods(rng, [gc_sawtooth(64, 1) for _ in range(2)], t)
    est = memory_trends(canary, baseline, 0.98, 20)
    assert est is not None and est.canary.settled_from is not None
    assert 240 <= est.canary.settled_from <= 14 * 60  # after the rise, at most half the window
    verdict = judge(est)
    assert verdict.verdict == "pass" and "set aside" in verdict.reason
    # a leak on top of the rise is still a leak
    leaking = pods(
        rng, [gc_sawtooth(64, 1, 3.0, rise_mib=200, rise_delay_s=10, rise_s=240) for _ in range(2)], t
    )
    assert judge(memory_trends(leaking, baseline, 0.98, 20)).verdict == "fail"


def test_a_rise_over_the_first_half_is_not_read_as_a_leak_when_the_later_half_is_flat():
    """The bench's hardest healthy cell: a 512 MiB sawtooth with 1-minute cycles, 9 judged minutes, each
    canary pod rising 32-256 MiB over 1-5 minutes from the window's start, too unevenly between pods for
    the set-aside. The whole window's floor slope fails ~9% of such windows; a fail must also see the
    later half growing, which a rise that has stopped fails ~1% of the time (two-sided 0.98)."""
    rng = np.random.default_rng(17)
    t = window(10)
    verdicts, later, steep = [], [], 0
    for _ in range(100):
        rises = [
            gc_sawtooth(
                512,
                1,
                rise_mib=rng.uniform(32, 256),
                rise_delay_s=rng.uniform(0, 30),
                rise_s=rng.uniform(60, 270),
            )
            for _ in range(2)
        ]
        est = memory_trends(
            pods(rng, rises, t), pods(rng, [gc_sawtooth(512, 1) for _ in range(2)], t), 0.98, 20
        )
        verdicts.append(judge(est).verdict)
        later.append(est.canary.later)
        steep += est.canary.low > FLOOR and est.low > 0  # the whole window's slope alone would fail it
    assert steep >= 8
    assert verdicts.count("fail") <= 3, (steep, verdicts.count("fail"))  # about 1 expected
    assert all(x.since == pytest.approx((t[0] + t[-1]) / 2) for x in later)
    # a leak keeps growing in the later half, and still fails in the windows where it is clear
    leaks = []
    for _ in range(20):
        canary = pods(rng, [gc_sawtooth(512, 1, 30.0) for _ in range(2)], t)
        est = memory_trends(canary, pods(rng, [gc_sawtooth(512, 1) for _ in range(2)], t), 0.98, 20)
        leaks.append((est.canary.later.low > 0, judge(est).verdict))
    assert sum(grows for grows, _ in leaks) >= 15 and [v for _, v in leaks].count("fail") >= 15, leaks


def test_too_few_cycles_is_inconclusive():
    rng = np.random.default_rng(2)
    t = window(10)  # 9 minutes judged, 10-minute cycles: at most one collection per pod
    canary = pods(rng, [gc_sawtooth(200, 10, 3.0) for _ in range(2)], t)
    baseline = pods(rng, [gc_sawtooth(200, 10) for _ in range(2)], t)
    est = memory_trends(canary, baseline, 0.98, 20)
    assert est is not None and est.method == FLOORS and est.canary.cycles < 2
    verdict = judge(est)
    assert verdict.verdict == "inconclusive" and "too few collection cycles" in verdict.reason


def test_only_the_canary_saws_its_floors_are_judged_against_the_baselines_samples():
    """Seen in the gateway tier: the canary's processes collected three times, the baseline's never, and
    the baseline, with no floors, left the gate inconclusive however long the step held."""
    rng = np.random.default_rng(4)
    t = window(25)

    def smooth():
        return [(t, 900 * MIB + rng.normal(0, 0.25 * MIB, t.size)) for _ in range(2)]

    flat = memory_trends(pods(rng, [gc_sawtooth(64, 4) for _ in range(2)], t), smooth(), 0.98, 20)
    assert flat is not None and flat.method == MIXED
    assert (flat.canary.method, flat.baseline.method) == (FLOORS, SAMPLES) and flat.canary.cycles >= 6
    verdict = judge(flat)
    assert verdict.verdict == "pass" and "growth below" in verdict.reason, verdict.reason
    assert "only one arm saws" in verdict.reason
    leaking = memory_trends(pods(rng, [gc_sawtooth(64, 4, 3.0) for _ in range(2)], t), smooth(), 0.98, 20)
    assert judge(leaking).verdict == "fail", judge(leaking).reason


def test_only_one_arm_sawing_never_passes_on_the_difference():
    """A baseline ramping inside a cycle longer than the window makes the difference small or negative:
    with only the canary sawing, a pass must rest on the canary's own slope."""
    args = dict(leak_bytes_per_s=FLOOR, min_points=20, min_cycles=2, confidence=0.98)
    canary = arm_trend(1.5, 0.8, FLOORS)
    ramp = arm_trend(5.0, 0.1, SAMPLES)
    diff = canary.slope - ramp.slope
    half = math.hypot(canary.high - canary.slope, ramp.high - ramp.slope)
    mixed = LeakEstimate(MIXED, canary, ramp, diff, diff - half, diff + half, 20.0, 0.0)
    assert diff + half < FLOOR  # the difference alone would pass
    verdict = J.judge_memory_leak(mixed, **args)
    assert verdict.verdict == "inconclusive" and "cannot yet exclude" in verdict.reason


def arm_trend(per_min_mib, half_width_mib, method):
    s, h = per_min_mib * PER_MIN, half_width_mib * PER_MIN
    return ArmTrend(s, s - h, s + h, 40, 2, 20, 18, None, method)


def test_missing_or_short_series_are_inconclusive():
    t = window(10)
    flat = (t, np.full(t.size, 1e9))
    assert memory_trends([], [flat], 0.98, 20) is None
    assert memory_trends([(t[:5], flat[1][:5])], [flat], 0.98, 20) is None
    assert memory_trends([(t, np.full(t.size, np.nan))], [flat], 0.98, 20) is None
    assert judge(None).verdict == "inconclusive"


def test_smooth_memory_uses_every_sample():
    rng = np.random.default_rng(9)
    t = window(10)
    smooth = MemoryModel(amplitude_bytes=(0.0, 0.0), leak_bytes_per_s=5 * PER_MIN)
    canary = pods(rng, [smooth, smooth, smooth], t)  # e.g. tokenizer and two ranks
    baseline = pods(rng, [MemoryModel(amplitude_bytes=(0.0, 0.0))] * 3, t)
    est = memory_trends(canary, baseline, 0.98, 20)
    assert est is not None and est.method == SAMPLES and est.canary.points == 3 * t.size
    assert est.canary.slope / PER_MIN == pytest.approx(5.0, abs=0.2)
    assert judge(est).verdict == "fail"


def test_flat_memory_with_one_step_is_quiet_and_finite():
    """An idle arm's memory (the baseline at 100% canary): flat, then one step, no variance elsewhere.
    Such a series once made numpy divide by zero (RuntimeWarning) inside an autocorrelation."""
    t = window(5)
    flat = np.full(t.size, 5e8)
    step = flat.copy()
    step[-1] += MIB
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est = memory_trends([(t, step)], [(t, flat)], 0.98, 20)
        assert est is not None
        verdict = judge(est)
    assert math.isfinite(est.canary.slope) and verdict.verdict in ("pass", "inconclusive")


def test_pods_are_not_summed():
    """Two pods whose drops interleave: each pod's floor trend is the leak; their sum's is not readable."""
    rng = np.random.default_rng(4)
    t = window(25)
    models = [gc_sawtooth(100, 2, 2.0) for _ in range(2)]
    canary = pods(rng, models, t)
    baseline = pods(rng, [gc_sawtooth(100, 2) for _ in range(2)], t)
    est = memory_trends(canary, baseline, 0.98, 20)
    assert est is not None and est.canary.slope / PER_MIN == pytest.approx(2.0, abs=0.7)
    summed = memory_trends(
        [(t, canary[0][1] + canary[1][1])], [(t, baseline[0][1] + baseline[1][1])], 0.98, 20
    )
    # every pod's drop cuts the sum, at a point where the other pod is mid-cycle: no floor at all
    assert summed is not None and summed.high - summed.low > 2 * (est.high - est.low)


def test_one_stray_drop_in_one_process_does_not_make_smooth_memory_saw():
    """Locally each process is a 'pod': an allocator returning one big buffer once is not a sawtooth, and
    must not leave the leaking canary (no drop at all) without cycles to judge."""
    rng = np.random.default_rng(12)
    t = window(4)
    flat = MemoryModel(amplitude_bytes=(0.0, 0.0))
    baseline = pods(rng, [flat, flat, flat], t)
    stray = baseline[1][1].copy()
    stray[t.size // 2 :] -= 12 * MIB
    baseline[1] = (t, stray)
    canary = pods(rng, [MemoryModel(amplitude_bytes=(0.0, 0.0), leak_bytes_per_s=20 * PER_MIN)] * 3, t)
    est = memory_trends(canary, baseline, 0.98, 10)
    assert est is not None and est.method == SAMPLES
    assert judge(est).verdict == "fail"


def test_min_cycles_zero_judges_every_sample_even_when_the_memory_saws():
    """A demo step shorter than a collection cycle: one trim per process is no sawtooth to judge floors of."""
    t = np.arange(0.0, 60.0, 2.0)
    flat = 500e6 + 1e5 * np.sin(t)
    trimmed = flat.copy()
    trimmed[20:] -= 50e6  # every process trims once
    canary, baseline = [(t, trimmed), (t, trimmed)], [(t, trimmed), (t, flat)]
    assert memory_trends(canary, baseline, 0.95, 10).canary.method == FLOORS
    every = memory_trends(canary, baseline, 0.95, 10, use_floors=False)
    assert every is not None and every.method == SAMPLES


def test_a_leak_in_one_process_of_the_arm_is_called():
    """Locally an arm's 'pods' are its processes and a fault may leak in one rank only. A common slope
    would leave that rank's growth in the residuals and widen both arms' intervals past the leak."""
    rng = np.random.default_rng(21)
    t = np.arange(0.0, 40.0, 3.0)
    flat = MemoryModel(amplitude_bytes=(0.0, 0.0), noise_bytes=2 * MIB)
    leaky = MemoryModel(amplitude_bytes=(0.0, 0.0), noise_bytes=2 * MIB, leak_bytes_per_s=150 * PER_MIN)
    canary, baseline = pods(rng, [flat, leaky, flat], t), pods(rng, [flat, flat, flat], t)
    est = memory_trends(canary, baseline, 0.98, 10, use_floors=False)
    assert est is not None and est.method == SAMPLES
    assert est.canary.slope / PER_MIN == pytest.approx(50.0, abs=5.0)  # the mean over the arm's processes
    assert est.low > 0 and judge(est, min_cycles=0).verdict == "fail"
    quiet = memory_trends(pods(rng, [flat] * 3, t), baseline, 0.98, 10, use_floors=False)
    # 40 seconds of 2 MiB noise cannot show growth below 1 MiB/min: no leak called, no pass either.
    assert quiet is not None and judge(quiet, min_cycles=0).verdict == "inconclusive"


def test_replicas_ramping_at_different_rates_are_noise_not_a_leak():
    """A cluster window inside a long cycle: every pod climbs its own sawtooth ramp, none collects. The
    spread of the replicas' ramps must widen the interval (pods share a slope), not call a leak."""
    rng = np.random.default_rng(5)
    t = window(10)

    def ramp(mib_per_min):
        return MemoryModel(amplitude_bytes=(0.0, 0.0), leak_bytes_per_s=mib_per_min * PER_MIN)

    canary = pods(rng, [ramp(20.0), ramp(6.0)], t)
    baseline = pods(rng, [ramp(4.0), ramp(15.0)], t)
    est = memory_trends(canary, baseline, 0.98, 20)
    assert est is not None and est.method == SAMPLES
    assert est.low < 0 < est.high and judge(est).verdict == "inconclusive"
    # judged as one server's processes, the same curves do differ significantly
    assert memory_trends(canary, baseline, 0.98, 20, use_floors=False).low > 0

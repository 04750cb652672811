"""Judging: numbers per arm in, a verdict with its reason out. Pure functions, no fetching.

Decision rules (docs/gates.md explains them). Each bound of a gate is the smallest harmful effect it
must catch (a P99 ratio of 1.15, an error rate of 0.1%, a leak of 1.5 MiB/min per pod), and a verdict
says what the data showed about it:
- `fail` when the harm is significant: count-based bounds (error rate, share of requests above the P99
  bound, a P99 estimate) fail when the estimate is beyond the bound and its interval excludes the bound;
  relative comparisons (canary vs baseline) when the estimate is beyond the tolerance and the interval
  excludes "no difference", so noise alone does not revert a good build;
- `pass` only when the interval excludes the harm (its bound on the harmful side lies within the bound):
  data that could not have shown the regression do not pass it;
- otherwise `inconclusive`, with the interval, the harm it cannot yet exclude and `more_data`: how many
  times the data judged so far the interval needs to exclude it if the estimate stays where it is (the
  kind turns that into time at the window's rate). Anything missing or NaN is `inconclusive` too.
A threshold (CPU) judges the interval of the arm's mean over successive sub-windows of the window
against its bounds, the same rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gates import memory_trend, stats
from gates.memory_trend import LeakEstimate
from gates.record import Verdict

PASS, FAIL, INCONCLUSIVE = Verdict.PASS, Verdict.FAIL, Verdict.INCONCLUSIVE
MIB = 1024.0 * 1024.0
MORE_DATA_LIMIT = 1e4  # beyond this many times the data judged so far, "more data" is no answer


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    reason: str
    values: Mapping[str, Any] = field(default_factory=dict)  # per arm, plus derived (ratio, slope diff)
    threshold: Mapping[str, Any] = field(default_factory=dict)
    ci: Mapping[str, Any] = field(default_factory=dict)  # name -> [low, high]
    samples: Mapping[str, Any] = field(default_factory=dict)  # per arm
    # Inconclusive only: times the data judged so far at which every undecided check could pass if its
    # estimate stays where it is (None: unknown, or no amount of data would do).
    more_data: float | None = None


def data_needed(bound_at: Callable[[float], float], harm: float, *, upper: bool = True) -> float | None:
    """How many times the current data an interval needs before its bound clears `harm` (`upper`: the
    upper bound below it; else the lower bound above it), the estimate held where it is; `bound_at(k)`
    is the bound with k times the data. 1 when it clears already; None when no amount up to
    MORE_DATA_LIMIT would (the estimate itself is at the harm or beyond it)."""

    def clears(k: float) -> bool:
        b = bound_at(k)
        return _finite(b) and (b < harm if upper else b > harm)

    if clears(1.0):
        return 1.0
    if not clears(MORE_DATA_LIMIT):
        return None
    low, high = 1.0, MORE_DATA_LIMIT
    while high / low > 1.01:
        mid = math.sqrt(low * high)
        low, high = (low, mid) if clears(mid) else (mid, high)
    return high


def shrinking(value: float, bound: float, power: float = 0.5) -> Callable[[float], float]:
    """The bound of an interval around `value` whose half-width falls as data**-power (0.5: a mean of
    independent samples; 1.5: a slope over a window k times as long)."""
    return lambda k: value + (bound - value) * k**-power


def proportion_high(successes: float, trials: float, confidence: float) -> Callable[[float], float]:
    """A proportion's upper bound with k times the trials (and successes)."""
    return lambda k: stats.binomial_proportion(successes * k, trials * k, confidence).high


def rate_low(count: float, exposure: float, confidence: float) -> Callable[[float], float]:
    """A Poisson rate's lower bound with k times the exposure (and count)."""
    return lambda k: stats.poisson_rate(count * k, exposure * k, confidence).low


def most_data(needs: Sequence[float | None]) -> float | None:
    """The data a gate needs for all its undecided checks: the largest need, None if any is unknown."""
    if not needs or any(n is None for n in needs):
        return None
    return max(n for n in needs if n is not None)


def combine(parts: Sequence[tuple[Verdict, str]]) -> tuple[Verdict, str]:
    """Worst verdict of several checks (fail > inconclusive > pass) and the reasons behind it."""
    if not parts:
        return INCONCLUSIVE, "nothing was judged"
    verdict = Verdict.worst(v for v, _ in parts)
    return verdict, "; ".join(r for v, r in parts if v == verdict)


def _fmt(x: float | None, digits: int = 4) -> str:
    return "NaN" if x is None or not math.isfinite(x) else f"{x:.{digits}g}"


def _show(x: float, unit: str) -> str:
    if unit == "fraction":
        return f"{x:.1%}"
    return f"{_fmt(x)}{' ' + unit if unit else ''}"


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def judge_threshold(
    values: Mapping[str, float | None],
    *,
    arms: Sequence[str],
    subwindows: Mapping[str, Sequence[float]],
    min_points: int,
    confidence: float,
    max_value: float | None = None,
    min_value: float | None = None,
    samples: Mapping[str, float | None] | None = None,
    min_samples: int = 1,
    unit: str = "",
) -> Judgement:
    """Each judged arm within [min_value, max_value], judged by the interval of its mean over successive
    sub-windows of the window (`subwindows`: per arm, in time order; `stats.mean_interval`): fail when the
    interval lies beyond a bound, pass when it lies within both, else inconclusive, as are fewer than
    `min_points` sub-windows and a missing `values` (the window's own value, recorded beside the mean).
    Other arms are only recorded."""
    parts: list[tuple[Verdict, str]] = []
    needs: list[float | None] = []
    estimates = {a: stats.mean_interval(s, confidence) for a, s in subwindows.items()}
    ci: dict[str, Any] = {a: [e.low, e.high] for a, e in estimates.items() if e.n >= 2}
    for arm in arms:
        value = values.get(arm)
        count = None if samples is None else samples.get(arm)
        e = estimates.get(arm) or stats.mean_interval([], confidence)
        if samples is not None and (count is None or not _finite(count) or count < min_samples):
            parts.append((INCONCLUSIVE, f"{arm}: too few samples ({_fmt(count or 0)} < {min_samples})"))
            needs.append(min_samples / count if _finite(count) and count > 0 else None)  # type: ignore[operator]
        elif value is None or not _finite(value):
            parts.append((INCONCLUSIVE, f"{arm}: no value"))
            needs.append(None)
        elif e.n < min_points:
            parts.append((INCONCLUSIVE, f"{arm}: too few sub-windows ({e.n} < {min_points})"))
            needs.append(min_points / e.n if e.n > 0 else None)
        elif not (_finite(e.low) and _finite(e.high)):
            parts.append((INCONCLUSIVE, f"{arm}: interval not estimable"))
            needs.append(None)
        else:
            text = f"{arm}: {_show(e.value, unit)} (CI {_show(e.low, unit)}..{_show(e.high, unit)}, {e.n} sub-windows)"
            if max_value is not None and e.low > max_value:
                parts.append((FAIL, f"{text} significantly above max {_show(max_value, unit)}"))
            elif min_value is not None and e.high < min_value:
                parts.append((FAIL, f"{text} significantly below min {_show(min_value, unit)}"))
            else:
                # A bound the interval reaches is undecided: the mean's half-width falls as n**-0.5.
                open_bounds = []
                if max_value is not None and e.high >= max_value:
                    open_bounds.append(f"max {_show(max_value, unit)}")
                    needs.append(data_needed(shrinking(e.value, e.high), max_value))
                if min_value is not None and e.low <= min_value:
                    open_bounds.append(f"min {_show(min_value, unit)}")
                    needs.append(data_needed(shrinking(e.value, e.low), min_value, upper=False))
                if open_bounds:
                    parts.append((INCONCLUSIVE, f"{text} cannot yet exclude {' or '.join(open_bounds)}"))
                else:
                    parts.append((PASS, f"{text} within bounds"))
    verdict, reason = combine(parts)
    threshold: dict[str, Any] = {k: v for k, v in (("max", max_value), ("min", min_value)) if v is not None}
    threshold["min_points"] = min_points
    counts = dict(samples) if samples is not None else {a: e.n for a, e in estimates.items()}
    # The interval's centre beside the window's own value: they differ where an arm served part of it.
    shown = {**values, **{f"{a}_mean": e.value for a, e in estimates.items() if e.n > 0}}
    more = most_data(needs) if verdict is INCONCLUSIVE else None
    return Judgement(verdict, reason, shown, threshold, ci, counts, more_data=more)


def judge_latency_quantile(
    estimates: Mapping[str, stats.QuantileEstimate],
    *,
    quantile: float,
    arms: Sequence[str],
    max_seconds: float | None,
    max_ratio: float | None,
    min_samples: int,
    confidence: float,
    compare: bool = True,
    exceedance: Mapping[str, tuple[float, float]] | None = None,
    shift: stats.ShiftTest | None = None,
) -> Judgement:
    """Absolute bound on each judged arm's quantile and the canary/baseline ratio with its interval.

    `compare=False` (one arm has no traffic) judges the absolute bound only. `exceedance` (from a
    histogram: requests above `max_seconds`, all requests) judges the bound by counting instead of by
    the interpolated quantile: the quantile is above the bound exactly when more than 1 - q of the
    requests are, and with a bucket edge at the bound that count is exact.

    Relative check: fail when the canary is significantly worse than the baseline and its interval
    reaches the tolerance (the regression may be as large as `max_ratio`). Significance comes from
    `shift` (exact samples: the score test of `stats.quantile_shift`, one-sided at (1 - confidence) / 2)
    when given, else from the ratio's own interval (histograms).
    """
    label = f"p{quantile * 100:g}"
    parts: list[tuple[Verdict, str]] = []
    needs: list[float | None] = []
    values: dict[str, Any] = {a: e.value for a, e in estimates.items()}
    ci: dict[str, Any] = {a: [e.low, e.high] for a, e in estimates.items()}
    samples = {a: e.n for a, e in estimates.items()}
    threshold = {"max_seconds": max_seconds, "max_ratio": max_ratio, "min_samples": min_samples}
    needed = set(arms) | ({"baseline", "canary"} if compare and max_ratio is not None else set())
    short = [a for a in sorted(needed) if estimates.get(a) is None or estimates[a].n < min_samples]
    if short:
        counts = ", ".join(f"{a} n={estimates[a].n if a in estimates else 0}" for a in short)
        have = min(estimates[a].n if a in estimates else 0 for a in short)
        return Judgement(
            INCONCLUSIVE,
            f"too few samples for a {label} ({counts}; need {min_samples} per arm)",
            values,
            threshold,
            ci,
            samples,
            more_data=min_samples / have if have > 0 else None,
        )
    if max_seconds is not None:
        bound_ms = f"{max_seconds * 1000:.0f} ms"
        for arm in arms:
            v = estimates[arm].value
            if exceedance is not None and arm in exceedance:
                above, total = exceedance[arm]
                share = stats.binomial_proportion(above, total, confidence)
                values[f"{arm}_share_above_max"] = share.value
                ci[f"{arm}_share_above_max"] = [share.low, share.high]
                text = (
                    f"{arm}: {share.value:.2%} of requests above {bound_ms} "
                    f"(CI {share.low:.2%}-{share.high:.2%}; interpolated {label} {v * 1000:.1f} ms)"
                )
                if not _finite(share.value):
                    parts.append((INCONCLUSIVE, f"{arm}: no requests counted"))
                    needs.append(None)
                elif share.value > 1 - quantile and share.low > 1 - quantile:
                    parts.append((FAIL, f"{text}: {label} significantly above the bound"))
                elif share.high < 1 - quantile:
                    parts.append((PASS, f"{text}: {label} within the bound"))
                else:
                    parts.append((INCONCLUSIVE, f"{text}: cannot yet exclude a {label} above {bound_ms}"))
                    needs.append(data_needed(proportion_high(above, total, confidence), 1 - quantile))
            elif not _finite(v):
                parts.append((INCONCLUSIVE, f"{arm}: {label} not estimable"))
                needs.append(None)
            else:
                e = estimates[arm]
                text = f"{arm}: {label} {v * 1000:.1f} ms (CI {e.low * 1000:.1f}-{e.high * 1000:.1f})"
                if v > max_seconds and e.low > max_seconds:
                    parts.append((FAIL, f"{text} significantly above {bound_ms}"))
                elif e.high < max_seconds:
                    parts.append((PASS, f"{text} within {bound_ms}"))
                else:
                    parts.append((INCONCLUSIVE, f"{text}: cannot yet exclude {bound_ms}"))
                    needs.append(data_needed(shrinking(v, e.high), max_seconds))
    if max_ratio is not None and compare:
        r = stats.quantile_ratio(estimates["canary"], estimates["baseline"], confidence)
        values["ratio"] = r.ratio
        ci["ratio"] = [r.low, r.high]
        low = r.low
        how = "ratio interval"
        if shift is not None:
            values["ratio_low_if_unchanged"] = shift.low  # one-sided bound with the null's spread
            low, how = shift.low, f"vs the baseline's own spread at n={estimates['canary'].n}"
        text = f"canary {label} {_fmt(r.ratio, 3)}x baseline (CI {_fmt(r.low, 3)}-{_fmt(r.high, 3)})"
        if not (_finite(r.ratio) and _finite(r.high) and _finite(low)):
            parts.append((INCONCLUSIVE, f"canary/baseline {label} ratio not estimable"))
            needs.append(None)
        elif low > 1.0 and r.high >= max_ratio:
            parts.append(
                (
                    FAIL,
                    f"{text}: significantly worse (lower bound {_fmt(low, 3)} {how}) and may exceed "
                    f"{max_ratio:g}x",
                )
            )
        elif (at_most := stats.ratio_at_most(estimates["canary"], estimates["baseline"], r)) < max_ratio:
            parts.append((PASS, f"{text}: below {max_ratio:g}x"))
        elif (finest := _finest_ratio(estimates["canary"], estimates["baseline"])) >= max_ratio:
            c, b = estimates["canary"].bucket or (0, 0), estimates["baseline"].bucket or (0, 0)
            parts.append(
                (
                    INCONCLUSIVE,
                    f"{text}: the histogram's buckets (canary {_fmt(c[0], 3)}-{_fmt(c[1], 3)} s, baseline "
                    f"{_fmt(b[0], 3)}-{_fmt(b[1], 3)} s) cannot show a ratio below {max_ratio:g}x however many "
                    f"requests (at best {_fmt(finest, 3)}x): judge load-test samples (source: loadtest) or "
                    "give the servers finer latency buckets",
                )
            )
            needs.append(None)
        else:
            if at_most > r.high:
                text += f", at most {_fmt(at_most, 3)}x within the histogram's buckets"
            parts.append((INCONCLUSIVE, f"{text}: cannot yet exclude {max_ratio:g}x"))
            # The interval is symmetric in the log ratio and narrows as the square root of the samples.
            spread = math.log(at_most / r.ratio)
            needs.append(data_needed(lambda k: r.ratio * math.exp(spread * k**-0.5), max_ratio))
    elif max_ratio is not None:
        parts.append((PASS, "relative comparison skipped: one arm has no traffic"))
    verdict, reason = combine(parts)
    more = most_data(needs) if verdict is INCONCLUSIVE else None
    return Judgement(verdict, reason, values, threshold, ci, samples, more_data=more)


def _finest_ratio(canary: stats.QuantileEstimate, baseline: stats.QuantileEstimate) -> float:
    """The narrowest upper bound of the canary/baseline ratio that histograms allow with unlimited requests:
    the canary's quantile at the top of its bucket over the baseline's at the bottom of its own (0 when
    neither is binned: only sampling noise limits it)."""
    if canary.bucket is None and baseline.bucket is None:
        return 0.0
    top = canary.bucket[1] if canary.bucket is not None else canary.value
    bottom = baseline.bucket[0] if baseline.bucket is not None else baseline.value
    return top / bottom if bottom > 0 else math.inf


def judge_throughput(
    counts: Mapping[str, float | None],
    *,
    window_s: float,
    weights: Mapping[str, float],
    offered_rps: float | None,
    min_offered_fraction: float,
    max_share_drop: float,
    min_samples: int,
    confidence: float,
) -> Judgement:
    """Served requests per arm vs the arm's offered rate, and canary vs baseline per unit of traffic.

    Counts are treated as Poisson (open-loop arrivals split by weighted routing): a check fails when the
    interval of the served rate lies entirely below the bound and passes when it lies entirely above it.
    """
    parts: list[tuple[Verdict, str]] = []
    needs: list[float | None] = []
    values: dict[str, Any] = {}
    ci: dict[str, Any] = {}
    active = [a for a in ("baseline", "canary") if weights.get(a, 0.0) > 0]
    enough: list[str] = []
    for arm in active:
        count = counts.get(arm)
        offered_arm = None if offered_rps is None else offered_rps * weights[arm] / 100.0
        expected = offered_arm * window_s if offered_arm is not None else count
        if count is None or not _finite(count):
            parts.append((INCONCLUSIVE, f"{arm}: no request count"))
            needs.append(None)
            continue
        rate = stats.poisson_rate(count, window_s, confidence)
        values[f"{arm}_rps"] = rate.value
        ci[f"{arm}_rps"] = [rate.low, rate.high]
        if expected is None or expected < min_samples:
            parts.append(
                (INCONCLUSIVE, f"{arm}: too little traffic ({_fmt(expected or 0)} requests < {min_samples})")
            )
            needs.append(min_samples / expected if expected else None)
            continue
        enough.append(arm)
        if offered_arm is None:
            continue
        values[f"{arm}_offered_rps"] = offered_arm
        bound = min_offered_fraction * offered_arm
        text = (
            f"{arm}: served {_fmt(rate.value)} rps (CI {_fmt(rate.low)}-{_fmt(rate.high)}) of offered "
            f"{_fmt(offered_arm)} rps"
        )
        if rate.high < bound:
            parts.append((FAIL, f"{text}: below {min_offered_fraction:.0%} of it"))
        elif rate.low >= bound:
            parts.append((PASS, text))
        else:
            parts.append((INCONCLUSIVE, f"{text}: cannot yet exclude less than {min_offered_fraction:.0%}"))
            needs.append(data_needed(rate_low(float(count), window_s, confidence), bound, upper=False))
    if offered_rps is None:
        parts.append((PASS, "offered rate not given: achieved-vs-offered not judged"))
    if len(enough) == 2:
        cb, cc = float(counts["baseline"]), float(counts["canary"])  # type: ignore[arg-type]
        wc, wb = weights["canary"], weights["baseline"]
        r = stats.poisson_rate_ratio(cc, wc, cb, wb, confidence)
        values["canary_per_share_ratio"] = r.ratio
        ci["canary_per_share_ratio"] = [r.low, r.high]
        text = (
            f"canary serves {_fmt(r.ratio, 3)}x baseline per unit of traffic "
            f"(CI {_fmt(r.low, 3)}-{_fmt(r.high, 3)})"
        )
        if cb <= 0 or not _finite(r.ratio):
            parts.append((INCONCLUSIVE, f"per-share throughput: baseline served {cb:g} requests"))
            needs.append(None)
        elif r.ratio < 1 - max_share_drop and r.high < 1.0:
            parts.append((FAIL, f"{text}, more than {max_share_drop:.0%} below"))
        elif r.low > 1 - max_share_drop:
            parts.append((PASS, text))
        else:
            parts.append((INCONCLUSIVE, f"{text}: cannot yet exclude a drop of {max_share_drop:.0%}"))
            needs.append(
                data_needed(
                    lambda k: stats.poisson_rate_ratio(cc * k, wc, cb * k, wb, confidence).low,
                    1 - max_share_drop,
                    upper=False,
                )
            )
    if not active:
        parts.append((INCONCLUSIVE, "no arm has traffic"))
    verdict, reason = combine(parts)
    threshold = {
        "min_offered_fraction": min_offered_fraction,
        "max_share_drop": max_share_drop,
        "min_samples": min_samples,
    }
    return Judgement(
        verdict,
        reason,
        values,
        threshold,
        ci,
        {a: counts.get(a) for a in ("baseline", "canary")},
        more_data=most_data(needs) if verdict is INCONCLUSIVE else None,
    )


def judge_error_rate(
    errors: Mapping[str, float | None],
    requests: Mapping[str, float | None],
    *,
    arms: Sequence[str],
    max_rate: float,
    min_samples: int,
    confidence: float,
) -> Judgement:
    parts: list[tuple[Verdict, str]] = []
    values: dict[str, Any] = {}
    ci: dict[str, Any] = {}
    for arm in ("baseline", "canary"):
        e, n = errors.get(arm), requests.get(arm)
        if _finite(e) and _finite(n) and n > 0:  # type: ignore[operator]
            p = stats.binomial_proportion(float(e), float(n), confidence)  # type: ignore[arg-type]
            values[arm] = p.value
            ci[arm] = [p.low, p.high]
        else:
            values[arm] = None
    needs: list[float | None] = []
    for arm in arms:
        n = requests.get(arm)
        if not _finite(n) or n < min_samples:  # type: ignore[operator]
            parts.append((INCONCLUSIVE, f"{arm}: too few requests ({_fmt(n or 0)} < {min_samples})"))
            needs.append(min_samples / n if _finite(n) and n > 0 else None)  # type: ignore[operator]
        elif values.get(arm) is None:
            parts.append((INCONCLUSIVE, f"{arm}: no error count"))
            needs.append(None)
        else:
            lo, hi = ci[arm]
            e = float(errors[arm])  # type: ignore[arg-type]
            text = f"{arm}: error rate {values[arm]:.3%} (CI {lo:.3%}-{hi:.3%}; {_fmt(e)} of {_fmt(n)})"
            if values[arm] > max_rate and lo > max_rate:
                parts.append((FAIL, f"{text} significantly above {max_rate:.3%}"))
            elif hi < max_rate:
                parts.append((PASS, f"{text} below {max_rate:.3%}"))
            else:
                parts.append((INCONCLUSIVE, f"{text}: cannot yet exclude {max_rate:.3%}"))
                needs.append(
                    data_needed(proportion_high(e, float(n), confidence), max_rate)  # type: ignore[arg-type]
                )
    verdict, reason = combine(parts)
    return Judgement(
        verdict,
        reason,
        values,
        {"max": max_rate, "min_samples": min_samples},
        ci,
        dict(requests),
        more_data=most_data(needs) if verdict is INCONCLUSIVE else None,
    )


def judge_memory_leak(
    estimate: LeakEstimate | None,
    *,
    leak_bytes_per_s: float,
    min_points: int,
    min_cycles: int,
    confidence: float,
    origin: float = 0.0,
) -> Judgement:
    """Fail when the canary's memory grows significantly faster than the harmful rate (its interval
    above it) and than the baseline's, and is still growing over the later half of the window (a leak
    persists; growth that stopped, such as a one-time rise, is inconclusive). Pass when the canary's
    growth, or its excess over the baseline's, is shown to stay below the harmful rate (upper bound under
    it): slower growth does not matter. An interval across the harmful rate is inconclusive, which a
    growing window resolves: a warm-up that decelerates to nothing falls below it, a leak at twice the
    rate rises above it. Slopes are per pod (gates/memory_trend.py: the trend of the collection floors of
    an arm that saws, of every sample otherwise; when only one arm saws, only the canary's own slope can
    pass); a slope's interval narrows as the window's length to the power 1.5, which `more_data` counts
    in window lengths."""
    per_min = 60.0 / MIB
    harm = f"{leak_bytes_per_s * per_min:.3g} MiB/min"
    threshold = {
        "leak_mib_per_minute": leak_bytes_per_s * per_min,
        "min_points": min_points,
        "min_cycles": min_cycles,
    }
    if estimate is None:
        return Judgement(
            INCONCLUSIVE, f"too few memory points after warm-up (need {min_points} per pod)", {}, threshold
        )
    c, b = estimate.canary, estimate.baseline
    values: dict[str, Any] = {"canary": c.slope * per_min, "baseline": b.slope * per_min}
    values["canary_minus_baseline"] = estimate.difference * per_min
    values["method"] = estimate.method
    ci: dict[str, Any] = {
        "canary": [c.low * per_min, c.high * per_min],
        "baseline": [b.low * per_min, b.high * per_min],
        "canary_minus_baseline": [estimate.low * per_min, estimate.high * per_min],
    }
    sawing = {arm: t for arm, t in (("canary", c), ("baseline", b)) if t.method == memory_trend.FLOORS}
    for arm, trend in (("canary", c), ("baseline", b)):
        values[f"{arm}_pods"] = trend.pods
        if arm in sawing:
            values[f"{arm}_cycles"] = trend.cycles
        if trend.settled_from is not None:  # seconds after `origin` (the window's start)
            values[f"{arm}_settled_after_s"] = trend.settled_from - origin
    samples = {"canary": c.points, "baseline": b.points}
    if sawing and min(t.cycles for t in sawing.values()) < min_cycles:
        cycles = min(t.cycles for t in sawing.values())
        seen = ", ".join(f"{arm} {t.cycles}" for arm, t in sawing.items())
        return Judgement(
            INCONCLUSIVE,
            f"too few collection cycles to judge the floor trend ({seen}; need {min_cycles} per sawing "
            f"arm): the memory saws with cycles too long for this window",
            values,
            threshold,
            ci,
            samples,
            more_data=min_cycles / cycles if cycles > 0 else None,
        )
    if not all(_finite(x) for x in (c.slope, c.low, c.high, b.slope, estimate.low, estimate.high)):
        return Judgement(INCONCLUSIVE, "memory slope not estimable", values, threshold, ci, samples)
    how = {
        memory_trend.SAMPLES: f"{estimate.method} of {c.pods}+{b.pods} pods",
        memory_trend.FLOORS: f"{estimate.method}: {c.cycles}+{b.cycles} cycles of {c.pods}+{b.pods} pods",
    }.get(
        estimate.method,
        f"canary by {c.method}, baseline by {b.method} (only one arm saws), {c.pods}+{b.pods} pods",
    )
    text = (
        f"canary {c.slope * per_min:.3g} MiB/min per pod (CI {c.low * per_min:.3g}..{c.high * per_min:.3g}), "
        f"baseline {b.slope * per_min:.3g}, difference {estimate.difference * per_min:.3g} "
        f"(CI {estimate.low * per_min:.3g}..{estimate.high * per_min:.3g}); {how}"
    )
    if c.settled_from is not None:
        text += (
            "; the canary's earliest points lay below its later trend (a one-time rise) and were set aside"
        )
    later = c.later
    if later is not None:
        values["canary_later_half"] = later.slope * per_min
        ci["canary_later_half"] = [later.low * per_min, later.high * per_min]
    faster = c.low > leak_bytes_per_s and estimate.low > 0
    if faster and later is not None and later.low > 0:  # a leak persists; a one-time rise stops
        return Judgement(
            FAIL,
            f"memory leak: {text}; growing significantly faster than {harm} and than the baseline, and "
            f"still growing over the later half ({later.slope * per_min:.3g} MiB/min, "
            f"CI {later.low * per_min:.3g}..{later.high * per_min:.3g})",
            values,
            threshold,
            ci,
            samples,
        )
    if c.high < leak_bytes_per_s:
        return Judgement(PASS, f"{text}: growth below {harm}", values, threshold, ci, samples)
    # A floor trend against a ramp that may be part of an unseen cycle is no comparison to pass on.
    if estimate.high < leak_bytes_per_s and estimate.method != memory_trend.MIXED:
        return Judgement(
            PASS, f"{text}: growth above the baseline's below {harm}", values, threshold, ci, samples
        )
    more = [data_needed(shrinking(c.slope, c.high, 1.5), leak_bytes_per_s)]
    if estimate.method != memory_trend.MIXED:
        more.append(data_needed(shrinking(estimate.difference, estimate.high, 1.5), leak_bytes_per_s))
    why = f"cannot yet exclude a leak of {harm}"
    if faster:  # a longer window either shows the later half growing or brings the whole slope down
        if later is not None and _finite(later.low):
            more.append(data_needed(shrinking(later.slope, later.low, 1.5), 0.0, upper=False))
            seen = f"{later.slope * per_min:.3g} MiB/min, CI {later.low * per_min:.3g}..{later.high * per_min:.3g}"
        else:
            seen = "too few points there"
        why = (
            f"grew faster than {harm} but not significantly over the later half ({seen}): growth that "
            f"stopped, such as a one-time rise, is no leak; a longer window tells them apart"
        )
    known = [m for m in more if m is not None]
    return Judgement(
        INCONCLUSIVE,
        f"{text}: {why}",
        values,
        threshold,
        ci,
        samples,
        more_data=min(known) if known else None,
    )

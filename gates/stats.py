"""Pure statistics for the gates: arrays in, a named result out. No I/O, no Prometheus.

Why these estimators:
- Tail latency is compared with a quantile estimator, not a location test (Mann-Whitney tests
  medians and misses tail-only regressions). Harrell-Davis is a weighted average of all order
  statistics with lower variance than the single empirical order statistic; Maritz-Jarrett gives its
  standard error from the same weights, so no bootstrap loop is needed.
- Prometheus histograms only give bucket counts: the quantile is interpolated inside a bucket (as
  `histogram_quantile` does) and its interval comes from binomial bounds on the rank. That interval
  covers sampling noise only, not the unknown shape inside a bucket: from coarse buckets a quantile
  (and a ratio of two) is biased towards the interpolation, which is why relative tail comparisons
  prefer exact samples.
- Whether the canary's tail is worse is tested against the standard error the canary's quantile would
  have if its latencies came from the baseline's distribution (a score test: the variance under the
  null). A tail-only regression stretches the canary's tail, so its own (Maritz-Jarrett) standard
  error is large exactly when it regressed; judged by that Wald interval a 15% tail-only P99 regression
  at ~400 requests per arm is significant only ~60% of the time. The null standard error comes from
  an exponential fit to the baseline's log-latency tail (its top 10%), which rests on ~40 points
  instead of the ~4 order statistics around a P99, and overstates the spread of tails lighter than
  Pareto (lognormal, normal), so it errs on the side of passing.
- Memory trends under a garbage-collector sawtooth live in gates/memory_trend.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps


@dataclass(frozen=True)
class QuantileEstimate:
    value: float
    low: float
    high: float
    n: int
    se: float  # standard error of `value` (NaN when not defined)
    # From a histogram: inside a bucket the counts say nothing about where the quantile lies. `within` is
    # the interval widened to the outer edges of the buckets holding its ends (what a pass may rest on),
    # `bucket` the edges of the one holding `value` (what no number of requests can narrow).
    within: tuple[float, float] | None = None
    bucket: tuple[float, float] | None = None


@dataclass(frozen=True)
class RatioEstimate:
    ratio: float
    low: float
    high: float


@dataclass(frozen=True)
class ShiftTest:
    """Is the canary's quantile above the baseline's? Judged against the null "same distribution"."""

    ratio: float  # canary / baseline quantile (Harrell-Davis)
    low: float  # lower confidence bound of the ratio with the null standard error
    z: float  # log ratio over its null standard error
    tail_scale: float  # mean excess of log latency over the baseline's tail threshold
    tail_points: int  # baseline samples in that tail


@dataclass(frozen=True)
class MeanEstimate:
    value: float
    low: float
    high: float
    n: int
    se: float  # standard error of `value`, serial correlation included
    rho: float  # the lag-1 autocorrelation it allowed for


@dataclass(frozen=True)
class ProportionEstimate:
    value: float
    low: float
    high: float
    successes: float
    trials: float


def z_two_sided(confidence: float) -> float:
    """Two-sided normal quantile for `confidence` (0.95 -> 1.96)."""
    if not 0.5 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0.5, 1), got {confidence}")
    return float(sps.norm.ppf(0.5 + confidence / 2))


def _finite(samples: Sequence[float] | np.ndarray) -> np.ndarray:
    arr = np.asarray(samples, dtype=float).ravel()
    return arr[np.isfinite(arr)]


def harrell_davis_quantile(
    samples: Sequence[float] | np.ndarray, q: float, confidence: float = 0.95
) -> QuantileEstimate:
    """Harrell-Davis estimate of quantile `q` with a Maritz-Jarrett standard error and normal interval."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {q}")
    x = np.sort(_finite(samples))
    n = x.size
    if n == 0:
        nan = float("nan")
        return QuantileEstimate(nan, nan, nan, 0, nan)
    a, b = q * (n + 1), (1 - q) * (n + 1)
    edges = sps.beta.cdf(np.arange(n + 1) / n, a, b)
    w = np.diff(edges)
    c1 = float(np.dot(w, x))
    c2 = float(np.dot(w, x * x))
    se = math.sqrt(max(c2 - c1 * c1, 0.0))
    z = z_two_sided(confidence)
    return QuantileEstimate(c1, c1 - z * se, c1 + z * se, int(n), se)


def histogram_quantile(
    upper_bounds: Sequence[float], cumulative_counts: Sequence[float], q: float, confidence: float = 0.95
) -> QuantileEstimate:
    """Quantile `q` of a cumulative histogram (bucket upper bounds ascending, last may be +Inf).

    The point value interpolates linearly inside the bucket like PromQL's `histogram_quantile`, and so do
    `low` and `high`, binomial rank bounds (normal approximation): sampling noise only. `within` takes
    those ranks to the outer edges of their buckets instead: interpolating there claims a resolution the
    buckets do not have (measured, `make bench-gates`: a P99 15% higher in the same 0.4-0.6 s bucket
    passed a 1.15x ratio check on the interpolated bounds in nearly every window).
    """
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {q}")
    ub = np.asarray(upper_bounds, dtype=float)
    cc = np.maximum.accumulate(np.asarray(cumulative_counts, dtype=float))
    if ub.size == 0 or ub.size != cc.size:
        raise ValueError("upper_bounds and cumulative_counts must be non-empty and of equal length")
    order = np.argsort(ub)
    ub, cc = ub[order], cc[order]
    n = float(cc[-1])
    if n <= 0 or not math.isfinite(n):
        nan = float("nan")
        return QuantileEstimate(nan, nan, nan, 0, nan)

    def bucket_of(rank: float) -> int:
        return min(int(np.searchsorted(cc, min(max(rank, 0.0), n), side="left")), ub.size - 1)

    def edges(idx: int) -> tuple[float, float]:
        return (0.0 if idx == 0 else float(ub[idx - 1])), float(ub[idx])

    def at_rank(rank: float) -> float:
        idx = bucket_of(rank)
        if math.isinf(ub[idx]):  # beyond the last finite bucket: the best we can say is its bound
            finite = ub[np.isfinite(ub)]
            return float(finite[-1]) if finite.size else float("nan")
        lower_bound, upper_bound = edges(idx)
        lower_count = 0.0 if idx == 0 else float(cc[idx - 1])
        in_bucket = float(cc[idx]) - lower_count
        if in_bucket <= 0:
            return upper_bound
        return lower_bound + (upper_bound - lower_bound) * (min(max(rank, 0.0), n) - lower_count) / in_bucket

    z = z_two_sided(confidence)
    spread = z * math.sqrt(n * q * (1 - q))
    value = at_rank(q * n)
    low_rank, high_rank = math.floor(q * n - spread), math.ceil(q * n + spread)
    low, high = at_rank(low_rank), at_rank(high_rank)
    se = (high - low) / (2 * z) if math.isfinite(high - low) else float("nan")
    # +Inf at the top when the upper rank reaches the last bucket
    within = (edges(bucket_of(low_rank))[0], edges(bucket_of(high_rank))[1])
    return QuantileEstimate(value, low, high, int(round(n)), se, within, edges(bucket_of(q * n)))


def fraction_above(
    upper_bounds: Sequence[float], cumulative_counts: Sequence[float], threshold: float
) -> tuple[float, float]:
    """(count above `threshold`, total) from a cumulative histogram, interpolating inside a bucket."""
    ub = np.asarray(upper_bounds, dtype=float)
    cc = np.maximum.accumulate(np.asarray(cumulative_counts, dtype=float))
    total = float(cc[-1]) if cc.size else 0.0
    idx = int(np.searchsorted(ub, threshold, side="left"))
    if idx >= ub.size:
        return 0.0, total
    lower_bound = 0.0 if idx == 0 else float(ub[idx - 1])
    lower_count = 0.0 if idx == 0 else float(cc[idx - 1])
    if math.isinf(ub[idx]) or ub[idx] == threshold:
        below = float(cc[idx]) if ub[idx] == threshold else lower_count
    else:
        frac = (threshold - lower_bound) / (float(ub[idx]) - lower_bound)
        below = lower_count + frac * (float(cc[idx]) - lower_count)
    return total - below, total


def quantile_ratio(
    canary: QuantileEstimate, baseline: QuantileEstimate, confidence: float = 0.95
) -> RatioEstimate:
    """Canary/baseline ratio of two independent quantile estimates, interval by the delta method on logs."""
    if not (canary.value > 0 and baseline.value > 0) or canary.n == 0 or baseline.n == 0:
        nan = float("nan")
        return RatioEstimate(nan, nan, nan)
    ratio = canary.value / baseline.value
    rel = math.hypot(canary.se / canary.value, baseline.se / baseline.value)
    if not math.isfinite(rel):
        return RatioEstimate(ratio, float("nan"), float("nan"))
    z = z_two_sided(confidence)
    return RatioEstimate(ratio, ratio * math.exp(-z * rel), ratio * math.exp(z * rel))


def ratio_at_most(canary: QuantileEstimate, baseline: QuantileEstimate, ratio: RatioEstimate) -> float:
    """The upper bound of canary/baseline a pass may rest on: the interval's, and from histograms no lower
    than the canary's `within` top over the baseline's `within` bottom."""
    top = canary.within[1] if canary.within is not None else canary.high
    bottom = baseline.within[0] if baseline.within is not None else baseline.low
    if canary.within is None and baseline.within is None:
        return ratio.high
    return max(ratio.high, top / bottom if bottom > 0 else math.inf)


def quantile_shift(
    canary: Sequence[float] | np.ndarray,
    baseline: Sequence[float] | np.ndarray,
    q: float,
    confidence: float = 0.95,
    tail_fraction: float = 0.10,
) -> ShiftTest:
    """Score-type test that the canary's q-quantile exceeds the baseline's (positive samples, e.g. latency).

    Under the null the canary's samples come from the baseline's distribution, so the log ratio of the
    two Harrell-Davis quantiles has variance q / (1 - q) * s**2 * (1/n_canary + 1/n_baseline), where s
    is the log-quantile's slope in log(1 - q) (the sparsity). s comes from an exponential fit to the
    baseline's log samples above its (1 - tail_fraction) quantile: their mean excess over it, which is
    exact for a Pareto tail and larger than the local sparsity for lighter tails (conservative). The
    bound uses Student's t with the tail's point count as degrees of freedom (s is itself estimated).
    """
    if not 0.5 < q < 1.0:
        raise ValueError(f"quantile must be in (0.5, 1), got {q}")
    c, b = _finite(canary), _finite(baseline)
    c, b = c[c > 0], b[b > 0]
    nan = float("nan")
    k = int(round(tail_fraction * b.size))
    if c.size < 2 or k < 10:
        return ShiftTest(nan, nan, nan, nan, max(k, 0))
    ratio = harrell_davis_quantile(c, q).value / harrell_davis_quantile(b, q).value
    logs = np.sort(np.log(b))
    scale = float(np.mean(logs[-k:] - logs[-k - 1]))
    se = math.sqrt(q / (1 - q) * scale * scale * (1 / c.size + 1 / b.size))
    if not se > 0:
        return ShiftTest(ratio, nan, nan, scale, k)
    t = float(sps.t.ppf(0.5 + confidence / 2, k))
    return ShiftTest(ratio, ratio * math.exp(-t * se), math.log(ratio) / se, scale, k)


def lag1_autocorrelation(x: np.ndarray) -> float:
    """Correlation of each value with the next; 0 where it is undefined: fewer than 4 values, or a
    lagged half without variance (e.g. a flat series with one step, as an idle arm's memory is), which
    holds no evidence of serial correlation."""
    if x.size < 4:
        return 0.0
    head, tail = x[:-1] - x[:-1].mean(), x[1:] - x[1:].mean()
    scale = math.sqrt(float(head @ head) * float(tail @ tail))
    return float(head @ tail) / scale if scale > 0 else 0.0


def mean_interval(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> MeanEstimate:
    """Mean of consecutive values of one series (e.g. a utilisation over successive sub-windows) with a
    Student-t interval on n - 1 degrees of freedom. Neighbouring values of a load are alike (a burst
    spans several), which the sample variance alone would read as independent evidence: the variance of
    the mean is inflated by (1 + rho) / (1 - rho), an AR(1) series' factor, for the lag-1
    autocorrelation rho clipped to [0, 0.95] (a negative estimate does not narrow it). NaN bounds
    below 2 values."""
    x = _finite(values)
    nan = float("nan")
    if x.size < 2:
        return MeanEstimate(float(x[0]) if x.size else nan, nan, nan, int(x.size), nan, 0.0)
    mean = float(x.mean())
    rho = min(max(lag1_autocorrelation(x), 0.0), 0.95)
    se = float(x.std(ddof=1)) / math.sqrt(x.size) * math.sqrt((1 + rho) / (1 - rho))
    t = float(sps.t.ppf(0.5 + confidence / 2, x.size - 1))
    return MeanEstimate(mean, mean - t * se, mean + t * se, int(x.size), se, rho)


def binomial_proportion(successes: float, trials: float, confidence: float = 0.95) -> ProportionEstimate:
    """Proportion with a Clopper-Pearson interval; counts from Prometheus `increase` may be fractional."""
    if not trials > 0:
        nan = float("nan")
        return ProportionEstimate(nan, nan, nan, successes, trials)
    k = min(max(successes, 0.0), trials)
    alpha = 1 - confidence
    low = 0.0 if k <= 0 else float(sps.beta.ppf(alpha / 2, k, trials - k + 1))
    high = 1.0 if k >= trials else float(sps.beta.ppf(1 - alpha / 2, k + 1, trials - k))
    return ProportionEstimate(k / trials, low, high, successes, trials)


def poisson_rate(count: float, exposure: float, confidence: float = 0.95) -> ProportionEstimate:
    """Event rate count/exposure with the exact (Garwood) Poisson interval."""
    if not exposure > 0:
        nan = float("nan")
        return ProportionEstimate(nan, nan, nan, count, exposure)
    alpha = 1 - confidence
    k = max(count, 0.0)
    low = 0.0 if k <= 0 else float(sps.chi2.ppf(alpha / 2, 2 * k)) / 2
    high = float(sps.chi2.ppf(1 - alpha / 2, 2 * k + 2)) / 2
    return ProportionEstimate(k / exposure, low / exposure, high / exposure, count, exposure)


def poisson_rate_ratio(
    count_a: float, exposure_a: float, count_b: float, exposure_b: float, confidence: float = 0.95
) -> RatioEstimate:
    """Ratio of Poisson rates (a/b) with the exact interval conditional on the total count."""
    if not (exposure_a > 0 and exposure_b > 0) or count_a + count_b <= 0:
        nan = float("nan")
        return RatioEstimate(nan, nan, nan)
    share = binomial_proportion(count_a, count_a + count_b, confidence)
    scale = exposure_b / exposure_a

    def odds(p: float) -> float:
        return math.inf if p >= 1 else p / (1 - p) * scale

    ratio = odds(share.value) if count_b > 0 else math.inf
    return RatioEstimate(ratio, odds(share.low), odds(share.high))

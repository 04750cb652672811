"""Memory growth under a garbage-collector sawtooth: per-pod series in, per-arm trends out. Pure functions.

Serving processes' memory saws: it grows for minutes, drops at a collection or cache trim, and grows
again. A slow leak hides under that: a straight line through the raw series mostly measures where in
the cycle the window happened to start and end, and its residuals are one long correlated wave, so an
honest interval is too wide to call a leak of 1-3 MiB/min under a sawtooth of 100+ MiB. What does
carry the leak is the *lower envelope*: the floor each collection leaves behind rises by the leak
over each cycle and by nothing else. So:

1. Each pod's series is cut at its collections (a drop far beyond the series' step-to-step noise that
   stays down), and the lowest point after each collection is that cycle's floor. The stretch before
   the first collection in the window has no floor (the window opened mid-cycle) and is left out.
2. An arm's trend is one slope through all its pods' floors with one intercept per pod (pods are
   separate processes; summing their series would interleave their drops). The residual variance is
   pooled over both arms (under "the canary changed nothing" they share it), the t quantile uses the
   degrees of freedom that are left (few floors per window give a wide interval, not a false one), and
   positive lag-1 autocorrelation of the floors' residuals widens it further.
3. A one-time rise at the start of the window (a cache filling after the traffic share changed) shows
   as early floors below the line through the later ones. The earliest floors are set aside when, as a
   block, they lie significantly below that line (|z| > 3.5 against the pooled noise); a leak keeps
   every floor on the line, so it loses nothing. A rise in mid-window with few cycles to either side
   cannot be told from a leak; with enough cycles it leaves a significant lack of fit only if it is
   large, so short windows with long cycles say so through wide intervals rather than by guessing.
4. When the memory does not saw within the window (no pod collected twice and at most half of them once:
   smooth memory, or an embedded process that never returns pages, perhaps with one stray drop) every
   sample is a point of the trend, and the residuals' autocorrelation sets the effective sample size.
   The pods share one slope, so pods of one arm growing at different rates (replicas caught at
   different points of a long cycle) widen the interval: that spread is noise between replicas.
5. Whether the memory saws is decided per arm: a canary whose pods collect while the baseline's do not
   in the window (other heaps, other traffic) has its floors judged against the baseline's samples.
   Then the arms' noise is not pooled (a floor's scatter and a sample's are different things), the
   difference's degrees of freedom follow Welch-Satterthwaite, and the judge does not pass on the
   difference, which compares a floor trend with a ramp that may be part of an unseen cycle.
6. A leak persists; a one-time rise stops. Each arm's slope is also fitted through its points in the
   later half of its span alone (same noise, same degrees of freedom), and the judge fails a canary only
   when that later slope, too, is significantly above zero: a rise that ended before the window's
   middle, however steep, leaves the later half flat, so it fails there no more often than the gate's
   own error rate, while a leak grows in both halves. The price is power: a leak must show in half the
   window's floors, so short windows with long cycles hold (inconclusive) rather than fail.
7. `use_floors=False` (a short local step; the "pods" are one server's processes, not replicas) gives
   every process its own slope and the arm's is their mean: a leak confined to one process (a scheduler
   rank, not the tokenizer) would otherwise stay in the residuals of a common line and widen both arms'
   intervals until it hides itself (seen in CI: 100 MiB/min, interval from 0).

`memory_trends` returns, per arm, the slope with its interval, and the canary-minus-baseline difference
with its interval; `gates.judge.judge_memory_leak` decides.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

COLLECTION_THRESHOLD = 6.0  # a collection drops more than this many robust SDs of the series' steps
INITIAL_RISE_Z = 3.5  # early floors set aside when, as a block, this far below the later trend
RISE_SPAN = 0.5  # ... and only within this fraction of the window from its start
FLOORS, SAMPLES = "collection floors", "all samples"
MIXED = "collection floors in one arm, all samples in the other"

PodSeries = tuple[np.ndarray, np.ndarray]  # (unix seconds, bytes) of one pod or process


@dataclass(frozen=True)
class Floors:
    """The lowest point after each collection in one pod's series."""

    times: np.ndarray
    values: np.ndarray
    collections: int  # drops seen (the first one's floor starts the list; earlier samples have none)


@dataclass(frozen=True)
class LaterSlope:
    """An arm's slope through its points in the later half of its span (bytes per second)."""

    since: float  # the half's start (unix seconds)
    slope: float
    low: float
    high: float


@dataclass(frozen=True)
class ArmTrend:
    slope: float  # bytes per second, common to the arm's pods
    low: float
    high: float
    points: int  # floors (or samples) the slope rests on
    pods: int  # pods contributing at least one point
    collections: int  # collections seen over all pods
    cycles: int  # floor-to-floor intervals within pods: what a floor slope is made of
    settled_from: float | None  # points before this time were set aside as a one-time rise
    method: str  # FLOORS or SAMPLES: what the slope is fitted through
    later: LaterSlope | None = None  # the slope over the later half of the span (point 6 above)


@dataclass(frozen=True)
class LeakEstimate:
    method: str  # FLOORS or SAMPLES when both arms share it, else MIXED (or its mirror, see `mixed`)
    canary: ArmTrend
    baseline: ArmTrend
    difference: float  # canary minus baseline slope, bytes per second
    low: float
    high: float
    df: float  # degrees of freedom of the t quantile behind every interval
    autocorrelation: float  # pooled lag-1 autocorrelation of the residuals (clipped to [0, 0.95])


def collection_floors(
    times: np.ndarray, values: np.ndarray, threshold: float = COLLECTION_THRESHOLD
) -> Floors:
    """Floors of a sawtooth: a collection is a step down by more than `threshold` robust SDs of a step's
    noise below the median step, confirmed by the next samples staying down (a one-sample dip is not a
    collection); the floor is the lowest sample between it and the next collection."""
    t = np.asarray(times, dtype=float)
    y = np.asarray(values, dtype=float)
    empty = Floors(np.empty(0), np.empty(0), 0)
    d = np.diff(y)
    if d.size < 3:
        return empty
    centre = float(np.median(d))
    # The noise of one step, from second differences: a ramp cancels out of them, so a steep or uneven
    # sawtooth does not inflate the scale (its cycles' different slopes only show at their ends).
    scale = 1.4826 * float(np.median(np.abs(np.diff(d) - np.median(np.diff(d))))) / math.sqrt(3)
    if scale <= 0:  # piecewise-constant memory (pages): the spread of the steps themselves
        spread = np.abs(d - centre)
        scale = 1.4826 * float(np.median(spread)) or float(np.mean(spread))
    if scale <= 0:
        return empty
    cut = threshold * scale
    down = min(centre - cut, 0.0)
    drops: list[tuple[int, int]] = []  # (last sample before, first sample after) each collection
    i = 0
    while i < d.size:
        if d[i] < down:
            j = i
            while j + 1 < d.size and d[j + 1] < down:
                j += 1  # a collection spread over several scrapes is one collection
            before = float(np.max(y[max(i - 2, 0) : i + 1]))  # the level before it began to fall
            # stays down: the next sample, less the usual climb, is still well below (not a one-sample dip)
            if j + 2 >= y.size or y[j + 2] - centre < before - cut / 2:
                drops.append((i, j + 1))
            i = j + 1
        else:
            i += 1
    if not drops:
        return empty
    ft, fv = [], []
    for k, (_, begin) in enumerate(drops):
        end = drops[k + 1][0] if k + 1 < len(drops) else y.size - 1
        low = begin + int(np.argmin(y[begin : end + 1]))
        ft.append(t[low])
        fv.append(y[low])
    return Floors(np.asarray(ft), np.asarray(fv), len(drops))


@dataclass(frozen=True)
class _Fit:
    slope: float
    sxx: float  # the slope's variance is sigma^2 / sxx (sum of squares of times around each pod's mean)
    rss: float
    points: int
    pods: int
    parameters: int  # intercepts and slopes fitted
    lag1: float  # sum of products of consecutive residuals within pods


def _fit(groups: Sequence[PodSeries], own_slopes: bool = False) -> _Fit:
    """One intercept per group and one slope through all of them (ordinary least squares); with
    `own_slopes`, one slope per group (of those spanning time) and their mean as the slope."""
    centred = [(t - t.mean(), y - y.mean()) for t, y in groups if t.size]
    if own_slopes:
        centred = [(tc, yc) for tc, yc in centred if tc @ tc > 0]
    sxxs = [float(tc @ tc) for tc, _ in centred]
    if own_slopes:
        slopes = [float(tc @ yc) / s for (tc, yc), s in zip(centred, sxxs, strict=True)]
        slope = float(np.mean(slopes)) if slopes else math.nan
        # the mean of k slopes has variance sigma^2 * sum(1 / sxx_i) / k^2
        sxx = len(sxxs) ** 2 / sum(1.0 / s for s in sxxs) if sxxs else 0.0
    else:
        sxx = sum(sxxs)
        slope = sum(float(tc @ yc) for tc, yc in centred) / sxx if sxx > 0 else math.nan
        slopes = [slope] * len(centred)
    rss = lag1 = 0.0
    if sxx > 0:
        for (tc, yc), b in zip(centred, slopes, strict=True):
            r = yc - b * tc
            rss += float(r @ r)
            lag1 += float(r[:-1] @ r[1:]) if r.size > 1 else 0.0
    pods = len(centred)
    return _Fit(
        slope, sxx, rss, sum(tc.size for tc, _ in centred), pods, 2 * pods if own_slopes else pods + 1, lag1
    )


def _rho(fits: Sequence[_Fit]) -> float:
    rss = sum(f.rss for f in fits)
    rho = sum(f.lag1 for f in fits) / rss if rss > 0 else 0.0
    return min(max(rho, 0.0), 0.95) if math.isfinite(rho) else 0.0


def _initial_rise_end(groups: list[PodSeries], other: _Fit, inflate: float, limit: float) -> float | None:
    """The latest time s (up to `limit`) before which the pods' points, as a block, lie significantly below
    the trend through the points from s on (z < -INITIAL_RISE_Z); None when no block does. The latest,
    not the most significant: a rise that has mostly but not quite ended still tilts the later trend."""
    every = np.concatenate([t for t, _ in groups])
    candidates = np.unique(every[(every > every.min()) & (every <= limit)])
    best_s = None
    for s in candidates:
        kept = [(t[t >= s], y[t >= s]) for t, y in groups]
        fit = _fit(kept)
        df = fit.points - fit.parameters + (other.points - other.parameters)
        if not (fit.sxx > 0) or df < 2:
            continue
        sigma = math.sqrt((fit.rss + other.rss) / df * inflate)
        total = var = lever = 0.0
        for (t, y), (tk, yk) in zip(groups, kept, strict=True):
            early = t < s
            if tk.size == 0 or not early.any():
                continue
            k = int(early.sum())
            dt = t[early] - tk.mean()
            total += float(np.sum(y[early] - yk.mean() - fit.slope * dt))
            var += k + k * k / tk.size  # each residual, and the error of the pod's level
            lever += float(dt.sum())
        var += lever * lever / fit.sxx  # and of the extrapolated slope
        if sigma <= 0 or var <= 0:
            continue
        if total / (sigma * math.sqrt(var)) < -INITIAL_RISE_Z:
            best_s = float(s)
    return best_s


def _set_aside_initial_rise(
    groups: list[PodSeries], other: _Fit, inflate: float
) -> tuple[list[PodSeries], float | None]:
    """Drop every pod's points before a time s (within the first RISE_SPAN of the window) when, as a
    block, they lie significantly below the trend through the later points: a one-time rise such as a
    cache filling after a traffic change (it reaches every pod of the arm at once). Returns the groups and
    s (None: all kept)."""
    groups = [(t, y) for t, y in groups if t.size]
    if not groups:
        return groups, None
    every = np.concatenate([t for t, _ in groups])
    s = _initial_rise_end(groups, other, inflate, float(every.min()) + float(np.ptp(every)) * RISE_SPAN)
    if s is None:
        return groups, None
    return [(t[t >= s], y[t >= s]) for t, y in groups], s


def _clean(pods: Sequence[PodSeries], min_points: int) -> list[PodSeries]:
    out = []
    for t, y in pods:
        t, y = np.asarray(t, dtype=float), np.asarray(y, dtype=float)
        keep = np.isfinite(t) & np.isfinite(y)
        t, y = t[keep], y[keep]
        order = np.argsort(t, kind="stable")
        t, y = t[order], y[order]
        if t.size >= max(min_points, 3) and np.ptp(t) > 0:
            out.append((t, y))
    return out


def memory_trends(
    canary: Sequence[PodSeries],
    baseline: Sequence[PodSeries],
    confidence: float = 0.95,
    min_points: int = 3,
    use_floors: bool = True,
) -> LeakEstimate | None:
    """Per-arm memory slopes (bytes/s) from each arm's per-pod series, and canary minus baseline.

    Pods with fewer than `min_points` finite samples are left out; None when an arm has no pod left.
    Intervals are two-sided at `confidence`; NaN where the points leave no degrees of freedom.
    `use_floors=False` judges every sample even when the memory saws, each pod with its own slope: for
    windows much shorter than a collection cycle (a short demo step), where no floor trend can be had and
    a stray trim is not a cycle, and the pods are one server's processes (point 7 above).
    """
    pods = {"canary": _clean(canary, min_points), "baseline": _clean(baseline, min_points)}
    if not pods["canary"] or not pods["baseline"]:
        return None
    floors = {arm: [collection_floors(t, y) for t, y in series] for arm, series in pods.items()}
    # The memory saws when a pod was seen collecting twice, or more than half of the pods once (cycles up
    # to the window's length); a single stray drop does not make it saw, also not with one pod per arm.
    # Then each arm whose own pods saw is judged by its floors, any other by its samples (point 5).
    any_saw = use_floors and _saws([f.collections for arm in floors.values() for f in arm])
    saws = {arm: any_saw and _saws([f.collections for f in floors[arm]]) for arm in pods}
    method = {arm: FLOORS if saws[arm] else SAMPLES for arm in pods}
    mixed = len(set(method.values())) > 1
    points: dict[str, list[PodSeries]] = {
        arm: ([(f.times, f.values) for f in floors[arm]] if saws[arm] else list(pods[arm])) for arm in pods
    }
    first = {arm: _fit(points[arm]) for arm in pods}
    inflate = {arm: 1.0 if saws[arm] else _inflation([first[a] for a in pods if not saws[a]]) for arm in pods}
    settled: dict[str, float | None] = {}
    for arm, other in (("canary", "baseline"), ("baseline", "canary")):
        # noise is pooled over the arms only when they were fitted through the same kind of points
        noise_from = _NO_FIT if mixed else first[other]
        points[arm], settled[arm] = _set_aside_initial_rise(points[arm], noise_from, inflate[arm])
    fits = {arm: _fit(points[arm], own_slopes=not use_floors) for arm in pods}
    groups = [list(pods)] if not mixed else [[arm] for arm in pods]
    se: dict[str, float] = {}
    s2_of: dict[str, float] = {}
    df_of: dict[str, float] = {}
    rho_all = _rho(list(fits.values()))
    for group in groups:
        group_fits = [fits[a] for a in group]
        rho = _rho(group_fits)
        df = sum(f.points - f.parameters for f in group_fits)
        ok = df >= 1 and all(f.sxx > 0 for f in group_fits)
        s2 = sum(f.rss for f in group_fits) / df * (1 + rho) / (1 - rho) if ok else math.nan
        for arm in group:
            s2_of[arm] = s2
            se[arm] = math.sqrt(s2 / fits[arm].sxx) if ok else math.nan
            df_of[arm] = max(df * (1 - rho) / (1 + rho), 1.0) if ok else math.nan
    trend: dict[str, ArmTrend] = {}
    for arm, fit in fits.items():
        half = _t(confidence, df_of[arm]) * se[arm]
        kept = [t.size for t, _ in points[arm] if t.size]
        trend[arm] = ArmTrend(
            slope=fit.slope,
            low=fit.slope - half,
            high=fit.slope + half,
            points=fit.points,
            pods=fit.pods,
            collections=sum(f.collections for f in floors[arm]),
            cycles=sum(max(k - 1, 0) for k in kept),
            settled_from=settled[arm],
            method=method[arm],
            later=_later_slope(pods[arm], points[arm], s2_of[arm], df_of[arm], confidence, not use_floors),
        )
    diff = fits["canary"].slope - fits["baseline"].slope
    se_diff = math.hypot(se["canary"], se["baseline"])
    if mixed:  # Welch-Satterthwaite degrees of freedom of a difference of two unpooled slopes
        terms = [se[a] ** 4 / df_of[a] for a in pods]
        df_diff = (
            se_diff**4 / sum(terms) if all(math.isfinite(x) for x in terms) and sum(terms) > 0 else math.nan
        )
    else:
        df_diff = df_of["canary"]
    half = _t(confidence, df_diff) * se_diff
    return LeakEstimate(
        MIXED if mixed else method["canary"],
        trend["canary"],
        trend["baseline"],
        diff,
        diff - half,
        diff + half,
        df_diff if math.isfinite(df_diff) else 0.0,
        rho_all,
    )


def _later_slope(
    series: Sequence[PodSeries],
    points: Sequence[PodSeries],
    s2: float,
    df: float,
    confidence: float,
    own_slopes: bool,
) -> LaterSlope:
    """The slope through `points` from the middle of the span of `series` on, its interval from the whole
    fit's noise `s2` and degrees of freedom (the later half alone has few of either). NaN when the later
    half holds no two points of a pod to fit through."""
    since = (min(float(t[0]) for t, _ in series) + max(float(t[-1]) for t, _ in series)) / 2
    fit = _fit([(t[t >= since], y[t >= since]) for t, y in points], own_slopes)
    if not (fit.sxx > 0 and math.isfinite(s2)):
        return LaterSlope(since, math.nan, math.nan, math.nan)
    half = _t(confidence, df) * math.sqrt(s2 / fit.sxx)
    return LaterSlope(since, fit.slope, fit.slope - half, fit.slope + half)


_NO_FIT = _Fit(0.0, 0.0, 0.0, 0, 0, 0, 0.0)  # contributes no noise to a pooled estimate


def _saws(collections: Sequence[int]) -> bool:
    return max(collections) >= 2 or 2 * sum(c >= 1 for c in collections) > len(collections)


def _inflation(fits: Sequence[_Fit]) -> float:
    """Consecutive samples are correlated: the variance of a block of them is this much larger."""
    rho = _rho(fits)
    return (1 + rho) / (1 - rho)


def _t(confidence: float, df: float) -> float:
    return float(sps.t.ppf(0.5 + confidence / 2, df)) if math.isfinite(df) else math.nan


__all__ = [
    "COLLECTION_THRESHOLD",
    "FLOORS",
    "INITIAL_RISE_Z",
    "MIXED",
    "LaterSlope",
    "SAMPLES",
    "ArmTrend",
    "Floors",
    "LeakEstimate",
    "PodSeries",
    "collection_floors",
    "memory_trends",
]

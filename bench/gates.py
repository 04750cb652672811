"""Statistical benchmark of the gate judges over many seeded windows (`make bench-gates`).

Every window draws fresh synthetic arms (testkit/synthetic_arms.py) and is judged by the same functions the
gates use (gates/judge.py on gates/stats.py and gates/memory_trend.py) with the packaged gate parameters.
Three parts, rates with 95% Wilson intervals:

- The bar, per gate and per cell of a grid of window lengths and noise levels: a canary with exactly the
  gate's declared harmful effect must pass in at most 5% of windows (the rest fail or are inconclusive),
  and a healthy canary must fail in at most 1%. Latency P99 (exact load-test samples, sglang's default
  histogram buckets, and buckets 4% apart): harm is a P99 ratio of 1.15 (the whole distribution slower,
  or the tail only) and a P99 at the absolute bound; error rate: the bound itself; throughput: a canary serving 5% less than its
  share (90% of offered when it takes all traffic); memory: 1.5 MiB/min per pod under garbage-collector
  sawtooths of 16-512 MiB with 1-10 minute cycles, over windows of 10-60 minutes; healthy includes a
  one-time rise that then stays flat, and a leak at 4x the rate shows the gate's power.
- Time to pass: a healthy canary's data arrive as a step goes on; every gate is judged at each
  evaluation (every 10 s) and the first pass is timed. The median over runs, per gate, rate and share, is
  compared with `python -m rollout plan`'s prediction for the same model (gates/evidence.py).
- Repeated looks: a step that holds for evidence judges again and again, and a harmful canary gets a
  pass at any one of those looks. Per gate, the share of harmful runs whose first decided verdict in a
  step held up to its maximum bake is a pass (informative: each look's rate is what the bar bounds).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
from scipy import stats as sps

from backend.metrics import E2E_BUCKETS
from gates import judge as J
from gates import stats
from gates.config import load_gate_file
from gates.evidence import Assumptions, time_to_pass
from gates.kinds import KINDS
from gates.kinds import error_rate as error_kind
from gates.kinds import memory_leak as memory_kind
from gates.kinds import throughput as throughput_kind
from gates.sequential import Looks, judge_held, pass_confidence
from gates.spec import GateSpec
from rollout.plan import PROFILES
from testkit.synthetic_arms import FINE_BUCKETS, MIB, LatencyModel, MemoryModel, gc_sawtooth, tail_stretch

GATES = {g.name: g for g in load_gate_file(None, profile="local").gates}  # the packaged gates, as shipped
P99 = GATES["latency_e2e_p99"]
RATE = PROFILES["default"].request_rate  # requests/s offered: the default profile's
HARM_PASS, HEALTHY_FAIL = 0.05, 0.01  # the bar
SIGMAS = (0.10, 0.20, 0.30)  # latency log-sd: 0.1 a fixed-length workload, 0.3 a mixed one
LATENCY_WINDOWS_MIN = (2, 5, 10, 20)
SHARES = (10, 50)  # the canary's share where both arms have traffic
COUNT_WINDOWS_MIN = (2, 5, 10, 20, 40)
LEAK_WINDOWS_MIN = (10, 25, 40, 60)
LEAK_PERIODS_MIN = (1, 5, 10)
LEAK_AMPLITUDES_MIB = (16, 64, 200, 512)
PODS_PER_ARM = 2
RISE_MIB, RISE_DELAY_S, RISE_S = (32.0, 256.0), (0.0, 30.0), (60.0, 300.0)
# A lognormal's log-sparsity at the P99 per unit of log-sd, (1 - q) / phi(z_q): what the plan's tail scale is.
TAIL_SCALE_PER_SIGMA = 0.01 / float(sps.norm.pdf(sps.norm.ppf(0.99)))
LOOK_S = 10.0  # one evaluation every LOOK_S in the time-to-pass and repeated-look runs


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Cell:
    """One gate, one case, one grid cell: how its windows were judged."""

    gate: str
    case: str  # "healthy ..." or "harm ..."
    grid: dict
    windows: int
    passes: int
    inconclusive: int
    fails: int

    @property
    def harmful(self) -> bool:
        return self.case.startswith("harm")

    @property
    def bad(self) -> int:  # what the bar bounds: a harmful canary passing, a healthy one failing
        return self.passes if self.harmful else self.fails

    @property
    def limit(self) -> float:
        return HARM_PASS if self.harmful else HEALTHY_FAIL


def _cell(
    gate: str, case: str, grid: dict, windows: int, trial: Callable[[np.random.Generator], str], seed: int
) -> Cell:
    rng = np.random.default_rng(seed)
    verdicts = [trial(rng) for _ in range(windows)]
    return Cell(
        gate,
        case,
        grid,
        windows,
        verdicts.count("pass"),
        verdicts.count("inconclusive"),
        verdicts.count("fail"),
    )


# -- latency --------------------------------------------------------------------------------------------
# Where the P99 comes from: exact samples, or a histogram with sglang's default buckets or with edges 4%
# apart (a server given finer buckets, testkit.synthetic_arms.FINE_BUCKETS).
SOURCES = {"loadtest": (), "histogram": E2E_BUCKETS, "histogram 4%": FINE_BUCKETS.e2e}


def _histogram(samples_s: np.ndarray, edges: tuple[float, ...]) -> tuple[list[float], list[float]]:
    bounds = [*edges, math.inf]
    return bounds, [float(np.count_nonzero(samples_s <= b)) for b in bounds]


def judge_p99(
    baseline_s: np.ndarray,
    canary_s: np.ndarray,
    source: str,
    *,
    max_seconds: float | None = None,
    relative: bool = True,
    gate: GateSpec = P99,
) -> J.Judgement:
    """The `latency_e2e_p99` gate's judge on one window, relative and/or against `max_seconds`."""
    q, confidence = float(gate.params["quantile"]), gate.confidence
    arms = (("baseline", baseline_s), ("canary", canary_s))
    shift, exceedance = None, None
    if source == "loadtest":
        est = {a: stats.harrell_davis_quantile(x, q, confidence) for a, x in arms}
        shift = stats.quantile_shift(canary_s, baseline_s, q, confidence) if relative else None
    else:
        est = {a: stats.histogram_quantile(*_histogram(x, SOURCES[source]), q, confidence) for a, x in arms}
        if max_seconds is not None:
            exceedance = {
                a: stats.fraction_above(*_histogram(x, SOURCES[source]), max_seconds) for a, x in arms
            }
    return J.judge_latency_quantile(
        est,
        quantile=q,
        arms=["canary"],
        max_seconds=max_seconds,
        max_ratio=float(gate.params["max_ratio"]) if relative else None,
        min_samples=int(gate.params["min_samples"]),
        confidence=confidence,
        shift=shift,
        exceedance=exceedance,
    )


LATENCY_CASES = (
    "healthy A/A",
    "harm P99 x1.15, all slower",
    "harm P99 x1.15, tail only",
    "harm P99 at the bound",
)


def latency_trial(
    rng: np.random.Generator,
    *,
    model: LatencyModel,
    canary_n: float,
    baseline_n: float,
    source: str,
    case: str,
) -> str:
    """One window: Poisson request counts per arm, latencies from `model`, the canary changed by `case`."""
    baseline = model.sample(rng, rng.poisson(baseline_n))
    canary = model.sample(rng, rng.poisson(canary_n))
    ratio = float(P99.params["max_ratio"])
    if case == "harm P99 at the bound":  # the absolute check alone, the bound at the model's P99
        return judge_p99(baseline, canary, source, max_seconds=model.quantile(0.99), relative=False).verdict
    if case == "harm P99 x1.15, all slower":
        canary = ratio * canary
    elif case == "harm P99 x1.15, tail only":
        canary = tail_stretch(canary, model, ratio)
    return judge_p99(baseline, canary, source).verdict


def latency_cells(windows: int, seed: int) -> list[Cell]:
    cells = []
    for source in SOURCES:
        for sigma in SIGMAS:
            model = LatencyModel(median_s=0.35, sigma=sigma)
            for share in SHARES:
                for minutes in LATENCY_WINDOWS_MIN:
                    n = {
                        a: RATE * w / 100 * minutes * 60
                        for a, w in (("canary", share), ("baseline", 100 - share))
                    }
                    grid = {"source": source, "log_sd": sigma, "share": share, "window_min": minutes}
                    for k, case in enumerate(LATENCY_CASES):
                        trial = partial(
                            latency_trial,
                            model=model,
                            canary_n=n["canary"],
                            baseline_n=n["baseline"],
                            source=source,
                            case=case,
                        )
                        cells.append(_cell("latency_e2e_p99", case, grid, windows, trial, seed + k))
            _progress(f"  latency: {source}, log-sd {sigma} done")
    return cells


# -- error rate and throughput ----------------------------------------------------------------------------
def counts_judgement(
    rng: np.random.Generator,
    *,
    share: float,
    window_s: float,
    error_rate: float,
    served_fraction: float,
    gate: str,
) -> J.Judgement:
    """One window of Poisson arrivals split by weight; the canary serves `served_fraction` of its arrivals
    and each served request fails with `error_rate`."""
    w = {"baseline": 100.0 - share, "canary": float(share)}
    arrivals = {a: float(rng.poisson(RATE * w[a] / 100 * window_s)) for a in w}
    served = {
        "baseline": arrivals["baseline"],
        "canary": float(rng.binomial(int(arrivals["canary"]), served_fraction)),
    }
    errors = {a: float(rng.binomial(int(served[a]), error_rate)) for a in w}
    return judge_counts(GATES[gate], served, errors, w, window_s, RATE)


def counts_verdict(rng: np.random.Generator, **window) -> str:
    return counts_judgement(rng, **window).verdict


def judge_counts(
    gate: GateSpec, served: dict, errors: dict, weights: dict, window_s: float, rate: float
) -> J.Judgement:
    if gate.kind == "error_rate":
        return error_kind.judge(gate, errors, served)
    return throughput_kind.judge(gate, served, window_s, weights, rate)


def count_cases(gate: str, share: float) -> list[tuple[str, dict]]:
    if gate == "error_rate":
        bound = float(GATES[gate].params["max"])
        return [
            ("healthy, no errors", {"error_rate": 0.0, "served_fraction": 1.0}),
            (f"healthy, {bound / 5:.2%} errors", {"error_rate": bound / 5, "served_fraction": 1.0}),
            (f"harm {bound:.2%} errors (the bound)", {"error_rate": bound, "served_fraction": 1.0}),
        ]
    p = GATES[gate].params
    drop = float(p["max_share_drop"]) if share < 100 else 1.0 - float(p["min_offered_fraction"])
    return [
        ("healthy, serves its share", {"error_rate": 0.0, "served_fraction": 1.0}),
        (f"harm serves {1 - drop:.0%} of its share", {"error_rate": 0.0, "served_fraction": 1.0 - drop}),
    ]


def count_cells(windows: int, seed: int) -> list[Cell]:
    cells = []
    for gate in ("error_rate", "throughput"):
        for share in (*SHARES, 100):
            for minutes in COUNT_WINDOWS_MIN:
                grid = {"share": share, "window_min": minutes}
                for k, (case, effect) in enumerate(count_cases(gate, share)):
                    trial = partial(
                        counts_verdict,
                        share=share,
                        window_s=minutes * 60.0,
                        gate=gate,
                        **effect,
                    )
                    cells.append(_cell(gate, case, grid, windows, trial, seed + 10 + k))
        _progress(f"  {gate} done")
    return cells


# -- memory leak ------------------------------------------------------------------------------------------
def judge_memory(
    rng: np.random.Generator, canary: Iterable[MemoryModel], baseline: Iterable[MemoryModel], window_s: float
) -> J.Judgement:
    """The default memory-leak gate's judge as one evaluation judges it: every pod sampled at the gate's
    step (as `evaluate` picks it for the window) from the window's start, the warm-up left out as the
    evaluator leaves it out, a pass on either of its two intervals at half the budget each."""
    t = memory_times(window_s)
    pods = {
        arm: [model.sample(rng, t) for model in models]
        for arm, models in (("canary", canary), ("baseline", baseline))
    }
    gate = GATES["memory_leak"]
    return judge_held(
        partial(judge_memory_series, t, pods), gate, pass_confidence(gate, None, KINDS[gate.kind])
    )


def memory_times(window_s: float) -> np.ndarray:
    p = GATES["memory_leak"].params
    return np.arange(
        0.0,
        window_s + 1e-9,
        memory_kind.sampling_step(GATES["memory_leak"], window_s - float(p["warmup_seconds"])),
    )


def judge_memory_series(
    t: np.ndarray, values: dict[str, list[np.ndarray]], gate: GateSpec = GATES["memory_leak"]
) -> J.Judgement:
    """Each arm's pods sampled at times `t` from the window's start; the warm-up left out."""
    judged = t >= float(gate.params["warmup_seconds"])
    pods = {arm: [(t[judged], y[judged]) for y in ys] for arm, ys in values.items()}
    return memory_kind.judge(gate, pods["canary"], pods["baseline"])


def leak_mib_per_min() -> float:
    return float(GATES["memory_leak"].params["leak_bytes_per_minute"]) / MIB


LEAK_CASES = (
    "healthy flat",
    "healthy one-time rise",
    "harm leak at the declared rate",
    "harm leak at 4x the declared rate",  # bounded like the rest; its fails show the gate's power
)


def sawtooth_trial(
    rng: np.random.Generator, *, window_min: float, period_min: float, amplitude_mib: float, case: str
) -> str:
    """One window, PODS_PER_ARM pods per arm with their own phase; the canary's pods leak at the declared
    rate (or 4x), or rise once after the window opens (32-256 MiB over 1-5 min) and stay."""
    leak = leak_mib_per_min() * (4.0 if "4x" in case else 1.0) if case.startswith("harm") else 0.0
    rises = case == "healthy one-time rise"

    def pod(leak: float, rises: bool) -> MemoryModel:
        return gc_sawtooth(
            amplitude_mib,
            period_min,
            leak,
            rise_mib=rng.uniform(*RISE_MIB) if rises else 0.0,
            rise_delay_s=rng.uniform(*RISE_DELAY_S),
            rise_s=rng.uniform(*RISE_S),
        )

    canary = [pod(leak, rises) for _ in range(PODS_PER_ARM)]
    baseline = [pod(0.0, False) for _ in range(PODS_PER_ARM)]
    return judge_memory(rng, canary, baseline, window_min * 60.0).verdict


def leak_cells(windows: int, seed: int) -> list[Cell]:
    cells = []
    t0 = time.monotonic()
    for window in LEAK_WINDOWS_MIN:
        for period in LEAK_PERIODS_MIN:
            for amplitude in LEAK_AMPLITUDES_MIB:
                grid = {"window_min": window, "period_min": period, "amplitude_mib": amplitude}
                for k, case in enumerate(LEAK_CASES):
                    trial = partial(
                        sawtooth_trial,
                        window_min=window,
                        period_min=period,
                        amplitude_mib=amplitude,
                        case=case,
                    )
                    cells.append(_cell("memory_leak", case, grid, windows, trial, seed + 100 + k))
            _progress(
                f"  memory: window {window} min, period {period} min done ({time.monotonic() - t0:.0f}s)"
            )
    return cells


# -- a step as it goes on: time to pass, and repeated looks ------------------------------------------------
# The judgement of a window from the step's start to t seconds, by the gate given (its confidence may be
# the held step's pass bound)
Look = Callable[[float, GateSpec], J.Judgement]
Stream = Callable[[np.random.Generator, float, float, float, bool], Look]  # (rng, rate, share, horizon, harm)


def latency_stream(sigma: float) -> Stream:
    """Requests arrive as a Poisson process per arm; a look judges those completed so far, relative and
    against the absolute bound, from exact load-test samples. The median keeps the P99 well inside the
    packaged 600 ms bound, as the plan assumes (no request above it)."""
    model = LatencyModel(median_s=0.25, sigma=sigma)
    ratio = float(P99.params["max_ratio"])

    def start(rng: np.random.Generator, rate: float, share: float, horizon_s: float, harm: bool) -> Look:
        arms = {}
        for arm, w in (("canary", share), ("baseline", 100.0 - share)):
            n = rng.poisson(rate * w / 100 * horizon_s)
            latency = model.sample(rng, n)
            arms[arm] = (
                np.sort(rng.uniform(0, horizon_s, n)),
                ratio * latency if harm and arm == "canary" else latency,
            )

        def look(t: float, gate: GateSpec) -> J.Judgement:
            seen = {a: x[: np.searchsorted(at, t)] for a, (at, x) in arms.items()}
            return judge_p99(
                seen["baseline"],
                seen["canary"],
                "loadtest",
                max_seconds=float(gate.params["max_seconds"]),
                gate=gate,
            )

        return look

    return start


def counts_stream(gate: str) -> Stream:
    """Served requests and errors accumulate per LOOK_S; each look judges the counts so far."""

    def start(rng: np.random.Generator, rate: float, share: float, horizon_s: float, harm: bool) -> Look:
        effect = count_cases(gate, share)[-1 if harm else 0][1]
        w = {"baseline": 100.0 - share, "canary": float(share)}
        steps = int(horizon_s / LOOK_S) + 1
        arrived = {a: rng.poisson(rate * w[a] / 100 * LOOK_S, steps) for a in w}
        served = {
            "baseline": arrived["baseline"],
            "canary": rng.binomial(arrived["canary"], effect["served_fraction"]),
        }
        failed = {a: rng.binomial(served[a], effect["error_rate"]) for a in w}
        served_sum = {a: np.cumsum(x).astype(float) for a, x in served.items()}
        failed_sum = {a: np.cumsum(x).astype(float) for a, x in failed.items()}

        def look(t: float, spec: GateSpec) -> J.Judgement:
            i = min(max(int(round(t / LOOK_S)) - 1, 0), steps - 1)
            return judge_counts(
                spec, {a: served_sum[a][i] for a in w}, {a: failed_sum[a][i] for a in w}, w, t, rate
            )

        return look

    return start


def memory_stream(noise_mib: float) -> Stream:
    """The plan's model of memory: flat (or leaking at the declared rate) with independent noise around
    it, one series per pod on a one-second grid; a look samples it at the gate's step."""

    def start(rng: np.random.Generator, rate: float, share: float, horizon_s: float, harm: bool) -> Look:
        grid = np.arange(0.0, horizon_s + 1.0)
        slope = {"canary": leak_mib_per_min() * MIB / 60.0 if harm else 0.0, "baseline": 0.0}
        series = {
            a: [
                2048 * MIB + slope[a] * grid + rng.normal(0.0, noise_mib * MIB, grid.size)
                for _ in range(PODS_PER_ARM)
            ]
            for a in slope
        }

        def look(t: float, gate: GateSpec) -> J.Judgement:
            times = memory_times(t)
            index = np.round(times).astype(int)
            return judge_memory_series(times, {a: [y[index] for y in ys] for a, ys in series.items()}, gate)

        return look

    return start


STREAM_SIGMA, STREAM_MEMORY_NOISE_MIB = 0.20, 1.0
STREAMS: dict[str, Stream] = {
    "error_rate": counts_stream("error_rate"),
    "throughput": counts_stream("throughput"),
    "latency_e2e_p99": latency_stream(STREAM_SIGMA),
    "memory_leak": memory_stream(STREAM_MEMORY_NOISE_MIB),
}
# The plan's assumptions for these models: what `python -m rollout plan` would be told about them.
STREAM_ASSUMPTIONS = Assumptions(
    latency_samples=True,
    tail_scale=TAIL_SCALE_PER_SIGMA * STREAM_SIGMA,
    memory_noise_mib=STREAM_MEMORY_NOISE_MIB,
    pods_per_arm=PODS_PER_ARM,
)


# The default profile's first step: passes count from its bake to its maximum bake, a look every LOOK_S
# (the profile evaluates every 15 s: looking more often is the harder case).
FIRST_STEP = PROFILES["default"]
HELD = Looks(FIRST_STEP.bake_s[0], FIRST_STEP.max_bake_s[0], LOOK_S)


def held_spec(gate: GateSpec, looks: Looks | None) -> GateSpec:
    """The gate with the confidence a pass rests on in a step of these looks (None: one look alone)."""
    return replace(gate, confidence=pass_confidence(gate, looks, KINDS[gate.kind]))


def judged(look: Look, gate: GateSpec, looks: Looks | None) -> Callable[[float], J.Judgement]:
    """A look as the step takes it: the gate's own verdict, a pass only on the bound across `looks`."""
    bound = pass_confidence(gate, looks, KINDS[gate.kind])
    return lambda t: judge_held(partial(look, t), gate, bound)


def _first(
    look: Callable[[float], J.Judgement], begin_s: float, end_s: float, decided: tuple[str, ...]
) -> tuple[str, float]:
    """The first look from `begin_s` on, every LOOK_S up to `end_s`, whose verdict is in `decided`."""
    t = begin_s
    while t <= end_s + 1e-9:
        verdict = look(t).verdict
        if verdict in decided:
            return verdict, t
        t += LOOK_S
    return "inconclusive", math.inf


def time_to_pass_rows(runs: int, seed: int, rates: tuple[float, ...]) -> list[dict]:
    """Median first-pass time of a healthy canary per gate, rate and share, against the plan's; both judge
    a pass on the bound of a step held like the default profile's first (HELD)."""
    rows = []
    for gate, stream in STREAMS.items():
        spec = held_spec(GATES[gate], HELD)
        for rate in rates if gate != "memory_leak" else rates[:1]:  # memory does not depend on the rate
            for share in SHARES:
                weights = {"baseline": 100.0 - share, "canary": float(share)}
                plan = time_to_pass(
                    spec,
                    KINDS[spec.kind].healthy,
                    rate_rps=rate,
                    weights=weights,
                    assumptions=STREAM_ASSUMPTIONS,
                )
                planned = plan.seconds or 900.0
                horizon = 4.0 * planned
                rng = np.random.default_rng(seed)
                # single looks are cheap: more runs, for a steadier crossing of one half
                streams = [stream(rng, rate, share, horizon, False) for _ in range(SINGLE_LOOK_RUNS * runs)]
                looks = [judged(s, GATES[gate], HELD) for s in streams]
                first = [_first(look, LOOK_S, horizon, ("pass",))[1] for look in looks[:runs]]
                # one look at a fixed time: the share of runs passing there, and where it reaches half
                at = planned * SINGLE_LOOK_FACTORS
                passing = [float(np.mean([look(t).verdict == "pass" for look in looks])) for t in at]
                half = _crossing(at, passing, 0.5)
                rows.append(
                    {
                        "gate": gate,
                        "rate_rps": rate,
                        "share": share,
                        "pass_confidence": spec.confidence,
                        "plan_s": plan.seconds,
                        "single_look_median_s": half,
                        "ratio": half / plan.seconds if plan.seconds else math.nan,
                        "within_25pct": bool(plan.seconds and abs(half / plan.seconds - 1) <= 0.25),
                        "first_pass_median_s": float(np.median(first)),
                        "first_pass_p10_s": float(np.quantile(first, 0.1)),
                        "first_pass_p90_s": float(np.quantile(first, 0.9)),
                        "runs": runs,
                    }
                )
        _progress(f"  time to pass: {gate} done")
    return rows


SINGLE_LOOK_FACTORS = np.linspace(0.3, 3.0, 28)  # of the plan's time: where single looks are taken
SINGLE_LOOK_RUNS = 4  # times --runs


def _crossing(x: np.ndarray, y: list[float], level: float) -> float:
    """The first x where y reaches `level`, interpolated linearly (inf when it never does)."""
    for i, value in enumerate(y):
        if value >= level:
            if i == 0:
                return float(x[0])
            x0, x1, y0 = float(x[i - 1]), float(x[i]), float(y[i - 1])
            return x0 + (x1 - x0) * (level - y0) / (value - y0)
    return math.inf


def repeated_look_rows(runs: int, seed: int) -> list[dict]:
    """Canaries through the default profile's first step: looks every LOOK_S from the bake to the maximum
    bake (the controller promotes on a pass only once the bake is over); the first decided verdict ends
    the step. Per gate, a pass judged on one look's bound (as before the held step's bound) and on the held
    step's: how often a harmful canary passes, how often a healthy one fails, and when it passes."""
    share, bake, most = FIRST_STEP.steps[0], HELD.first_s, HELD.last_s
    rows = []
    for gate, stream in STREAMS.items():
        spec = GATES[gate]
        row: dict = {
            "gate": gate,
            "share": share,
            "looks": f"{bake:g}..{most:g} s every {LOOK_S:g} s",
            "runs": runs,
        }
        for bound, looks in (("one_look", None), ("held", HELD)):
            row[f"{bound}_confidence"] = held_spec(spec, looks).confidence
            for harm in (True, False):
                rng = np.random.default_rng(seed + 1 + harm)
                firsts = [
                    _first(
                        judged(stream(rng, RATE, share, most, harm), spec, looks),
                        bake,
                        most,
                        ("pass", "fail"),
                    )
                    for _ in range(runs)
                ]
                verdicts = [v for v, _ in firsts]
                if harm:
                    row[f"{bound}_harm_passed"] = verdicts.count("pass") / runs
                else:
                    row[f"{bound}_healthy_failed"] = verdicts.count("fail") / runs
                    passed = [t for v, t in firsts if v == "pass"]
                    row[f"{bound}_healthy_passed"] = len(passed) / runs
                    row[f"{bound}_healthy_pass_median_s"] = float(np.median(passed)) if passed else math.inf
        rows.append(row)
        _progress(f"  repeated looks: {gate} done")
    return rows


# -- report -----------------------------------------------------------------------------------------------
def bar_rows(cells: list[Cell]) -> list[dict]:
    """Per gate and case: the worst cell against the bar, and how many cells exceed it (by their point
    estimate, and significantly: the Wilson interval's lower end above the limit)."""
    out = []
    for gate, case in dict.fromkeys((c.gate, c.case) for c in cells):
        group = [c for c in cells if (c.gate, c.case) == (gate, case)]
        worst = max(group, key=lambda c: c.bad / c.windows)
        rate = worst.bad / worst.windows
        low, high = wilson(worst.bad, worst.windows)
        out.append(
            {
                "gate": gate,
                "case": case,
                "what": "pass" if worst.harmful else "fail",
                "limit": worst.limit,
                "cells": len(group),
                "worst_cell": worst.grid,
                "worst_rate": rate,
                "worst_ci": [low, high],
                "cells_over": sum(c.bad / c.windows > c.limit for c in group),
                "cells_significantly_over": sum(wilson(c.bad, c.windows)[0] > c.limit for c in group),
                "passes": sum(c.passes for c in group) / sum(c.windows for c in group),
                "inconclusive": sum(c.inconclusive for c in group) / sum(c.windows for c in group),
                "met": rate <= worst.limit,
            }
        )
    return out


def _grid_text(grid: dict) -> str:
    return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in grid.items())


def _pooled_by_window(cells: list[Cell], gate: str) -> list[str]:
    """One gate's cases per window length, pooled over the rest of the grid: pass / inconclusive / fail."""
    group = [c for c in cells if c.gate == gate]
    if not group:
        return []
    cases = list(dict.fromkeys(c.case for c in group))
    lines = [
        "",
        f"## {gate} by window length, pooled over the rest of the grid (pass / inconclusive / fail)",
        "",
        "| window min | " + " | ".join(cases) + " |",
        "|---" * (len(cases) + 1) + "|",
    ]
    for window in dict.fromkeys(c.grid["window_min"] for c in group):
        row = []
        for case in cases:
            these = [c for c in group if c.case == case and c.grid["window_min"] == window]
            n = sum(c.windows for c in these)
            row.append(
                " / ".join(
                    f"{sum(getattr(c, k) for c in these) / n:.1%}"
                    for k in ("passes", "inconclusive", "fails")
                )
            )
        lines.append(f"| {window} | " + " | ".join(row) + " |")
    return lines


def to_markdown(params: dict, bars: list[dict], cells: list[Cell], ttp: list[dict], looks: list[dict]) -> str:
    lines = [
        "# Gate judges: statistical benchmark",
        "",
        f"Seed {params['seed']}; {params['windows']} windows per latency and count cell, {params['leak_windows']} "
        f"per memory cell; offered {RATE:g} req/s (the default profile's). The bar: a canary with the declared "
        f"harm passes in at most {HARM_PASS:.0%} of windows, a healthy one fails in at most {HEALTHY_FAIL:.0%}, "
        "in every cell.",
        "",
        "## The bar, per gate and case (worst cell)",
        "",
        "| gate | case | bounded | limit | worst cell | its rate (95% CI) | cells over / significantly over | all cells: pass, inconclusive | met |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for b in bars:
        lines.append(
            f"| {b['gate']} | {b['case']} | {b['what']} | {b['limit']:.0%} | {_grid_text(b['worst_cell'])} "
            f"| {b['worst_rate']:.1%} ({b['worst_ci'][0]:.1%}-{b['worst_ci'][1]:.1%}) "
            f"| {b['cells_over']}/{b['cells']}, {b['cells_significantly_over']}/{b['cells']} "
            f"| {b['passes']:.1%}, {b['inconclusive']:.1%} | {'yes' if b['met'] else 'NO'} |"
        )
    lines += _pooled_by_window(cells, "memory_leak")
    lines += [
        "",
        "## Time for a healthy canary to pass: measured vs `rollout plan`",
        "",
        f"Latency log-sd {STREAM_SIGMA} (the plan told tail_scale {STREAM_ASSUMPTIONS.tail_scale:.3f}), memory flat "
        f"with {STREAM_MEMORY_NOISE_MIB:g} MiB independent noise, {PODS_PER_ARM} pods per arm. Single look: the time "
        "at which one evaluation passes in half of the runs (what the plan predicts: when the expected data pass). "
        f"First pass: a step evaluating every {LOOK_S:g} s passes at its first passing look, often earlier. "
        f"Both judge a pass on the bound of a step held like the default profile's first ({HELD.first_s:g}.."
        f"{HELD.last_s:g} s, a look every {LOOK_S:g} s), as `rollout plan` does.",
        "",
        "| gate | rate req/s | share % | pass confidence | plan s | single look s | single / plan | within 25% | first pass median s (p10-p90) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in ttp:
        plan = "never" if r["plan_s"] is None else f"{r['plan_s']:.0f}"
        lines.append(
            f"| {r['gate']} | {r['rate_rps']:g} | {r['share']} | {r['pass_confidence']:.4g} | {plan} "
            f"| {r['single_look_median_s']:.0f} "
            f"| {r['ratio']:.2f} | {'yes' if r['within_25pct'] else 'NO'} | {r['first_pass_median_s']:.0f} "
            f"({r['first_pass_p10_s']:.0f}-{r['first_pass_p90_s']:.0f}) |"
        )
    lines += [
        "",
        "## Repeated looks: canaries through a step held for evidence",
        "",
        f"A pass judged on one look's bound (the gate's confidence) and on the held step's (gates/sequential.py), "
        f"looks every {LOOK_S:g} s. Harmful: the share of runs whose first decision is a pass (the held bound "
        "keeps it under (1 - confidence) / 2). Healthy: the share whose first decision is a fail, the share "
        "passed by the maximum bake, and the median time of the pass.",
        "",
        "| gate | share % | looks | runs | bound | confidence | harmful passed | healthy failed | healthy passed | healthy pass median s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in looks:
        for bound, name in (("one_look", "one look"), ("held", "held step")):
            lines.append(
                f"| {r['gate']} | {r['share']} | {r['looks']} | {r['runs']} | {name} "
                f"| {r[f'{bound}_confidence']:.4g} | {r[f'{bound}_harm_passed']:.1%} "
                f"| {r[f'{bound}_healthy_failed']:.1%} | {r[f'{bound}_healthy_passed']:.0%} "
                f"| {r[f'{bound}_healthy_pass_median_s']:.0f} |"
            )
    lines += [
        "",
        "## Every cell",
        "",
        "| gate | case | cell | pass | inconclusive | fail |",
        "|---|---|---|---|---|---|",
    ]
    for c in cells:
        n = c.windows
        lines.append(
            f"| {c.gate} | {c.case} | {_grid_text(c.grid)} | {c.passes / n:.1%} | {c.inconclusive / n:.1%} | {c.fails / n:.1%} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gates", description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=400, help="seeded windows per latency and count cell")
    parser.add_argument("--leak-windows", type=int, default=200, help="seeded windows per memory cell")
    parser.add_argument("--runs", type=int, default=60, help="runs per time-to-pass and repeated-look row")
    parser.add_argument("--rates", default="6,12,18", help="offered req/s for the time-to-pass rows")
    parser.add_argument("--only", default="latency,counts,memory,steps", help="parts to run")
    parser.add_argument("--seed", type=int, default=20260101)
    parser.add_argument("--out", type=Path, default=Path("reports/bench-gates"))
    args = parser.parse_args(argv)
    parts = set(args.only.split(","))
    try:
        rates = tuple(float(r) for r in args.rates.split(","))
    except ValueError:
        parser.error(f"--rates must be numbers separated by commas (got {args.rates!r})")
    if min(args.windows, args.leak_windows, args.runs) < 1 or not parts <= {
        "latency",
        "counts",
        "memory",
        "steps",
    }:
        parser.error(
            "--windows, --leak-windows and --runs must be >= 1; --only names latency,counts,memory,steps"
        )
    t0 = time.monotonic()
    cells: list[Cell] = []
    if "latency" in parts:
        _progress("latency cells")
        cells += latency_cells(args.windows, args.seed)
    if "counts" in parts:
        _progress("count cells")
        cells += count_cells(args.windows, args.seed)
    if "memory" in parts:
        _progress("memory cells")
        cells += leak_cells(args.leak_windows, args.seed)
    ttp, looks = [], []
    if "steps" in parts:
        _progress("time to pass, repeated looks")
        ttp = time_to_pass_rows(args.runs, args.seed, rates)
        looks = repeated_look_rows(args.runs, args.seed)
    params = {
        "windows": args.windows,
        "leak_windows": args.leak_windows,
        "runs": args.runs,
        "seed": args.seed,
    }
    bars = bar_rows(cells)
    text = to_markdown(params, bars, cells, ttp, looks)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench-gates.md").write_text(text)
    result = {
        "params": params,
        "bar": bars,
        "cells": [c.__dict__ for c in cells],
        "time_to_pass": ttp,
        "repeated_looks": looks,
        "seconds": time.monotonic() - t0,
    }
    (args.out / "bench-gates.json").write_text(json.dumps(result, indent=2) + "\n")
    print(text)
    print(f"written to {args.out}/bench-gates.md and .json in {time.monotonic() - t0:.0f}s")
    missed = [b for b in bars if not b["met"]] + [r for r in ttp if not r["within_25pct"]]
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Statistical benchmark of the gate judges over many seeded windows (`make bench-gates`).

Every window draws fresh synthetic arms (testkit/synthetic_arms.py) and is judged by the same functions the
gates use (gates/judge.py on gates/stats.py and gates/memory_trend.py), with the packaged gate
parameters. Reports, with 95% Wilson intervals:
- the relative P99 check at the sample sizes the default rollout profile collects per arm at each step
  (rollout/plan.py: rate x share x (bake - settle)) and at 400 per arm: A/A false fails, a 15% regression
  of the whole distribution and of the tail only (median unchanged), a 5% regression (within the 10%
  tolerance) and a tail that grows beyond P99 with P99 unchanged; from exact load-test samples and from
  sglang's histogram buckets;
- the count gates (error rate, throughput) on A/A traffic and two failures;
- the memory-leak judge over a grid of garbage-collector sawtooths (amplitude 16-512 MiB, period 1-10
  min, random phase per pod, 2 pods per arm) x leak 0/1/1.5/3 MiB/min per pod x windows 10/25/30 min,
  and on a one-time rise that then stays flat (a cache filling after the canary's share grew).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np

from backend.metrics import E2E_BUCKETS
from gates import judge as J
from gates import stats
from gates.config import load_gate_file
from gates.memory_trend import memory_trends
from rollout.plan import PROFILES, Profile
from testkit.synthetic_arms import MIB, LatencyModel, MemoryModel, gc_sawtooth, tail_stretch

DEFAULT_GATES = {g.name: g for g in load_gate_file(None, profile="local").gates}  # judged as shipped
LEAK_WINDOWS_MIN = (10, 25, 30)
LEAK_PERIODS_MIN = (1, 5, 10)
LEAK_AMPLITUDES_MIB = (16, 64, 200, 512)
LEAK_RATES = (0.0, 1.0, 1.5, 3.0)  # MiB/min per pod
PODS_PER_ARM = 2
FLOOR_JITTER = 0.02  # of the sawtooth height, at least 1 MiB: what is live at each collection varies
RISE_MIB, RISE_DELAY_S, RISE_S = (32.0, 256.0), (0.0, 30.0), (60.0, 300.0)


@dataclass(frozen=True)
class Row:
    scenario: str
    source: str
    windows: int
    fails: int
    inconclusive: int
    rate: float
    low: float
    high: float
    target: str
    met: bool | None


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


def _run(
    name: str,
    source: str,
    windows: int,
    trial: Callable[[np.random.Generator], str],
    seed: int,
    target: str,
    check: Callable[[float], bool] | None,
    quiet: bool = False,
) -> Row:
    rng = np.random.default_rng(seed)
    verdicts = []
    t0 = time.monotonic()
    for _ in range(windows):
        verdicts.append(trial(rng))
    if not quiet:
        _progress(f"  {name} [{source}]: {windows} windows in {time.monotonic() - t0:.1f}s")
    fails = verdicts.count("fail")
    low, high = wilson(fails, windows)
    rate = fails / windows
    met = None if check is None else check(rate)
    return Row(name, source, windows, fails, verdicts.count("inconclusive"), rate, low, high, target, met)


# -- P99 ------------------------------------------------------------------------------------------------
def profile_sample_sizes(profile: Profile) -> list[tuple[str, int, int]]:
    """(label, canary, baseline) requests per arm in each step's window where both arms have traffic."""
    out = []
    for i, (share, bake) in enumerate(zip(profile.steps, profile.bake_s, strict=True)):
        seconds = bake - profile.settle_s
        canary = round(profile.request_rate * share / 100 * seconds)
        baseline = round(profile.request_rate * (100 - share) / 100 * seconds)
        if canary and baseline:
            out.append((f"{profile.name} step {i + 1} ({share}%)", canary, baseline))
    return out


def _histogram(samples_s: np.ndarray) -> tuple[list[float], list[float]]:
    bounds = [*E2E_BUCKETS, math.inf]
    counts = [float(np.count_nonzero(samples_s <= b)) for b in bounds]
    return bounds, counts


def judge_p99(baseline_s: np.ndarray, canary_s: np.ndarray, source: str) -> str:
    """Verdict of the relative P99 check, with the default `latency_e2e_p99` gate's parameters."""
    gate = DEFAULT_GATES["latency_e2e_p99"]
    p, confidence = gate.params, gate.confidence
    q = float(p["quantile"])
    arms = (("baseline", baseline_s), ("canary", canary_s))
    shift = None
    if source == "loadtest":
        est = {a: stats.harrell_davis_quantile(x, q, confidence) for a, x in arms}
        shift = stats.quantile_shift(canary_s, baseline_s, q, confidence)
    else:
        est = {a: stats.histogram_quantile(*_histogram(x), q, confidence) for a, x in arms}
    return J.judge_latency_quantile(
        est,
        quantile=q,
        arms=["canary"],
        max_seconds=None,
        max_ratio=float(p["max_ratio"]),
        min_samples=int(p["min_samples"]),
        confidence=confidence,
        shift=shift,
    ).verdict


REGRESSIONS = {
    "none": "A/A p99 false fail",
    "scale": "p99 +15% (all slower) detected",
    "tail": "p99 +15% (tail only) detected",
    "scale5": "p99 +5% (all slower, within 10% tolerance) failed",
    "beyond": "p99 unchanged, tail beyond it twice as long, failed",
}


def p99_trial(
    rng: np.random.Generator,
    *,
    model: LatencyModel,
    n_canary: int,
    n_baseline: int,
    source: str,
    regression: str,
) -> str:
    """One window: baseline and canary drawn from `model`; the canary changed as `regression` says."""
    baseline, canary = model.sample(rng, n_baseline), model.sample(rng, n_canary)
    if regression == "scale":
        canary = 1.15 * canary
    elif regression == "tail":
        canary = tail_stretch(canary, model, 1.15)
    elif regression == "scale5":
        canary = 1.05 * canary
    elif regression == "beyond":
        p99 = model.quantile(0.99)
        canary = np.where(canary > p99, p99 + 2.0 * (canary - p99), canary)
    return judge_p99(baseline, canary, source)


def p99_rows(windows: int, seed: int, sigma: float, sources: tuple[str, ...]) -> list[Row]:
    model = LatencyModel(median_s=0.35, sigma=sigma)
    sizes = [("400 per arm", 400, 400), *profile_sample_sizes(PROFILES["default"])]
    targets: dict[str, tuple[str, Callable[[float], bool] | None]] = {
        "none": ("<= 1%", lambda x: x <= 0.01),
        "scale": (">= 95%", lambda x: x >= 0.95),
        "tail": (">= 90%", lambda x: x >= 0.90),
        "scale5": ("informative", None),
        "beyond": ("informative", None),
    }
    rows = []
    for source in sources:
        for label, n_canary, n_baseline in sizes:
            regressions = list(REGRESSIONS) if source == "loadtest" else ["none", "scale", "tail"]
            for k, regression in enumerate(regressions):
                target, check = targets[regression]
                # The targets: exact samples; the tail target at the default profile's sizes.
                primary = source == "loadtest" and (regression != "tail" or label.startswith("default"))
                rows.append(
                    _run(
                        f"{REGRESSIONS[regression]}, {label} (canary {n_canary}, baseline {n_baseline})",
                        source,
                        windows,
                        partial(
                            p99_trial,
                            model=model,
                            n_canary=n_canary,
                            n_baseline=n_baseline,
                            source=source,
                            regression=regression,
                        ),
                        seed + k,
                        target if primary else "informative",
                        check if primary else None,
                    )
                )
    return rows


# -- counts ---------------------------------------------------------------------------------------------
def counts_trial(
    rng: np.random.Generator,
    *,
    error_rate: float,
    served_fraction: float,
    offered_rps: float = 8.0,
    weights: tuple[float, float] = (90.0, 10.0),
    window_s: float = 600.0,
) -> str:
    """One window of the count gates: Poisson arrivals split by weight, each failing with `error_rate`; the
    canary serves `served_fraction` of its arrivals. Verdict: worst of error rate and throughput."""
    w = {"baseline": weights[0], "canary": weights[1]}
    arrivals = {a: float(rng.poisson(offered_rps * w[a] / 100 * window_s)) for a in w}
    served = {
        "baseline": arrivals["baseline"],
        "canary": float(rng.binomial(int(arrivals["canary"]), served_fraction)),
    }
    errors = {a: float(rng.binomial(int(served[a]), error_rate)) for a in w}
    err, thr = DEFAULT_GATES["error_rate"], DEFAULT_GATES["throughput"]
    verdicts = [
        J.judge_error_rate(
            errors,
            served,
            arms=["canary"],
            max_rate=float(err.params["max"]),
            min_samples=int(err.params["min_samples"]),
            confidence=err.confidence,
        ).verdict,
        J.judge_throughput(
            served,
            window_s=window_s,
            weights=w,
            offered_rps=offered_rps,
            min_offered_fraction=float(thr.params["min_offered_fraction"]),
            max_share_drop=float(thr.params["max_share_drop"]),
            min_samples=int(thr.params["min_samples"]),
            confidence=thr.confidence,
        ).verdict,
    ]
    return J.combine([(v, v) for v in verdicts])[0]


def counts_rows(windows: int, seed: int) -> list[Row]:
    return [
        _run(
            "A/A counts false fail (0.05% errors, ~480 canary req)",
            "prometheus",
            windows,
            partial(counts_trial, error_rate=0.0005, served_fraction=1.0),
            seed + 5,
            "<= 1%",
            lambda x: x <= 0.01,
        ),
        _run(
            "canary serves 85% of offered, detected",
            "prometheus",
            windows,
            partial(counts_trial, error_rate=0.0, served_fraction=0.85),
            seed + 6,
            "informative",
            None,
        ),
        _run(
            "canary 2% errors, detected",
            "prometheus",
            windows,
            partial(counts_trial, error_rate=0.02, served_fraction=1.0),
            seed + 7,
            "informative",
            None,
        ),
    ]


# -- memory leak ----------------------------------------------------------------------------------------
def judge_memory(
    rng: np.random.Generator,
    canary: Iterable[MemoryModel],
    baseline: Iterable[MemoryModel],
    window_s: float,
) -> str:
    """Verdict of the memory-leak judge with the default gate's parameters: every pod sampled at the gate's
    step from the window's start, the warm-up left out as the evaluator leaves it out."""
    gate = DEFAULT_GATES["memory_leak"]
    p = gate.params
    t = np.arange(0.0, window_s + 1e-9, float(p["step_seconds"]))
    judged = t >= float(p["warmup_seconds"])
    pods = {
        arm: [(t[judged], model.sample(rng, t)[judged]) for model in models]
        for arm, models in (("canary", canary), ("baseline", baseline))
    }
    estimate = memory_trends(pods["canary"], pods["baseline"], gate.confidence, int(p["min_points"]))
    return J.judge_memory_leak(
        estimate,
        leak_bytes_per_s=float(p["leak_bytes_per_minute"]) / 60.0,
        min_points=int(p["min_points"]),
        min_cycles=int(p["min_cycles"]),
        confidence=gate.confidence,
    ).verdict


def sawtooth_trial(
    rng: np.random.Generator,
    *,
    window_min: float,
    period_min: float,
    amplitude_mib: float,
    leak_mib_per_min: float,
    rise: bool = False,
    floor_jitter: float = FLOOR_JITTER,
) -> str:
    """One window, PODS_PER_ARM pods per arm with their own phase; the canary's pods leak, and with `rise`
    each canary pod's memory also rises once after the window opens (32-256 MiB over 1-5 min) and stays."""

    def pod(leak: float, rises: bool) -> MemoryModel:
        return gc_sawtooth(
            amplitude_mib,
            period_min,
            leak,
            floor_jitter_fraction=floor_jitter,
            rise_mib=rng.uniform(*RISE_MIB) if rises else 0.0,
            rise_delay_s=rng.uniform(*RISE_DELAY_S),
            rise_s=rng.uniform(*RISE_S),
        )

    canary = [pod(leak_mib_per_min, rise) for _ in range(PODS_PER_ARM)]
    baseline = [pod(0.0, False) for _ in range(PODS_PER_ARM)]
    return judge_memory(rng, canary, baseline, window_min * 60.0)


def legacy_leak_trial(rng: np.random.Generator, leak_mib_per_min: float) -> str:
    """The first benchmark's model: one series per arm, sawtooth 4-8 MiB every 30-90 s, 10 min after warm-up."""
    canary = [MemoryModel(leak_bytes_per_s=leak_mib_per_min * MIB / 60.0)]
    return judge_memory(rng, canary, [MemoryModel()], 660.0)


def leak_grid(windows: int, seed: int) -> list[dict]:
    """Every (window, period, amplitude) cell: fail and inconclusive rates per leak rate, and on a rise."""
    cells = []
    t0 = time.monotonic()
    for window in LEAK_WINDOWS_MIN:
        for period in LEAK_PERIODS_MIN:
            for amplitude in LEAK_AMPLITUDES_MIB:
                cell: dict = {"window_min": window, "period_min": period, "amplitude_mib": amplitude}
                cases = [(f"leak {rate:g}", rate, False) for rate in LEAK_RATES] + [("rise", 0.0, True)]
                for k, (name, rate, rise) in enumerate(cases):
                    trial = partial(
                        sawtooth_trial,
                        window_min=window,
                        period_min=period,
                        amplitude_mib=amplitude,
                        leak_mib_per_min=rate,
                        rise=rise,
                    )
                    row = _run(name, "prometheus", windows, trial, seed + 100 + k, "", None, quiet=True)
                    cell[name] = {"fail": row.rate, "inconclusive": row.inconclusive / windows}
                cells.append(cell)
            _progress(
                f"  leak grid: window {window} min, period {period} min done "
                f"({len(cells)}/{len(LEAK_WINDOWS_MIN) * len(LEAK_PERIODS_MIN) * len(LEAK_AMPLITUDES_MIB)} "
                f"cells, {time.monotonic() - t0:.0f}s)"
            )
    return cells


def _pooled(cells: list[dict], key: str, windows: int) -> tuple[int, int]:
    fails = sum(round(c[key]["fail"] * windows) for c in cells)
    return fails, windows * len(cells)


def _cell_name(c: dict) -> str:
    return f"{c['window_min']} min window, {c['period_min']} min period, {c['amplitude_mib']} MiB"


def leak_rows(cells: list[dict], windows: int, seed: int) -> list[Row]:
    """The issue's targets over the grid: the worst cell of each, and the pooled false-fail rates."""
    rows = [
        _run(
            "1 MiB/min leak detected (10 min, 4-8 MiB sawtooth, 1 series per arm)",
            "prometheus",
            windows,
            partial(legacy_leak_trial, leak_mib_per_min=1.0),
            seed + 3,
            ">= 95%",
            lambda x: x >= 0.95,
        ),
        _run(
            "false leak on flat 4-8 MiB sawtooth (10 min, 1 series per arm)",
            "prometheus",
            windows,
            partial(legacy_leak_trial, leak_mib_per_min=0.0),
            seed + 4,
            "<= 1%",
            lambda x: x <= 0.01,
        ),
    ]
    targeted = [c for c in cells if c["window_min"] == 25 and c["amplitude_mib"] <= 200]
    for rate in (1.5, 3.0):
        worst = min(targeted, key=lambda c: c[f"leak {rate:g}"]["fail"])
        k = round(worst[f"leak {rate:g}"]["fail"] * windows)
        low, high = wilson(k, windows)
        met = sum(c[f"leak {rate:g}"]["fail"] >= 0.95 for c in targeted)
        rows.append(
            Row(
                f"{rate:g} MiB/min/pod leak detected, 25 min, amplitude <= 200 MiB: worst cell "
                f"({_cell_name(worst)}); {met}/{len(targeted)} cells >= 95%",
                "prometheus",
                windows,
                k,
                round(worst[f"leak {rate:g}"]["inconclusive"] * windows),
                k / windows,
                low,
                high,
                ">= 95%",
                k / windows >= 0.95,
            )
        )
    for key, what in (("leak 0", "leak-free sawtooth"), ("rise", "one-time rise, then flat")):
        fails, n = _pooled(cells, key, windows)
        low, high = wilson(fails, n)
        rows.append(
            Row(
                f"false leak, {what}: all {len(cells)} cells pooled",
                "prometheus",
                n,
                fails,
                sum(round(c[key]["inconclusive"] * windows) for c in cells),
                fails / n,
                low,
                high,
                "<= 1%",
                fails / n <= 0.01,
            )
        )
        worst = max(cells, key=lambda c: c[key]["fail"])
        k = round(worst[key]["fail"] * windows)
        low, high = wilson(k, windows)
        over = sum(c[key]["fail"] > 0.01 for c in cells)
        rows.append(
            Row(
                f"false leak, {what}: worst cell ({_cell_name(worst)}); {over}/{len(cells)} cells above 1%",
                "prometheus",
                windows,
                k,
                round(worst[key]["inconclusive"] * windows),
                k / windows,
                low,
                high,
                "<= 1%",
                k / windows <= 0.01,
            )
        )
    return rows


# -- sweeps ---------------------------------------------------------------------------------------------
def p99_sweep(windows: int, seed: int) -> list[dict]:
    """Tail-only +15% detection and A/A false fails by tail width and (equal) sample size per arm."""
    out = []
    for sigma in (0.10, 0.20, 0.30):
        model = LatencyModel(median_s=0.35, sigma=sigma)
        for n in (300, 400, 500, 700, 1000, 2000):
            row: dict = {"sigma": sigma, "n_per_arm": n}
            for k, regression in enumerate(("none", "tail")):
                trial = partial(
                    p99_trial, model=model, n_canary=n, n_baseline=n, source="loadtest", regression=regression
                )
                row[regression] = _run(
                    regression, "loadtest", windows, trial, seed + k, "", None, quiet=True
                ).rate
            out.append(row)
        _progress(f"  p99 sweep: log-sd {sigma} done")
    return out


def jitter_sweep(windows: int, seed: int) -> list[dict]:
    """How the floor trend's detection depends on how much each collection's floor varies."""
    out = []
    for jitter in (0.005, 0.02, 0.05):
        for period in LEAK_PERIODS_MIN:
            row: dict = {"floor_jitter": jitter, "period_min": period}
            for k, rate in enumerate((0.0, 1.5)):
                trial = partial(
                    sawtooth_trial,
                    window_min=25,
                    period_min=period,
                    amplitude_mib=200,
                    leak_mib_per_min=rate,
                    floor_jitter=jitter,
                )
                row[f"leak {rate:g}"] = _run("", "", windows, trial, seed + k, "", None, quiet=True).rate
            out.append(row)
    _progress("  floor-jitter sweep done")
    return out


# -- report ---------------------------------------------------------------------------------------------
def _span(rate: float, n: int) -> str:
    low, high = wilson(round(rate * n), n)
    return f"{low:.1%}-{high:.1%}"


def to_markdown(rows: list[Row], params: dict, cells: list[dict], extra: dict) -> str:
    lines = [
        "# Gate judges: statistical benchmark",
        "",
        f"Seed {params['seed']}; {params['windows']} windows per P99/count row, {params['leak_windows']} per "
        f"memory cell; rates with 95% Wilson intervals. Latency lognormal median 350 ms, log-sd "
        f"{params['sigma']}; default-profile sample sizes from rollout/plan.py (rate x share x (bake - settle)). "
        f"Memory: {PODS_PER_ARM} pods per arm sampled every 10 s, 60 s warm-up left out; sawtooth height "
        f"+-25% and period +-20% per cycle, random phase per pod, each floor jittered by "
        f"{FLOOR_JITTER:.0%} of the height (at least 1 MiB), 0.25 MiB noise; one-time rise "
        f"{RISE_MIB[0]:g}-{RISE_MIB[1]:g} MiB per canary pod starting 0-30 s after the window opens, "
        f"spread over 1-5 min, then flat.",
        "",
        "| scenario | source | fail rate | 95% CI | inconclusive | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        met = "" if r.met is None else ("yes" if r.met else "NO")
        lines.append(
            f"| {r.scenario} | {r.source} | {r.rate:.1%} | {r.low:.1%}-{r.high:.1%} | {r.inconclusive} "
            f"| {r.target} | {met} |"
        )
    lines += [
        "",
        "## Memory-leak judge over the sawtooth grid",
        "",
        "Fail rate (inconclusive rate in brackets) per cell; leak in MiB/min per pod. Targets: >= 95% for "
        ">= 1.5 MiB/min at 25 min with amplitude <= 200 MiB; <= 1% with no leak and with the one-time rise. "
        f"With {params['leak_windows']} windows per cell a 95% Wilson interval spans about "
        f"{_span(0.95, params['leak_windows'])} around 95% and {_span(0.0, params['leak_windows'])} at 0%.",
        "",
        "| window min | period min | amplitude MiB | leak 0 | leak 1 | leak 1.5 | leak 3 | rise, no leak |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        parts = [
            f"{c[k]['fail']:.1%}" + (f" ({c[k]['inconclusive']:.0%})" if c[k]["inconclusive"] else "")
            for k in ("leak 0", "leak 1", "leak 1.5", "leak 3", "rise")
        ]
        lines.append(
            f"| {c['window_min']} | {c['period_min']} | {c['amplitude_mib']} | " + " | ".join(parts) + " |"
        )
    if extra.get("p99_sweep"):
        lines += [
            "",
            "## P99 judge (exact samples, equal arms) by tail width and sample size",
            "",
            "| log-sd | requests/arm | A/A false fail | tail-only +15% detected |",
            "|---|---|---|---|",
        ]
        for s in extra["p99_sweep"]:
            lines.append(f"| {s['sigma']} | {s['n_per_arm']} | {s['none']:.1%} | {s['tail']:.1%} |")
    if extra.get("jitter_sweep"):
        lines += [
            "",
            "## Leak judge by floor jitter (25 min window, 200 MiB amplitude)",
            "",
            "| floor jitter (of height) | period min | false leak | 1.5 MiB/min detected |",
            "|---|---|---|---|",
        ]
        for s in extra["jitter_sweep"]:
            lines.append(
                f"| {s['floor_jitter']:.1%} | {s['period_min']} | {s['leak 0']:.1%} | {s['leak 1.5']:.1%} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gates", description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=2000, help="seeded windows per P99 / count row")
    parser.add_argument("--leak-windows", type=int, default=500, help="seeded windows per memory cell")
    parser.add_argument("--seed", type=int, default=20260101)
    parser.add_argument("--sigma", type=float, default=0.10, help="log-sd of the latency model")
    parser.add_argument(
        "--sources", default="loadtest,histogram", help="P99 sources to judge: loadtest,histogram"
    )
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="also tabulate the P99 judge by tail width and sample size, and the leak judge by floor jitter",
    )
    parser.add_argument("--out", type=Path, default=Path("reports/bench-gates"))
    args = parser.parse_args(argv)
    sources = tuple(s for s in args.sources.split(",") if s)
    if not set(sources) <= {"loadtest", "histogram"} or args.windows < 1 or args.leak_windows < 1:
        parser.error(
            f"--sources must name loadtest and/or histogram, --windows and --leak-windows >= 1 "
            f"(got {args.sources!r}, {args.windows}, {args.leak_windows})"
        )
    t0 = time.monotonic()
    _progress("P99 rows")
    rows = p99_rows(args.windows, args.seed, args.sigma, sources)
    _progress("count rows")
    rows += counts_rows(args.windows, args.seed)
    _progress("memory-leak grid")
    cells = leak_grid(args.leak_windows, args.seed)
    rows += leak_rows(cells, args.leak_windows, args.seed)
    extra: dict = {}
    if args.sweep:
        extra["p99_sweep"] = p99_sweep(max(args.windows // 2, 100), args.seed)
        extra["jitter_sweep"] = jitter_sweep(args.leak_windows, args.seed)
    params = {
        "windows": args.windows,
        "leak_windows": args.leak_windows,
        "seed": args.seed,
        "sigma": args.sigma,
    }
    text = to_markdown(rows, params, cells, extra)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench-gates.md").write_text(text)
    (args.out / "bench-gates.json").write_text(
        json.dumps(
            {
                "params": params,
                "rows": [asdict(r) for r in rows],
                "leak_grid": cells,
                **extra,
                "seconds": time.monotonic() - t0,
            },
            indent=2,
        )
        + "\n"
    )
    print(text)
    print(f"written to {args.out}/bench-gates.md and .json in {time.monotonic() - t0:.0f}s")
    return 0 if all(r.met is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

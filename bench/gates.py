"""Statistical benchmark of the gate judges over many seeded windows (`make bench-gates`).

Every window draws fresh synthetic arms (testkit/synthetic_arms.py) and is judged by the same functions the
gates use (gates/judge.py on gates/stats.py estimates). Reports, with 95% Wilson intervals:
- A/A false-fail rate of the P99 judge (both arms from one latency model);
- detection of a 15% P99 regression at 400 requests per arm (whole distribution 15% slower, and a
  tail-only stretch with unchanged median), from exact load-test samples and from sglang's histogram;
- detection of a 1 MiB/min leak over a 10-minute window on allocator-sawtooth memory, and the
  false-leak rate on flat sawtooth memory.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np

from backend.metrics import E2E_BUCKETS
from gates import judge as J
from gates import stats
from gates.config import load_gate_file
from testkit.synthetic_arms import MIB, LatencyModel, MemoryModel, tail_stretch

DEFAULT_GATES = {g.name: g for g in load_gate_file(None, profile="local").gates}  # judged as shipped


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


def _histogram(samples_s: np.ndarray) -> tuple[list[float], list[float]]:
    bounds = [*E2E_BUCKETS, math.inf]
    counts = [float(np.count_nonzero(samples_s <= b)) for b in bounds]
    return bounds, counts


def judge_p99(baseline_s: np.ndarray, canary_s: np.ndarray, source: str) -> str:
    """Verdict of the relative P99 check, with the default `latency_e2e_p99` gate's parameters."""
    p, confidence = DEFAULT_GATES["latency_e2e_p99"].params, DEFAULT_GATES["latency_e2e_p99"].confidence
    q = float(p["quantile"])
    arms = (("baseline", baseline_s), ("canary", canary_s))
    if source == "loadtest":
        est = {a: stats.harrell_davis_quantile(x, q, confidence) for a, x in arms}
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
    ).verdict


def p99_trial(rng: np.random.Generator, *, model: LatencyModel, n: int, source: str, regression: str) -> str:
    """One window: baseline and canary drawn from `model`; the canary 15% slower overall ("scale"), in
    its tail only ("tail"), or not at all ("none")."""
    baseline, canary = model.sample(rng, n), model.sample(rng, n)
    if regression == "scale":
        canary = 1.15 * canary
    elif regression == "tail":
        canary = tail_stretch(canary, model, 1.15)
    return judge_p99(baseline, canary, source)


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


def judge_leak(
    rng: np.random.Generator,
    canary_leak_mib_per_min: float,
    window_s: float = 600.0,
    amplitude_mib: tuple[float, float] = (4.0, 8.0),
) -> str:
    """Verdict of the memory-leak judge on one window of sawtooth memory, with the default gate's parameters."""
    gate = DEFAULT_GATES["memory_leak"]
    t = np.arange(0.0, window_s + 1e-9, float(gate.params["step_seconds"]))
    amplitude = (amplitude_mib[0] * MIB, amplitude_mib[1] * MIB)
    flat = MemoryModel(amplitude_bytes=amplitude)
    leaking = MemoryModel(leak_bytes_per_s=canary_leak_mib_per_min * MIB / 60.0, amplitude_bytes=amplitude)
    slopes = {
        "baseline": stats.robust_slope(t, flat.sample(rng, t), gate.confidence),
        "canary": stats.robust_slope(t, leaking.sample(rng, t), gate.confidence),
    }
    return J.judge_memory_leak(
        slopes,
        floor_bytes_per_s=float(gate.params["floor_bytes_per_minute"]) / 60.0,
        min_points=int(gate.params["min_points"]),
        confidence=gate.confidence,
    ).verdict


def _run(
    name: str,
    source: str,
    windows: int,
    trial: Callable[[np.random.Generator], str],
    seed: int,
    target: str,
    check: Callable[[float], bool] | None,
) -> Row:
    rng = np.random.default_rng(seed)
    verdicts = []
    t0 = time.monotonic()
    for i in range(windows):
        verdicts.append(trial(rng))
        if (i + 1) % max(windows // 4, 1) == 0:
            print(
                f"  {name} [{source}]: {i + 1}/{windows} windows ({time.monotonic() - t0:.1f}s)",
                file=sys.stderr,
                flush=True,
            )
    fails = verdicts.count("fail")
    low, high = wilson(fails, windows)
    rate = fails / windows
    return Row(
        name,
        source,
        windows,
        fails,
        verdicts.count("inconclusive"),
        rate,
        low,
        high,
        target,
        None if check is None else check(rate),
    )


def run_benchmark(
    windows: int, seed: int, n_per_arm: int, sigma: float, sources: tuple[str, ...]
) -> list[Row]:
    model = LatencyModel(median_s=0.35, sigma=sigma)
    rows: list[Row] = []
    for source in sources:
        primary = (
            source == "loadtest"
        )  # the targets apply to exact samples; histogram rows are informative
        rows.append(
            _run(
                "A/A p99 false fail",
                source,
                windows,
                partial(p99_trial, model=model, n=n_per_arm, source=source, regression="none"),
                seed,
                "<= 1%",
                (lambda x: x <= 0.01) if primary else None,
            )
        )
        rows.append(
            _run(
                "p99 +15% (all slower) detected",
                source,
                windows,
                partial(p99_trial, model=model, n=n_per_arm, source=source, regression="scale"),
                seed + 1,
                ">= 95%",
                (lambda x: x >= 0.95) if primary else None,
            )
        )
        rows.append(
            _run(
                "p99 +15% (tail only) detected",
                source,
                windows,
                partial(p99_trial, model=model, n=n_per_arm, source=source, regression="tail"),
                seed + 2,
                "informative",
                None,
            )
        )
    rows.append(
        _run(
            "A/A counts false fail (0.05% errors, ~480 canary req)",
            "prometheus",
            windows,
            partial(counts_trial, error_rate=0.0005, served_fraction=1.0),
            seed + 5,
            "<= 1%",
            lambda x: x <= 0.01,
        )
    )
    rows.append(
        _run(
            "canary serves 85% of offered, detected",
            "prometheus",
            windows,
            partial(counts_trial, error_rate=0.0, served_fraction=0.85),
            seed + 6,
            "informative",
            None,
        )
    )
    rows.append(
        _run(
            "canary 2% errors, detected",
            "prometheus",
            windows,
            partial(counts_trial, error_rate=0.02, served_fraction=1.0),
            seed + 7,
            "informative",
            None,
        )
    )
    rows.append(
        _run(
            "1 MiB/min leak detected (10 min)",
            "prometheus",
            windows,
            partial(judge_leak, canary_leak_mib_per_min=1.0),
            seed + 3,
            ">= 95%",
            lambda x: x >= 0.95,
        )
    )
    rows.append(
        _run(
            "false leak on flat sawtooth",
            "prometheus",
            windows,
            partial(judge_leak, canary_leak_mib_per_min=0.0),
            seed + 4,
            "<= 1%",
            lambda x: x <= 0.01,
        )
    )
    return rows


def sweep(windows: int, seed: int) -> list[dict]:
    """Where the P99 targets hold: detection and A/A false fail by tail width and sample size."""
    out = []
    for sigma in (0.10, 0.15, 0.20, 0.30):
        model = LatencyModel(median_s=0.35, sigma=sigma)
        for n in (400, 1000, 3000):
            aa = _run(
                f"A/A s={sigma} n={n}",
                "loadtest",
                windows,
                partial(p99_trial, model=model, n=n, source="loadtest", regression="none"),
                seed,
                "",
                None,
            )
            det = _run(
                f"+15% s={sigma} n={n}",
                "loadtest",
                windows,
                partial(p99_trial, model=model, n=n, source="loadtest", regression="scale"),
                seed + 1,
                "",
                None,
            )
            out.append({"sigma": sigma, "n_per_arm": n, "aa_false_fail": aa.rate, "detect_15pct": det.rate})
    return out


def leak_sweep(windows: int, seed: int) -> list[dict]:
    """Leak detection and false leaks by sawtooth height (what a 10-minute window can and cannot see)."""
    out = []
    for amp in ((4.0, 8.0), (16.0, 32.0), (64.0, 128.0)):
        for window_min in (10, 30):
            det = _run(
                f"leak amp={amp} {window_min}min",
                "prometheus",
                windows,
                partial(
                    judge_leak, canary_leak_mib_per_min=1.0, window_s=60.0 * window_min, amplitude_mib=amp
                ),
                seed + 3,
                "",
                None,
            )
            flat = _run(
                f"flat amp={amp} {window_min}min",
                "prometheus",
                windows,
                partial(
                    judge_leak, canary_leak_mib_per_min=0.0, window_s=60.0 * window_min, amplitude_mib=amp
                ),
                seed + 4,
                "",
                None,
            )
            out.append(
                {
                    "sawtooth_mib": list(amp),
                    "window_min": window_min,
                    "detect_1mib_min": det.rate,
                    "false_leak": flat.rate,
                }
            )
    return out


def to_markdown(
    rows: list[Row], params: dict, sweep_rows: list[dict] | None, leak_rows: list[dict] | None = None
) -> str:
    lines = [
        "# Gate judges: statistical benchmark",
        "",
        f"{params['windows']} seeded windows per row (seed {params['seed']}); latency lognormal median 350 ms, "
        f"log-sd {params['sigma']}, {params['n_per_arm']} requests per arm; memory: 10 min after warm-up at a 10 s step, "
        "sawtooth 4-8 MiB high every 30-90 s, 0.25 MiB noise. Rates with 95% Wilson intervals.",
        "",
        "| scenario | source | fail rate | 95% CI | inconclusive | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        met = "" if r.met is None else ("yes" if r.met else "NO")
        lines.append(
            f"| {r.scenario} | {r.source} | {r.rate:.1%} | {r.low:.1%}-{r.high:.1%} | {r.inconclusive} | {r.target} | {met} |"
        )
    if sweep_rows:
        lines += [
            "",
            "## P99 judge (exact samples) by tail width and sample size",
            "",
            "| log-sd | requests/arm | A/A false fail | +15% detected |",
            "|---|---|---|---|",
        ]
        for s in sweep_rows:
            lines.append(
                f"| {s['sigma']} | {s['n_per_arm']} | {s['aa_false_fail']:.1%} | {s['detect_15pct']:.1%} |"
            )
    if leak_rows:
        lines += [
            "",
            "## Leak judge by sawtooth height and window",
            "",
            "| sawtooth MiB | window min | 1 MiB/min detected | false leak |",
            "|---|---|---|---|",
        ]
        for row in leak_rows:
            lo, hi = row["sawtooth_mib"]
            lines.append(
                f"| {lo:g}-{hi:g} | {row['window_min']} | {row['detect_1mib_min']:.1%} | {row['false_leak']:.1%} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gates", description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=2000, help="seeded windows per scenario")
    parser.add_argument("--seed", type=int, default=20260101)
    parser.add_argument("--n-per-arm", type=int, default=400)
    parser.add_argument("--sigma", type=float, default=0.10, help="log-sd of the latency model")
    parser.add_argument(
        "--sources", default="loadtest,histogram", help="P99 sources to judge: loadtest,histogram"
    )
    parser.add_argument(
        "--sweep", action="store_true", help="also tabulate the P99 judge over tail widths and sample sizes"
    )
    parser.add_argument("--out", type=Path, default=Path("reports/bench-gates"))
    args = parser.parse_args(argv)
    sources = tuple(s for s in args.sources.split(",") if s)
    if not set(sources) <= {"loadtest", "histogram"} or args.windows < 1:
        parser.error(
            f"--sources must name loadtest and/or histogram, --windows >= 1 (got {args.sources!r}, {args.windows})"
        )
    t0 = time.monotonic()
    rows = run_benchmark(args.windows, args.seed, args.n_per_arm, args.sigma, sources)
    sweep_rows = sweep(max(args.windows // 4, 100), args.seed) if args.sweep else None
    leak_rows = leak_sweep(max(args.windows // 4, 100), args.seed) if args.sweep else None
    params = {"windows": args.windows, "seed": args.seed, "n_per_arm": args.n_per_arm, "sigma": args.sigma}
    text = to_markdown(rows, params, sweep_rows, leak_rows)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench-gates.md").write_text(text)
    (args.out / "bench-gates.json").write_text(
        json.dumps(
            {
                "params": params,
                "rows": [asdict(r) for r in rows],
                "sweep": sweep_rows,
                "leak_sweep": leak_rows,
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

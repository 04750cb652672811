"""Serving benchmark: per multimodal-input mode, an open-loop rate sweep against a real embedded server.

    python -m bench.serving [--tp 4] [--modes per_request,per_rank,sharded] [--workloads 1920x1080,640x480]
                            [--rates 1920x1080=1,2,3,4] [--measure-s 15] [--settle-s 4] [--budget-s 540]

For each workload and mode it starts one server (`python -m backend --tp-size N --mm-input-mode M`) and
one run of the project's load generator (`python -m loadtest`, Locust, open-loop Poisson arrivals, one
image per streamed chat request) whose stages climb a ladder of offered rates: a short settle stage at
each rate (not measured), then its measured stage. Each measured rate is judged from the generator's
per-request records: sustainable when P99 end-to-end <= --p99-ms, errors < --max-error-rate and the
generator kept up (no arrival dropped, schedule lag P99 within --max-lag-p99-ms, achieved send rate
within --max-rate-error-pct of the schedule). A request still unanswered --p99-ms after its stage
counts as slower than the bound. The ladder stops at the first unsustainable rate (the generator is
stopped, in-flight requests drain); a mode's highest sustainable rate is the highest rate below it.

Server CPU per process (`backend_process_cpu_seconds_total`), RSS, and the entry rank's loop profile
(`backend_scheduler_phase_*`) are sampled from /metrics every second and cut to each measured stage;
the generator's own CPU is read from its process. Writes results.json (after every mode), table.md and
p99.png under --out (default reports/bench-serving/<time>/); `--replot results.json` redraws the table
and plot from a results file.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from infra.net import free_port, wait_http_ok
from loadtest.schedule import Schedule, Stage

MODEL = "bench-vlm"
DEFAULT_MODES = ("per_request", "per_rank", "sharded")
# Offered-rate ladders (requests/s) per workload; --rates replaces one.
DEFAULT_LADDERS: dict[str, tuple[float, ...]] = {
    "1920x1080": (0.5, 1, 1.5, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20),
    "640x480": (2, 4, 6, 8, 12, 16, 20, 24, 32, 40, 48, 64, 80),
}
SENTINEL_MS = 1e9  # an unanswered request, once it is certainly slower than the bound


# ------------------------------------------------------------------------------------------ judging
@dataclass(frozen=True)
class Criteria:
    p99_ms: float = 600.0
    max_error_rate: float = 0.001  # errors must stay below this share
    max_lag_p99_ms: float = 10.0
    max_rate_error_pct: float = 2.0


@dataclass
class RateStats:
    """What the client saw for one measured rate (from the generator's per-request records)."""

    offered_rps: float
    scheduled: int
    completed: int  # records (answered, failed or cancelled)
    ok: int
    failed: int
    unfinished: int  # scheduled, no record (dropped, or still unanswered when judged)
    error_rate: float | None
    sent_rps: float | None  # achieved send rate
    target_rps: float | None  # the schedule's own rate over the same arrivals
    goodput_rps: float | None  # ok responses per second of the stage
    e2e_p50_ms: float | None
    e2e_p99_ms: float | None  # over every scheduled request, unfinished ones as SENTINEL_MS
    e2e_p99_answered_ms: float | None  # over answered requests only
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None
    lag_p99_ms: float | None
    late: int


def _pct(values: Sequence[float], q: float) -> float | None:
    return round(float(np.percentile(np.asarray(values, dtype=float), q)), 2) if len(values) else None


def rate_stats(
    offered_rps: float, scheduled_seqs: Sequence[int], records: Sequence[dict[str, Any]], duration_s: float
) -> RateStats:
    """Per-rate client figures; scheduled seqs without a record count as slower than any bound."""
    by_seq = {r["seq"]: r for r in records}
    recs = [by_seq[s] for s in scheduled_seqs if s in by_seq]
    ok = [r for r in recs if r["ok"]]
    failed = [r for r in recs if not r["ok"] and r["error_kind"] != "cancelled"]
    unfinished = len(scheduled_seqs) - len(recs) + sum(1 for r in recs if r["error_kind"] == "cancelled")
    judged = len(ok) + len(failed)
    e2e = [float(r["e2e_ms"]) for r in ok]
    e2e_all = e2e + [SENTINEL_MS] * (unfinished + len(failed))
    ttft = [float(r["ttft_ms"]) for r in ok if r["ttft_ms"] is not None]
    sent = sorted(r["sent_at"] for r in recs)
    sched = sorted(r["scheduled_at"] for r in recs)
    sent_rps = (len(sent) - 1) / (sent[-1] - sent[0]) if len(sent) >= 2 and sent[-1] > sent[0] else None
    target_rps = (
        (len(sched) - 1) / (sched[-1] - sched[0]) if len(sched) >= 2 and sched[-1] > sched[0] else None
    )
    return RateStats(
        offered_rps=offered_rps,
        scheduled=len(scheduled_seqs),
        completed=len(recs),
        ok=len(ok),
        failed=len(failed),
        unfinished=unfinished,
        error_rate=round(len(failed) / judged, 6) if judged else None,
        sent_rps=round(sent_rps, 4) if sent_rps else None,
        target_rps=round(target_rps, 4) if target_rps else None,
        goodput_rps=round(len(ok) / duration_s, 4) if duration_s > 0 else None,
        e2e_p50_ms=_pct(e2e, 50),
        e2e_p99_ms=_pct(e2e_all, 99),
        e2e_p99_answered_ms=_pct(e2e, 99),
        ttft_p50_ms=_pct(ttft, 50),
        ttft_p99_ms=_pct(ttft, 99),
        lag_p99_ms=_pct([float(r["lag_ms"]) for r in recs], 99),
        late=sum(1 for r in recs if r["late"]),
    )


def judge(stats: RateStats, criteria: Criteria, dropped: int = 0) -> tuple[bool, list[str]]:
    """Sustainable or not, and every reason it is not (missing data never passes)."""
    reasons = []
    if stats.scheduled == 0:
        return False, ["no request scheduled at this rate"]
    if stats.e2e_p99_ms is None or stats.e2e_p99_ms > criteria.p99_ms:
        shown = "no data" if stats.e2e_p99_ms is None else f"{stats.e2e_p99_ms:.0f} ms"
        if stats.e2e_p99_ms is not None and stats.e2e_p99_ms >= SENTINEL_MS:
            shown = f"> {criteria.p99_ms:.0f} ms ({stats.unfinished} unanswered)"
        reasons.append(f"P99 e2e {shown} > {criteria.p99_ms:.0f} ms")
    if stats.error_rate is None or stats.error_rate >= criteria.max_error_rate:
        shown = "no data" if stats.error_rate is None else f"{100 * stats.error_rate:.2f}%"
        reasons.append(f"errors {shown} >= {100 * criteria.max_error_rate:.2f}%")
    if dropped:
        reasons.append(f"generator dropped {dropped} arrivals")
    if stats.lag_p99_ms is None or stats.lag_p99_ms > criteria.max_lag_p99_ms:
        reasons.append(f"generator lag P99 {stats.lag_p99_ms} ms > {criteria.max_lag_p99_ms} ms")
    if stats.sent_rps and stats.target_rps:
        error_pct = 100.0 * (stats.sent_rps / stats.target_rps - 1.0)
        if abs(error_pct) > criteria.max_rate_error_pct:
            reasons.append(f"generator send rate off schedule by {error_pct:+.1f}%")
    return not reasons, reasons


def highest_sustainable(results: Sequence[dict[str, Any]]) -> float | None:
    """Highest offered rate of an ascending sweep below its first unsustainable rate (None: none held)."""
    best = None
    for result in sorted(results, key=lambda r: r["offered_rps"]):
        if not result["sustainable"]:
            break
        best = result["offered_rps"]
    return best


# ------------------------------------------------------------------------------------ the ladder
def ladder_stages(rates: Sequence[float], settle_s: float, measure_s: float) -> tuple[Stage, ...]:
    stages: list[Stage] = []
    for i, rate in enumerate(rates):
        if settle_s > 0:
            stages.append(Stage(f"settle{i}", settle_s, rate))
        stages.append(Stage(f"rate{i}", measure_s, rate))
    return tuple(stages)


def stages_spec(stages: Sequence[Stage]) -> str:
    return ",".join(f"{s.name}:{s.duration_s:g}s@{s.rate:g}" for s in stages)


@dataclass(frozen=True)
class StagePlan:
    """Offsets (s after the run start) of a measured stage and the seqs of its arrivals."""

    index: int
    rate: float
    start_s: float
    end_s: float
    seqs: tuple[int, ...]
    offsets: dict[int, float]


def plan_stages(stages: Sequence[Stage], seed: int) -> list[StagePlan]:
    """The measured stages' arrivals, exactly as the load generator draws them (same seed, same schedule)."""
    offsets: dict[str, dict[int, float]] = {}
    for arrival in Schedule(tuple(stages), "poisson", 1.0, seed).arrivals():
        offsets.setdefault(arrival.stage, {})[arrival.seq] = arrival.offset_s
    plans, start = [], 0.0
    for stage in stages:
        end = start + stage.duration_s
        if stage.name.startswith("rate"):
            own = offsets.get(stage.name, {})
            plans.append(StagePlan(int(stage.name[4:]), stage.rate, start, end, tuple(sorted(own)), own))
        start = end
    return plans


# --------------------------------------------------------------------------------- sampling
@dataclass
class Sample:
    t: float  # unix seconds
    cpu: dict[str, float]  # rank label -> CPU seconds
    rss: dict[str, float]  # rank label -> bytes
    phase_wall: dict[str, float]
    phase_cpu: dict[str, float]
    generator_cpu: float | None


def parse_metrics(text: str) -> tuple[dict[str, float], dict[str, float], dict[str, float], dict[str, float]]:
    """CPU seconds and RSS per process, and the entry rank's phase wall/CPU seconds, from /metrics text."""
    cpu: dict[str, float] = {}
    rss: dict[str, float] = {}
    wall_ph: dict[str, float] = {}
    cpu_ph: dict[str, float] = {}
    wanted = {
        "backend_process_cpu_seconds_total": (cpu, "rank"),
        "backend_process_resident_memory_bytes": (rss, "rank"),
        "backend_scheduler_phase_wall_seconds_total": (wall_ph, "phase"),
        "backend_scheduler_phase_cpu_seconds_total": (cpu_ph, "phase"),
    }
    for line in text.splitlines():
        if not line.startswith("backend_"):
            continue
        name, _, rest = line.partition("{")
        if name not in wanted:
            continue
        labels, _, value = rest.rpartition("}")
        target, key = wanted[name]
        for pair in labels.split(","):
            k, _, v = pair.partition("=")
            if k.strip() == key:
                target[v.strip().strip('"')] = float(value.strip().split()[0])
    return cpu, rss, wall_ph, cpu_ph


class Sampler(threading.Thread):
    """Polls the server's /metrics (and the generator's CPU) once per interval until stopped."""

    def __init__(self, url: str, interval_s: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.interval_s = interval_s
        self.samples: list[Sample] = []
        self.generator: psutil.Process | None = None
        self._stop_event = threading.Event()

    def _generator_cpu(self) -> float | None:
        if self.generator is None:
            return None
        try:
            total = 0.0
            for proc in [self.generator, *self.generator.children(recursive=True)]:
                times = proc.cpu_times()
                total += times.user + times.system
            return total
        except psutil.Error:
            return None

    def sample(self) -> None:
        try:
            with urllib.request.urlopen(self.url + "/metrics", timeout=5) as resp:
                text = resp.read().decode()
        except OSError:
            return
        cpu, rss, wall_ph, cpu_ph = parse_metrics(text)
        self.samples.append(Sample(time.time(), cpu, rss, wall_ph, cpu_ph, self._generator_cpu()))

    def run(self) -> None:
        while not self._stop_event.wait(self.interval_s):
            self.sample()

    def stop(self) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join(10)


def _at(samples: Sequence[Sample], t: float, get: Any) -> float | None:
    """A counter's value at time t, linear between the samples around it (None outside them)."""
    points = [(s.t, get(s)) for s in samples if get(s) is not None]
    if not points or t < points[0][0] - 1.5 or t > points[-1][0] + 1.5:
        return None
    times = [p[0] for p in points]
    return float(np.interp(t, times, [p[1] for p in points]))


def window_usage(samples: Sequence[Sample], t0: float, t1: float) -> dict[str, Any]:
    """CPU % of one core per process and in total, RSS, generator CPU and entry-rank phases over [t0, t1]."""
    if t1 <= t0 or not samples:
        return {}
    keys = sorted({k for s in samples for k in s.cpu}, key=lambda k: (k != "tokenizer", k.zfill(4)))
    cpu_pct: dict[str, float] = {}
    for key in keys:
        a = _at(samples, t0, lambda s, key=key: s.cpu.get(key))
        b = _at(samples, t1, lambda s, key=key: s.cpu.get(key))
        if a is not None and b is not None:
            cpu_pct[key] = round(100.0 * (b - a) / (t1 - t0), 1)
    inside = [s for s in samples if t0 <= s.t <= t1] or [min(samples, key=lambda s: abs(s.t - t1))]
    rss_mib = {k: round(max(s.rss.get(k, 0.0) for s in inside) / 2**20, 1) for k in keys}
    gen_a = _at(samples, t0, lambda s: s.generator_cpu)
    gen_b = _at(samples, t1, lambda s: s.generator_cpu)
    phases: dict[str, dict[str, float]] = {}
    for name in sorted({k for s in samples for k in s.phase_wall}):
        wa = _at(samples, t0, lambda s, n=name: s.phase_wall.get(n))
        wb = _at(samples, t1, lambda s, n=name: s.phase_wall.get(n))
        ca = _at(samples, t0, lambda s, n=name: s.phase_cpu.get(n))
        cb = _at(samples, t1, lambda s, n=name: s.phase_cpu.get(n))
        if None not in (wa, wb, ca, cb):
            assert wa is not None and wb is not None and ca is not None and cb is not None
            phases[name] = {
                "wall_pct": round(100.0 * (wb - wa) / (t1 - t0), 1),
                "cpu_pct": round(100.0 * (cb - ca) / (t1 - t0), 1),
            }
    return {
        "cpu_pct": cpu_pct,
        "cpu_total_pct": round(sum(cpu_pct.values()), 1),
        "scheduler_cpu_max_pct": max((v for k, v in cpu_pct.items() if k != "tokenizer"), default=None),
        "rss_mib": rss_mib,
        "rss_total_mib": round(sum(rss_mib.values()), 1),
        "generator_cpu_pct": None
        if gen_a is None or gen_b is None
        else round(100.0 * (gen_b - gen_a) / (t1 - t0), 1),
        "entry_rank_phases": phases,
    }


# ----------------------------------------------------------------------------------- one mode
@dataclass
class ModeRun:
    workload: str
    mode: str
    tp: int
    server: dict[str, Any] = field(default_factory=dict)
    rates: list[dict[str, Any]] = field(default_factory=list)
    highest_sustainable_rps: float | None = None
    stopped_by: str = ""  # "unsustainable", "ladder end", "budget", "error: ..."


def _read_new_records(path: Path, offset: int, records: dict[int, dict[str, Any]]) -> int:
    if not path.exists():
        return offset
    with path.open("rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n")
    if end < 0:
        return offset
    for line in data[: end + 1].splitlines():
        if line.strip():
            rec = json.loads(line)
            records[rec["seq"]] = rec
    return offset + end + 1


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def _server_info(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/server_info", timeout=10) as resp:
        info = json.loads(resp.read())
    keys = ("tp_size", "mm_input_mode", "device", "step_all_reduce", "cpu_cores", "step_cost_ms", "version")
    return {k: info.get(k) for k in keys}


def run_mode(workload: str, mode: str, rates: Sequence[float], args: argparse.Namespace, out: Path,
             deadline: float) -> ModeRun:  # fmt: skip
    run = ModeRun(workload, mode, args.tp)
    criteria = Criteria(args.p99_ms, args.max_error_rate, args.max_lag_p99_ms, args.max_rate_error_pct)
    tag = f"{workload}-{mode}"
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server_cmd = [sys.executable, "-m", "backend", "--model-path", MODEL, "--tp-size", str(args.tp),
                  "--port", str(port), "--enable-metrics", "--mm-input-mode", mode,
                  "--step-cost-ms", str(args.step_cost_ms), *args.server_args.split()]  # fmt: skip
    with (logs / f"{tag}-server.log").open("wb") as server_log:
        server = subprocess.Popen(
            server_cmd, stdout=server_log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_http_ok(url + "/ready", 300, alive=lambda: server.poll() is None)
    except (RuntimeError, TimeoutError) as exc:
        _stop(server)
        run.stopped_by = f"error: server did not start: {exc}"
        return run
    loadgen: subprocess.Popen | None = None
    sampler = Sampler(url)
    try:
        run.server = _server_info(url)
        print(f"  server up: {run.server}", flush=True)
        # Fit the ladder to the time left: each rate costs settle + measure seconds.
        per_rate = args.settle_s + args.measure_s
        left = deadline - time.time() - args.drain_s - 30.0
        fit = len(rates) if math.isinf(left) else max(0, min(len(rates), int(left // per_rate)))
        if fit == 0:
            run.stopped_by = "budget"
            return run
        truncated = fit < len(rates)
        rates = list(rates)[:fit]
        stages = ladder_stages(rates, args.settle_s, args.measure_s)
        plans = plan_stages(stages, args.seed)
        jsonl = out / "records" / f"{tag}.jsonl"
        jsonl.parent.mkdir(parents=True, exist_ok=True)
        summary_path = out / "records" / f"{tag}-summary.json"
        # A file left by an earlier sweep into the same directory would be read as this run's records.
        jsonl.unlink(missing_ok=True)
        summary_path.unlink(missing_ok=True)
        load_cmd = [sys.executable, "-m", "loadtest", "--headless", "--host", url, "--stages", stages_spec(stages),
                    "--arrival", "poisson", "--seed", str(args.seed), "--image-sizes", workload,
                    "--images-per-request", "1", "--max-tokens", str(args.max_tokens), "--model", MODEL,
                    "--requests-jsonl", str(jsonl), "--summary-json", str(summary_path),
                    "--drain-timeout", str(args.drain_s), "--max-in-flight", str(args.max_in_flight),
                    "--request-timeout", "120", "--loglevel", "WARNING", "--only-summary"]  # fmt: skip
        sampler.start()
        with (logs / f"{tag}-loadgen.log").open("wb") as load_log:
            loadgen = subprocess.Popen(
                load_cmd, stdout=load_log, stderr=subprocess.STDOUT, start_new_session=True
            )
        sampler.generator = psutil.Process(loadgen.pid)
        records: dict[int, dict[str, Any]] = {}
        offset = 0
        run_start: float | None = None
        judged = 0
        failed_at: int | None = None
        while judged < len(plans):
            time.sleep(0.5)
            offset = _read_new_records(jsonl, offset, records)
            if run_start is None and records:
                first = min(records.values(), key=lambda r: r["seq"])
                start_offset = next(
                    (p.offsets[first["seq"]] for p in plans if first["seq"] in p.offsets), None
                )
                if start_offset is None:  # a settle stage's arrival: recompute from the whole schedule
                    every = {
                        a.seq: a.offset_s for a in Schedule(stages, "poisson", 1.0, args.seed).arrivals()
                    }
                    start_offset = every[first["seq"]]
                run_start = first["scheduled_at"] - start_offset
            finished = loadgen.poll() is not None
            if run_start is None:
                if finished:
                    run.stopped_by = f"error: load generator exited {loadgen.returncode} before any record"
                    return run
                continue
            plan = plans[judged]
            due = run_start + plan.end_s + args.p99_ms / 1000.0 + 2.0
            if time.time() < due and not finished:
                continue
            stats = rate_stats(plan.rate, plan.seqs, list(records.values()), plan.end_s - plan.start_s)
            ok, reasons = judge(stats, criteria)
            print(f"  {plan.rate:g} req/s: {'sustained' if ok else 'NOT sustained: ' + '; '.join(reasons)}",
                  flush=True)  # fmt: skip
            judged += 1
            if not ok:
                failed_at = judged
                break
            if time.time() > deadline - args.drain_s - 15:
                run.stopped_by = "budget"
                break
        # Stop the load (in-flight requests get --drain-s), then take every record and the summary.
        if loadgen.poll() is None:
            _stop(loadgen, signal.SIGTERM, timeout_s=args.drain_s + 30)
        offset = _read_new_records(jsonl, offset, records)
        sampler.sample()
        summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
        counters = {s["name"]: s for s in summary.get("schedule", {}).get("stages", [])}
        assert run_start is not None
        for plan in plans[:judged]:
            t0, t1 = run_start + plan.start_s, run_start + plan.end_s
            stats = rate_stats(plan.rate, plan.seqs, list(records.values()), plan.end_s - plan.start_s)
            c = counters.get(f"rate{plan.index}", {})
            dropped = int(c.get("dropped_in_flight", 0)) + int(c.get("dropped_too_late", 0))
            ok, reasons = judge(stats, criteria, dropped)
            run.rates.append(
                {**asdict(stats), "dropped": dropped, "sustainable": ok, "reasons": reasons,
                 "window": [round(t0, 3), round(t1, 3)], **window_usage(sampler.samples, t0, t1)}
            )  # fmt: skip
        run.highest_sustainable_rps = highest_sustainable(run.rates)
        if not run.stopped_by:
            # A ladder cut to the time budget that never failed gives a lower bound, not a maximum.
            run.stopped_by = "unsustainable" if failed_at else "budget" if truncated else "ladder end"
        return run
    except Exception as exc:  # noqa: BLE001 - one mode's failure is recorded; the sweep goes on
        run.stopped_by = f"error: {type(exc).__name__}: {exc}"
        return run
    finally:
        sampler.stop()
        if loadgen is not None:
            _stop(loadgen, signal.SIGTERM, timeout_s=args.drain_s + 30)
        _stop(server, signal.SIGTERM, timeout_s=60)


# ------------------------------------------------------------------------------------- reporting
def host_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        info["mem_gib"] = round(psutil.virtual_memory().total / 2**30)
    except OSError:
        pass
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20).stdout  # fmt: skip
            gpus = [g.strip() for g in out.splitlines() if g.strip()]
            info["gpus"] = len(gpus)
            info["gpu_names"] = sorted(set(gpus))
        except (OSError, subprocess.SubprocessError):
            pass
    info.setdefault("gpus", 0)
    return info


def _s(ms: float | None) -> str:
    if ms is None:
        return "-"
    return "unanswered" if ms >= SENTINEL_MS else f"{ms / 1000:.3f}"


def _pcts(d: dict[str, float] | None, keys: Sequence[str]) -> list[str]:
    return [f"{d[k]:.0f}" if d and k in d else "-" for k in keys]


def targets(runs: Sequence[dict[str, Any]]) -> list[str]:
    """The issue's targets for each workload where per_request, per_rank and sharded all ran."""
    lines = []
    for workload in sorted({r["workload"] for r in runs}):
        by_mode = {r["mode"]: r for r in runs if r["workload"] == workload}
        if not {"per_request", "per_rank", "sharded"} <= set(by_mode):
            continue
        sh, pr, pq = (by_mode[m]["highest_sustainable_rps"] for m in ("sharded", "per_rank", "per_request"))
        lines.append(f"**{workload}, TP={by_mode['sharded']['tp']}**: highest sustainable rate sharded {sh}, "
                     f"per_rank {pr}, per_request {pq} req/s")  # fmt: skip
        if sh is not None and pq:
            lines.append(
                f"- sharded >= 3x per_request: {sh / pq:.2f}x: {'met' if sh >= 3 * pq else 'MISSED'}"
            )
        elif sh is not None:
            lines.append("- sharded >= 3x per_request: per_request sustained no rate of the ladder")
        if sh is not None and pr:
            lines.append(
                f"- sharded >= 1.5x per_rank: {sh / pr:.2f}x: {'met' if sh >= 1.5 * pr else 'MISSED'}"
            )
        if pr:
            at = next((x for x in by_mode["sharded"]["rates"] if x["offered_rps"] == pr), None)
            if at is None:
                lines.append(f"- sharded at per_rank's highest rate ({pr}): not measured")
            else:
                cpu = at.get("scheduler_cpu_max_pct")
                p99 = at["e2e_p99_ms"]
                met = cpu is not None and cpu < 60 and p99 is not None and p99 <= 600
                lines.append(f"- sharded at per_rank's highest rate ({pr} req/s): busiest scheduler process "
                             f"{cpu}% of a core (< 60), P99 {_s(p99)} s (<= 0.6): {'met' if met else 'MISSED'}")  # fmt: skip
    return lines


def to_markdown(data: dict[str, Any]) -> str:
    runs = data["runs"]
    host = data["host"]
    tp = data["args"]["tp"]
    ranks = ["tokenizer", *[str(r) for r in range(tp)]]
    out = [
        f"Host: {host.get('cpus')} CPUs ({host.get('cpu_model', '?')}), {host.get('gpus', 0)} GPU(s) "
        f"{', '.join(host.get('gpu_names', []))}; TP={tp}; step all-reduce: "
        f"{', '.join(sorted({str(r['server'].get('step_all_reduce')) for r in runs if r['server']}))}; "
        f"{data['args']['max_tokens']} output tokens, one image per request, Poisson arrivals, "
        f"{data['args']['measure_s']:g} s measured per rate after {data['args']['settle_s']:g} s settling.",
        "",
        "| workload | mode | highest sustainable req/s | stopped by |",
        "|---|---|---:|---|",
    ]
    for r in runs:
        out.append(
            f"| {r['workload']} | {r['mode']} | {r['highest_sustainable_rps'] or '-'} | {r['stopped_by']} |"
        )
    lines = targets(runs)
    if lines:
        out += ["", *lines]
    head = ("| workload | mode | offered | sent | ok/sched | err % | e2e p50 s | e2e p99 s | TTFT p50 s | TTFT p99 s | "
            + " | ".join(f"CPU% {k}" for k in ranks) + " | CPU% total | gen CPU% | RSS MiB | sustained |")  # fmt: skip
    out += ["", "CPU in % of one core per process over the measured window (`tokenizer` = HTTP front, "
            "`gen` = the load generator); RSS: sum over the server's processes.", "", head,
            "|" + "---|" * (head.count("|") - 1)]  # fmt: skip
    for r in runs:
        for x in r["rates"]:
            err = "-" if x["error_rate"] is None else f"{100 * x['error_rate']:.2f}"
            out.append(
                f"| {r['workload']} | {r['mode']} | {x['offered_rps']:g} | {x['sent_rps'] or '-'} | "
                f"{x['ok']}/{x['scheduled']} | {err} | {_s(x['e2e_p50_ms'])} | {_s(x['e2e_p99_ms'])} | "
                f"{_s(x['ttft_p50_ms'])} | {_s(x['ttft_p99_ms'])} | " + " | ".join(_pcts(x.get("cpu_pct"), ranks))
                + f" | {x.get('cpu_total_pct', '-')} | {x.get('generator_cpu_pct', '-')} | "
                f"{x.get('rss_total_mib', '-')} | {'yes' if x['sustainable'] else 'no'} |"
            )  # fmt: skip
    phase_names = sorted({p for r in runs for x in r["rates"] for p in x.get("entry_rank_phases", {})})
    if phase_names:
        out += ["", "Entry rank (rank 0) loop profile: % of wall time / % of a core of CPU per phase "
                "(`idle_wait`: blocked for input; `fanout`: pickling + broadcasting received requests; "
                "`mm_inputs`: the multimodal stage; `forward` + `all_reduce`: the step).", ""]  # fmt: skip
        head = "| workload | mode | offered | " + " | ".join(phase_names) + " |"
        out += [head, "|" + "---|" * (head.count("|") - 1)]
        for r in runs:
            for x in r["rates"]:
                ph = x.get("entry_rank_phases", {})
                cells = [
                    f"{ph[p]['wall_pct']:.0f} / {ph[p]['cpu_pct']:.0f}" if p in ph else "-"
                    for p in phase_names
                ]
                out.append(
                    f"| {r['workload']} | {r['mode']} | {x['offered_rps']:g} | " + " | ".join(cells) + " |"
                )
    return "\n".join(out) + "\n"


def plot(data: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    workloads = sorted({r["workload"] for r in data["runs"]})
    if not workloads:
        return False
    fig, axes = plt.subplots(1, len(workloads), figsize=(6 * len(workloads), 4.5), squeeze=False)
    limit = data["args"]["p99_ms"] / 1000.0
    for ax, workload in zip(axes[0], workloads, strict=True):
        for r in (r for r in data["runs"] if r["workload"] == workload):
            xs = [x["offered_rps"] for x in r["rates"]]
            ys = [
                min(x["e2e_p99_ms"], 120_000) / 1000.0 if x["e2e_p99_ms"] is not None else np.nan
                for x in r["rates"]
            ]
            ax.plot(xs, ys, marker="o", label=f"{r['mode']} (max {r['highest_sustainable_rps'] or '-'})")
        ax.axhline(limit, color="grey", linestyle="--", linewidth=1, label=f"P99 bound {limit:g} s")
        ax.set_yscale("log")
        ax.set_xlabel("offered rate (requests/s)")
        ax.set_ylabel("P99 end-to-end (s)")
        ax.set_title(f"{workload}, TP={data['args']['tp']}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    host = data["host"]
    fig.suptitle(f"{host.get('cpus')} CPUs, {host.get('gpus', 0)} GPU(s) {', '.join(host.get('gpu_names', []))}",
                 fontsize=9)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_outputs(data: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(out / "results.json")
    (out / "table.md").write_text(to_markdown(data))


# ------------------------------------------------------------------------------------------ main
def _parse_rates(specs: Sequence[str]) -> dict[str, tuple[float, ...]]:
    ladders = dict(DEFAULT_LADDERS)
    for spec in specs:
        workload, sep, values = spec.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"bad --rates {spec!r}: expected WORKLOAD=r1,r2,...")
        rates = tuple(sorted(float(v) for v in values.split(",") if v.strip()))
        if not rates or any(r <= 0 for r in rates):
            raise argparse.ArgumentTypeError(f"bad --rates {spec!r}: rates must be > 0")
        ladders[workload.strip()] = rates
    return ladders


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.serving", description=__doc__.split("\n\n")[0])
    p.add_argument("--tp", type=int, default=2, help="TP size of every server")
    p.add_argument("--modes", default=",".join(DEFAULT_MODES), help="comma-separated mm-input modes")
    p.add_argument(
        "--workloads", default="1920x1080", help="comma-separated image sizes WxH (one image per request)"
    )
    p.add_argument("--rates", action="append", default=[], help="WORKLOAD=r1,r2,... ladder (repeatable)")
    p.add_argument("--measure-s", type=float, default=15.0, help="measured seconds per rate")
    p.add_argument("--settle-s", type=float, default=4.0, help="unmeasured seconds at each rate before it")
    p.add_argument("--drain-s", type=float, default=15.0, help="seconds in-flight requests get at the end")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--step-cost-ms", type=float, default=1.0)
    p.add_argument(
        "--max-in-flight", type=int, default=1024, help="the generator's bound on outstanding requests"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--p99-ms", type=float, default=600.0)
    p.add_argument("--max-error-rate", type=float, default=0.001)
    p.add_argument("--max-lag-p99-ms", type=float, default=10.0)
    p.add_argument("--max-rate-error-pct", type=float, default=2.0)
    p.add_argument(
        "--server-args", default="", help="extra flags for every server, e.g. '--step-all-reduce gloo'"
    )
    p.add_argument(
        "--budget-s", type=float, default=0.0, help="stop starting rates after this long (0: no limit)"
    )
    p.add_argument("--out", default="", help="output directory (default reports/bench-serving/<time>)")
    p.add_argument("--replot", default="", help="redraw table.md and p99.png from this results.json and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.replot:
        src = Path(args.replot)
        loaded = json.loads(src.read_text())
        (src.parent / "table.md").write_text(to_markdown(loaded))
        plotted = plot(loaded, src.parent / "p99.png")
        print(to_markdown(loaded))
        print(f"written {src.parent / 'table.md'}" + (f" and {src.parent / 'p99.png'}" if plotted else ""))
        return 0
    try:
        ladders = _parse_rates(args.rates)
    except argparse.ArgumentTypeError as exc:
        print(f"python -m bench.serving: {exc}", file=sys.stderr)
        return 2
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    for workload in workloads:
        if workload not in ladders:
            print(f"python -m bench.serving: no rate ladder for {workload!r}: give --rates {workload}=...",
                  file=sys.stderr)  # fmt: skip
            return 2
    out = Path(args.out or f"reports/bench-serving/{time.strftime('%Y%m%dT%H%M%S')}")
    started = time.time()
    deadline = started + args.budget_s if args.budget_s > 0 else math.inf
    data: dict[str, Any] = {"schema": "bench-serving/v1", "args": vars(args), "host": host_info(),
                            "started_at": started, "runs": []}  # fmt: skip
    print(f"host: {data['host']}", flush=True)
    for workload in workloads:
        for mode in modes:
            if time.time() > deadline - 60:
                print(f"{workload} {mode}: skipped (budget)", flush=True)
                data["runs"].append(asdict(ModeRun(workload, mode, args.tp, stopped_by="budget")))
                continue
            print(f"{workload} {mode}: TP={args.tp} server, ladder {ladders[workload]}", flush=True)
            run = run_mode(workload, mode, ladders[workload], args, out, deadline)
            print(
                f"  -> highest sustainable {run.highest_sustainable_rps} req/s ({run.stopped_by})", flush=True
            )
            data["runs"].append(asdict(run))
            data["ended_at"] = time.time()
            write_outputs(data, out)
    write_outputs(data, out)
    plotted = plot(data, out / "p99.png")
    print()
    print(to_markdown(data))
    print(f"written to {out}/results.json, table.md" + (", p99.png" if plotted else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

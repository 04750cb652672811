"""Prometheus metrics with sglang 0.5.23's names, labels and buckets, plus the backend's own series.

sglang's tokenizer-side series carry `model_name` and `engine_type` (and `is_streaming` where sglang
adds it); its scheduler-side gauges also carry `tp_rank`, `pp_rank`, `moe_ep_rank` and are exported by
the entry rank only. The backend's own series (per-rank CPU and RSS, allotted cores, multimodal cache
and stage time) are listed in docs/architecture.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import psutil
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

# sglang 0.5.23 TokenizerMetricsCollector defaults.
TTFT_BUCKETS = (0.1, 0.2, 0.4, 0.6, 0.8, 1, 2, 4, 6, 8, 10, 20, 40, 60, 80, 100, 200, 400)
E2E_BUCKETS = (0.1, 0.2, 0.4, 0.6, 0.8, 1, 2, 4, 6, 8, 10, 20, 40, 60, 80, 100, 200, 400, 600, 1200, 1800, 2400)  # fmt: skip
ITL_BUCKETS = (
    0.002, 0.004, 0.006, 0.008, 0.010, 0.015, 0.020, 0.025, 0.030, 0.035, 0.040, 0.060, 0.080,
    0.100, 0.200, 0.400, 0.600, 0.800, 1.000, 2.000, 4.000, 6.000, 8.000,
)  # fmt: skip
TOKENS_BUCKETS = (
    100, 300, 500, 700, 1000, 1500, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000, 10000, 12500,
    15000, 17500, 20000, 22500, 25000, 27500, 30000, 35000, 40000, 60000, 80000, 100000, 200000,
    300000, 400000, 600000, 800000, 1000000, 1100000,
)  # fmt: skip


def geometric_buckets(low: float, high: float, ratio: float) -> tuple[float, ...]:
    """Edges from `low` up to at least `high`, each `ratio` times the last (4 significant digits)."""
    if not (0 < low < high and ratio > 1):
        raise ValueError(f"need 0 < low < high and ratio > 1, got {low}, {high}, {ratio}")
    edges = [low]
    while edges[-1] < high:
        edges.append(float(f"{edges[-1] * ratio:.4g}"))
    return tuple(edges)


@dataclass(frozen=True)
class LatencyBuckets:
    """Bucket edges of the three latency histograms; sglang's defaults unless its `--bucket-*` flags say
    otherwise. The gates can show a P99 ratio below their bound only where edges are that close together
    (docs/gates.md): a 1.15x bound needs edges under 7% apart around the P99 (4% leaves room for noise)."""

    ttft: tuple[float, ...] = TTFT_BUCKETS
    itl: tuple[float, ...] = ITL_BUCKETS
    e2e: tuple[float, ...] = E2E_BUCKETS


# Our own: the multimodal stage runs from about a millisecond (one small image) to seconds (large batches).
MM_STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60)


class BackendMetrics:
    def __init__(
        self,
        model_name: str,
        cpu_cores: float,
        processes: Callable[[], Mapping[str, int]],
        buckets: LatencyBuckets = LatencyBuckets(),
    ) -> None:
        # sglang exports through prometheus_client's multiprocess mode, which has no `_created` series.
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.labels = {"model_name": model_name, "engine_type": "unified"}
        tok = ["model_name", "engine_type"]
        stream = [*tok, "is_streaming"]
        sched = [*tok, "tp_rank", "pp_rank", "moe_ep_rank"]
        self.sched_labels = {**self.labels, "tp_rank": "0", "pp_rank": "0", "moe_ep_rank": "0"}

        self.prompt_tokens = Counter(
            "sglang:prompt_tokens", "Number of prefill tokens processed.", stream, registry=r
        )
        self.generation_tokens = Counter(
            "sglang:generation_tokens", "Number of generation tokens processed.", stream, registry=r
        )
        self.num_requests = Counter(
            "sglang:num_requests", "Number of requests processed.", stream, registry=r
        )
        self.num_aborted = Counter(
            "sglang:num_aborted_requests", "Number of requests aborted.", tok, registry=r
        )
        self.prompt_tokens_hist = Histogram(
            "sglang:prompt_tokens_histogram", "Histogram of prompt token length.", tok,
            buckets=TOKENS_BUCKETS, registry=r,
        )  # fmt: skip
        self.generation_tokens_hist = Histogram(
            "sglang:generation_tokens_histogram", "Histogram of generation token length.", tok,
            buckets=TOKENS_BUCKETS, registry=r,
        )  # fmt: skip
        self.ttft = Histogram(
            "sglang:time_to_first_token_seconds", "Histogram of time to first token in seconds.", stream,
            buckets=buckets.ttft, registry=r,
        )  # fmt: skip
        self.itl = Histogram(
            "sglang:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", tok,
            buckets=buckets.itl, registry=r,
        )  # fmt: skip
        self.tpot = Histogram(
            "sglang:request_time_per_output_token_seconds", "Per-request time per output token in seconds.",
            stream, buckets=ITL_BUCKETS, registry=r,
        )  # fmt: skip
        self.e2e = Histogram(
            "sglang:e2e_request_latency_seconds", "Histogram of End-to-end request latency in seconds", stream,
            buckets=buckets.e2e, registry=r,
        )  # fmt: skip
        self.num_running = Gauge(
            "sglang:num_running_reqs", "The number of running requests.", sched, registry=r
        )
        self.num_queue = Gauge(
            "sglang:num_queue_reqs", "The number of requests in the waiting queue.", sched, registry=r
        )
        self.gen_throughput = Gauge(
            "sglang:gen_throughput", "The generation throughput (token/s).", sched, registry=r
        )
        # sglang's HTTP middleware series: the only place it counts responses by status code.
        self.http_requests = Counter(
            "sglang:http_requests", "Total number of HTTP requests by endpoint and method",
            ["endpoint", "method"], registry=r,
        )  # fmt: skip
        self.http_responses = Counter(
            "sglang:http_responses", "Total number of HTTP responses by endpoint and status code",
            ["endpoint", "status_code", "method"], registry=r,
        )  # fmt: skip
        self.http_active = Gauge(
            "sglang:http_requests_active", "Number of currently active HTTP requests",
            ["endpoint", "method"], registry=r,
        )  # fmt: skip
        # The backend's own series.
        self.request_errors = Counter(
            "backend_request_errors", "Generation requests answered with an error, by HTTP status code.",
            ["code"], registry=r,
        )  # fmt: skip
        self.cpu_allotted = Gauge(
            "backend_cpu_allotted_cores",
            "Cores this server is allotted (the CPU gate's denominator).",
            registry=r,
        )
        self.cpu_allotted.set(cpu_cores)
        self.mm_cache_entries = Gauge(
            "backend_mm_cache_entries", "Entries in the multimodal-input cache (entry rank).", registry=r
        )
        self.mm_stage = Histogram(
            "backend_mm_stage_seconds", "Wall time of the multimodal stage per received batch (slowest rank).",
            buckets=MM_STAGE_BUCKETS, registry=r,
        )  # fmt: skip
        r.register(ProcessCollector(processes))
        self.scheduler_phases = PhaseCollector()
        r.register(self.scheduler_phases)
        for s in ("true", "false"):  # so rates start from zero rather than from the first request
            self.num_requests.labels(**self.labels, is_streaming=s)
            self.prompt_tokens.labels(**self.labels, is_streaming=s)
            self.generation_tokens.labels(**self.labels, is_streaming=s)
        self.num_aborted.labels(**self.labels)
        self.num_running.labels(**self.sched_labels).set(0)
        self.num_queue.labels(**self.sched_labels).set(0)


class PhaseCollector(Collector):
    """The entry rank's loop profile: cumulative wall and CPU seconds per phase (`backend_scheduler_phase_*`)."""

    def __init__(self) -> None:
        self._phases: tuple[tuple[str, float, float], ...] = ()

    def update(self, phases: tuple[tuple[str, float, float], ...]) -> None:
        self._phases = phases

    def collect(self) -> Iterable[CounterMetricFamily]:
        wall = CounterMetricFamily(
            "backend_scheduler_phase_wall_seconds",
            "Entry rank: wall seconds spent in each phase of the scheduler loop",
            labels=["rank", "phase"],
        )
        cpu = CounterMetricFamily(
            "backend_scheduler_phase_cpu_seconds",
            "Entry rank: CPU seconds (its scheduler thread) spent in each phase of the scheduler loop",
            labels=["rank", "phase"],
        )
        for name, wall_s, cpu_s in self._phases:
            wall.add_metric(["0", name], wall_s)
            cpu.add_metric(["0", name], cpu_s)
        yield wall
        yield cpu

    def describe(self) -> Iterable[CounterMetricFamily]:
        return []


class ProcessCollector(Collector):
    """CPU seconds and RSS of each server process (`rank` = tokenizer, 0..N-1), read at scrape time."""

    def __init__(self, processes: Callable[[], Mapping[str, int]]) -> None:
        self._processes = processes
        self._handles: dict[int, psutil.Process] = {}

    def collect(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily]:
        cpu = CounterMetricFamily(
            "backend_process_cpu_seconds",
            "CPU seconds (user + system) of each server process",
            labels=["rank"],
        )
        rss = GaugeMetricFamily(
            "backend_process_resident_memory_bytes",
            "Resident set size of each server process",
            labels=["rank"],
        )
        for name, pid in self._processes().items():
            try:
                proc = self._handles.get(pid) or self._handles.setdefault(pid, psutil.Process(pid))
                with proc.oneshot():
                    times = proc.cpu_times()
                    mem = proc.memory_info()
            except psutil.Error:
                continue  # a process that is gone has no sample, rather than a made-up one
            cpu.add_metric([name], times.user + times.system)
            rss.add_metric([name], float(mem.rss))
        yield cpu
        yield rss

    def describe(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily]:
        return []

"""Seeded synthetic per-arm behaviour: latencies, allocator-sawtooth memory, and the Prometheus series a
scrape of such a server would have produced. Shared by the statistical benchmark and the backfilled
test scenarios, so both judge the same models.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats as sps

from backend.metrics import LatencyBuckets, geometric_buckets

MIB = 1024.0 * 1024.0


@dataclass(frozen=True)
class LatencyModel:
    """Lognormal latency: `median_s` and log-sd `sigma` (0.10: a fixed-output-length workload, steady rate)."""

    median_s: float = 0.35
    sigma: float = 0.10

    def quantile(self, q: float) -> float:
        return self.median_s * math.exp(float(sps.norm.ppf(q)) * self.sigma)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.median_s * np.exp(rng.normal(0.0, self.sigma, n))


def tail_stretch(x: np.ndarray, model: LatencyModel, p99_factor: float, from_q: float = 0.95) -> np.ndarray:
    """Stretch latencies above the model's `from_q` quantile so its P99 grows by `p99_factor`; the median
    and everything below `from_q` are unchanged (a tail-only regression)."""
    lo, p99 = model.quantile(from_q), model.quantile(0.99)
    k = (p99_factor * p99 - lo) / (p99 - lo)
    return np.where(x > lo, lo + (x - lo) * k, x)


@dataclass(frozen=True)
class MemoryModel:
    """Resident memory: base + leak * t + allocator / garbage-collector sawtooth (linear growth, then a
    drop back to the floor) + noise, optionally a one-time rise (a cache filling) that then stays.

    The sawtooth's period is drawn per cycle from `period_s`, its height from `amplitude_bytes`, and
    the floor each collection leaves from N(0, floor_jitter_bytes) (what is live at that instant varies).
    The phase is random: the first cycle began up to one period before the first sample.
    """

    base_bytes: float = 2048 * MIB
    leak_bytes_per_s: float = 0.0
    amplitude_bytes: tuple[float, float] = (4 * MIB, 8 * MIB)
    period_s: tuple[float, float] = (30.0, 90.0)
    noise_bytes: float = 0.25 * MIB
    floor_jitter_bytes: float = 0.0
    warmup_bytes: float = 0.0  # caches filling after start: this much growth ...
    warmup_delay_s: float = 0.0  # ... beginning this long after the first sample ...
    warmup_s: float = 60.0  # ... and spread over this long

    def sample(self, rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=float)
        saw = np.empty_like(t)
        start = float(t[0]) - rng.uniform(0, self.period_s[1])  # random phase
        while start <= t[-1]:
            period = rng.uniform(*self.period_s)
            height = rng.uniform(*self.amplitude_bytes)
            floor = rng.normal(0.0, self.floor_jitter_bytes) if self.floor_jitter_bytes > 0 else 0.0
            mask = (t >= start) & (t < start + period)
            saw[mask] = floor + height * (t[mask] - start) / period
            start += period
        warm = self.warmup_bytes * np.clip((t - t[0] - self.warmup_delay_s) / self.warmup_s, 0.0, 1.0)
        leak = self.leak_bytes_per_s * (t - t[0])
        return self.base_bytes + warm + leak + saw + rng.normal(0, self.noise_bytes, t.size)


def gc_sawtooth(
    amplitude_mib: float,
    period_min: float,
    leak_mib_per_min: float = 0.0,
    *,
    floor_jitter_fraction: float = 0.02,
    rise_mib: float = 0.0,
    rise_delay_s: float = 0.0,
    rise_s: float = 60.0,
) -> MemoryModel:
    """One pod of a garbage-collected server: a sawtooth of nominal height `amplitude_mib` (each cycle
    +-25%) and period `period_min` (each cycle +-20%), the floor each collection leaves jittered by
    `floor_jitter_fraction` of the height (at least 1 MiB), and optionally a one-time rise of `rise_mib`
    starting `rise_delay_s` after the first sample and spread over `rise_s` (a cache filling after the
    traffic share grew), after which the memory stays where it got to."""
    return MemoryModel(
        leak_bytes_per_s=leak_mib_per_min * MIB / 60.0,
        amplitude_bytes=(0.75 * amplitude_mib * MIB, 1.25 * amplitude_mib * MIB),
        period_s=(0.8 * period_min * 60.0, 1.2 * period_min * 60.0),
        floor_jitter_bytes=max(1.0, floor_jitter_fraction * amplitude_mib) * MIB,
        warmup_bytes=rise_mib * MIB,
        warmup_delay_s=rise_delay_s,
        warmup_s=rise_s,
    )


# -- Prometheus series from events -------------------------------------------------------------------
Series = tuple[str, Mapping[str, str], list[tuple[float, float]]]


def counter_at(
    event_times: np.ndarray,
    scrape_times: np.ndarray,
    weights: np.ndarray | None = None,
    reset_at: float | None = None,
) -> np.ndarray:
    """Counter value at each scrape: (weighted) events up to then; a process restart at `reset_at`
    starts the count from zero again, as a restarted pod's counters do."""
    order = np.argsort(event_times)
    ev = np.asarray(event_times, dtype=float)[order]
    w = np.ones_like(ev) if weights is None else np.asarray(weights, dtype=float)[order]
    cum = np.concatenate([[0.0], np.cumsum(w)])
    values = cum[np.searchsorted(ev, scrape_times, side="right")]
    if reset_at is not None:
        at_reset = cum[np.searchsorted(ev, reset_at, side="right")]
        values = np.where(scrape_times >= reset_at, values - at_reset, values)
    return values


def histogram_series(
    name: str,
    labels: Mapping[str, str],
    finish_times: np.ndarray,
    observed: np.ndarray,
    buckets: Sequence[float],
    scrape_times: np.ndarray,
    reset_at: float | None = None,
) -> Iterator[Series]:
    """`name_bucket{le}`, `name_count`, `name_sum` series of a cumulative histogram."""
    for le in [*buckets, math.inf]:
        mask = observed <= le
        values = counter_at(finish_times[mask], scrape_times, reset_at=reset_at)
        le_text = "+Inf" if math.isinf(le) else repr(float(le))
        yield (
            f"{name}_bucket",
            {**labels, "le": le_text},
            list(zip(scrape_times.tolist(), values.tolist(), strict=True)),
        )
    yield (
        f"{name}_count",
        dict(labels),
        list(
            zip(
                scrape_times.tolist(),
                counter_at(finish_times, scrape_times, reset_at=reset_at).tolist(),
                strict=True,
            )
        ),
    )
    yield (
        f"{name}_sum",
        dict(labels),
        list(
            zip(
                scrape_times.tolist(),
                counter_at(finish_times, scrape_times, observed, reset_at).tolist(),
                strict=True,
            )
        ),
    )


# Latency histograms with edges 4% apart where the default LatencyModel's latencies lie (a server started
# with sglang's `--bucket-*` flags): a relative P99 within 1.15x can be shown only on buckets that fine;
# sglang's defaults put both arms' P99 somewhere in 0.4-0.6 s, which bounds the ratio by 1.5x.
FINE_BUCKETS = LatencyBuckets(
    ttft=geometric_buckets(0.05, 0.25, 1.04),
    itl=geometric_buckets(0.002, 0.012, 1.04),
    e2e=geometric_buckets(0.2, 1.0, 1.04),
)


@dataclass(frozen=True)
class ArmBehaviour:
    """What one arm of the embedded stack did over a window, for backfilled scenarios."""

    rps: float = 2.0
    latency: LatencyModel = field(default_factory=LatencyModel)
    p99_factor: float = 1.0  # tail-only stretch of e2e latency
    cpu_utilisation: float = 0.40
    cpu_noise: float = 0.0  # standard deviation of the utilisation over one scrape interval, independent
    allotted_cores: float = 4.0
    memory: MemoryModel = field(default_factory=MemoryModel)
    error_share: float = 0.0  # share of requests answered 5xx inside the error burst
    error_burst: tuple[float, float] | None = None  # seconds from start of the burst (None: whole window)
    restart_at_s: float | None = None  # seconds from start of a process restart (counters reset)
    memory_ranks: int = 1  # processes exporting RSS (`rank` 0..N-1), each its own draw of `memory`
    buckets: LatencyBuckets = FINE_BUCKETS  # a server given finer buckets; LatencyBuckets(): sglang's


def arm_series(
    arm: str,
    behaviour: ArmBehaviour,
    start: float,
    end: float,
    scrape_s: float,
    rng: np.random.Generator,
    extra_labels: Mapping[str, str] | None = None,
) -> list[Series]:
    """Every series the local profile's default gates query, as one arm would have exported them."""
    labels = {"arm": arm, **(extra_labels or {})}
    model_labels = {**labels, "model_name": "demo-vlm"}
    scrapes = np.arange(start, end + 1e-9, scrape_s)
    n = rng.poisson(behaviour.rps * (end - start))
    finish = np.sort(rng.uniform(start, end, n))
    e2e = behaviour.latency.sample(rng, n)
    if behaviour.p99_factor != 1.0:
        e2e = tail_stretch(e2e, behaviour.latency, behaviour.p99_factor)
    ttft = e2e * 0.25
    itl = e2e * 0.75 / 64  # 64 output tokens per request, one ITL observation per request is enough here
    reset = None if behaviour.restart_at_s is None else start + behaviour.restart_at_s
    failed = np.zeros(n, dtype=bool)
    if behaviour.error_share > 0:
        lo, hi = (
            (start, end)
            if behaviour.error_burst is None
            else (start + behaviour.error_burst[0], start + behaviour.error_burst[1])
        )
        in_burst = (finish >= lo) & (finish < hi)
        failed = in_burst & (rng.uniform(size=n) < behaviour.error_share)
    ok = ~failed
    out: list[Series] = []
    out += histogram_series(
        "sglang:e2e_request_latency_seconds",
        model_labels,
        finish[ok],
        e2e[ok],
        behaviour.buckets.e2e,
        scrapes,
        reset,
    )
    out += histogram_series(
        "sglang:time_to_first_token_seconds",
        model_labels,
        finish[ok],
        ttft[ok],
        behaviour.buckets.ttft,
        scrapes,
        reset,
    )
    out += histogram_series(
        "sglang:inter_token_latency_seconds",
        model_labels,
        finish[ok],
        itl[ok],
        behaviour.buckets.itl,
        scrapes,
        reset,
    )
    out.append(
        (
            "sglang:num_requests_total",
            model_labels,
            _pairs(scrapes, counter_at(finish[ok], scrapes, reset_at=reset)),
        )
    )
    out.append(
        ("router_requests_total", {**labels, "code": "200"}, _pairs(scrapes, counter_at(finish[ok], scrapes)))
    )
    if failed.any():
        out.append(
            (
                "router_requests_total",
                {**labels, "code": "503"},
                _pairs(scrapes, counter_at(finish[failed], scrapes)),
            )
        )
    cpu_rate = (
        behaviour.cpu_utilisation * behaviour.allotted_cores
    )  # CPU seconds per second, spread over two ranks
    cpu_now = cpu_rate * (scrapes - start) + 1000.0  # a process that has been up a while
    if behaviour.cpu_noise > 0:  # a counter never goes down: an interval's CPU time is at least 0
        spread = behaviour.cpu_noise * behaviour.allotted_cores * scrape_s
        used = np.maximum(cpu_rate * scrape_s + rng.normal(0.0, spread, scrapes.size - 1), 0.0)
        cpu_now = 1000.0 + np.concatenate([[0.0], np.cumsum(used)])
    if reset is not None:  # the restarted process counts from zero
        cpu_now = np.where(scrapes >= reset, cpu_rate * (scrapes - reset), cpu_now)
    for rank in ("0", "1"):
        out.append(
            ("backend_process_cpu_seconds_total", {**labels, "rank": rank}, _pairs(scrapes, cpu_now / 2))
        )
    out.append(
        (
            "backend_cpu_allotted_cores",
            labels,
            _pairs(scrapes, np.full(scrapes.size, behaviour.allotted_cores)),
        )
    )
    for index in range(behaviour.memory_ranks):
        out.append(
            (
                "backend_process_resident_memory_bytes",
                {**labels, "rank": str(index)},
                _pairs(scrapes, behaviour.memory.sample(rng, scrapes)),
            )
        )
    return out


def _pairs(times: np.ndarray, values: np.ndarray) -> list[tuple[float, float]]:
    return list(zip(times.tolist(), np.asarray(values, dtype=float).tolist(), strict=True))

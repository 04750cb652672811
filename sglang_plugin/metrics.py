"""The plugin's Prometheus series, exported through sglang's own /metrics.

sglang runs its scheduler processes in prometheus_client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR is
set before they start, with --enable-metrics), so series created here in a scheduler process appear on the
server's /metrics next to the `sglang:*` ones. Without that directory they live in this process's default
registry. Created lazily, once per process.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

CACHE_ENTRIES = "sglang_mm_input_cache_entries"
STAGE_SECONDS = "sglang_mm_input_stage_seconds"
FALLBACK_TOTAL = "sglang_mm_input_upstream_fallback_total"

# Same spirit as sglang's latency buckets, down to the sub-millisecond cost of a cache hit.
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True)
class PluginMetrics:
    cache_entries: Any  # Gauge, labels: rank, mode
    stage_seconds: Any  # Histogram, labels: rank, mode
    fallbacks: Any  # Counter, labels: rank, reason


_lock = threading.Lock()
_metrics: PluginMetrics | None = None


def plugin_metrics() -> PluginMetrics:
    global _metrics
    with _lock:
        if _metrics is None:
            from prometheus_client import Counter, Gauge, Histogram

            _metrics = PluginMetrics(
                cache_entries=Gauge(
                    CACHE_ENTRIES,
                    "Entries in the plugin's multimodal-input cache of this scheduler rank",
                    ["rank", "mode"],
                    multiprocess_mode="liveall",
                ),
                stage_seconds=Histogram(
                    STAGE_SECONDS,
                    "Wall time of the plugin's batch-level multimodal step per received batch",
                    ["rank", "mode"],
                    buckets=STAGE_BUCKETS,
                ),
                fallbacks=Counter(
                    FALLBACK_TOTAL,
                    "Requests whose multimodal inputs took upstream's per-request path instead of the batch step",
                    ["rank", "reason"],
                ),
            )
        return _metrics

"""Client-side per-request samples from the load test's JSONL (fields: docs/loadtest.md).

Exact per-request latencies give honest tail-quantile intervals where Prometheus only has sglang's
coarse histogram buckets. Only successful requests that completed inside the evaluation window
(`sent_at + e2e_ms`, the moment a server-side histogram would count them) count; warm-up and
cool-down stages are left out, as the load test's own summary does.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gates.spec import ARMS

SKIPPED_STAGES = ("warmup", "cooldown")


class LoadtestSamplesError(ValueError):
    """The samples file is missing or malformed (names the file and line)."""


@dataclass(frozen=True)
class LoadtestSamples:
    source: str
    values_ms: Mapping[str, Mapping[str, np.ndarray]]  # field -> arm -> milliseconds

    def arm_values(self, field: str, arm: str) -> np.ndarray:
        return self.values_ms.get(field, {}).get(arm, np.empty(0))


def read_loadtest_samples(
    path: str | os.PathLike[str],
    start: float,
    end: float,
    fields: tuple[str, ...] = ("e2e_ms", "ttft_ms", "itl_ms"),
) -> LoadtestSamples:
    file = Path(path)
    try:
        lines = file.read_text().split("\n")
    except OSError as exc:
        raise LoadtestSamplesError(f"cannot read load-test samples {file}: {exc.strerror or exc}") from exc
    collected: dict[str, dict[str, list[float]]] = {f: {a: [] for a in ARMS} for f in fields}
    complete = lines[:-1]  # the file is appended while running: a last line without newline is partial
    for number, line in enumerate(complete, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise LoadtestSamplesError(f"{file}:{number}: not JSON ({exc.msg})") from exc
        if not isinstance(rec, dict):
            raise LoadtestSamplesError(f"{file}:{number}: expected a JSON object")
        arm = rec.get("arm")
        sent = rec.get("sent_at")
        if arm not in ARMS or not rec.get("ok") or rec.get("stage") in SKIPPED_STAGES:
            continue
        if not isinstance(sent, int | float):
            continue
        e2e = rec.get("e2e_ms")
        done = sent + e2e / 1000.0 if isinstance(e2e, int | float) and math.isfinite(e2e) else sent
        if not start <= done <= end:  # completed inside the window, as a Prometheus histogram counts it
            continue
        for f in fields:
            value = rec.get(f)
            if isinstance(value, list):
                collected[f][arm].extend(
                    float(v) for v in value if isinstance(v, int | float) and math.isfinite(v)
                )
            elif isinstance(value, int | float) and math.isfinite(value):
                collected[f][arm].append(float(value))
    values = {
        f: {a: np.asarray(v, dtype=float) for a, v in per_arm.items()} for f, per_arm in collected.items()
    }
    return LoadtestSamples(source=str(file), values_ms=values)

"""Per-request records (the JSONL contract in docs/loadtest.md) and the clock they are stamped with."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import IO, Any

from loadtest.stream import StreamMeter


@dataclass(frozen=True)
class Clock:
    """perf_counter for precise intervals, anchored once to unix time for absolute stamps."""

    unix_at_anchor: float
    perf_at_anchor: float

    @classmethod
    def now(cls) -> Clock:
        return cls(time.time(), time.perf_counter())

    def to_unix(self, perf: float) -> float:
        return self.unix_at_anchor + (perf - self.perf_at_anchor)

    def to_perf(self, unix: float) -> float:
        return self.perf_at_anchor + (unix - self.unix_at_anchor)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 4)


def build_record(
    *,
    seq: int,
    worker: int,
    stage: str,
    clock: Clock,
    scheduled: float,
    sent: float,
    ended: float,
    late_s: float,
    meter: StreamMeter | None,
    status: int | None,
    arm: str | None,
    error_kind: str | None,
    error: str | None,
    images: int,
    request_bytes: int,
) -> dict[str, Any]:
    """One JSONL record; `scheduled`, `sent`, `ended` are perf_counter times."""
    lag = sent - scheduled
    ttft = None if meter is None or meter.first_token is None else meter.first_token - sent
    itl_ms = [round(gap * 1000.0, 4) for gap in meter.itl_s] if meter else []
    tokens = meter.output_tokens if meter else 0
    e2e = ended - sent
    tpot = (e2e - ttft) / (tokens - 1) if ttft is not None and tokens > 1 else None
    return {
        "seq": seq,
        "worker": worker,
        "stage": stage,
        "arm": arm or "unknown",
        "scheduled_at": round(clock.to_unix(scheduled), 6),
        "sent_at": round(clock.to_unix(sent), 6),
        "lag_ms": _ms(lag),
        "late": lag > late_s,
        "status": status,
        "ok": error_kind is None,
        "error_kind": error_kind,
        "error": error,
        "ttft_ms": _ms(ttft),
        "ttft_sched_ms": _ms(None if ttft is None else ttft + lag),
        "e2e_ms": _ms(e2e),
        "e2e_sched_ms": _ms(e2e + lag),
        "itl_ms": itl_ms,
        "itl_mean_ms": round(sum(itl_ms) / len(itl_ms), 4) if itl_ms else None,
        "itl_max_ms": max(itl_ms) if itl_ms else None,
        "tpot_ms": _ms(tpot),
        "output_tokens": tokens,
        "usage_reported": bool(meter and meter.usage_completion is not None),
        "prompt_tokens": meter.usage_prompt if meter else None,
        "images": images,
        "request_bytes": request_bytes,
        "response_id": meter.response_id if meter else None,
    }


class JsonlWriter:
    """Writes records one line each and flushes, so readers can follow the file during the run.

    The file is truncated when the writer opens: one file holds one run, matching its summary.
    """

    def __init__(self, path: str) -> None:
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        self._file: IO[str] | None = open(path, "w", encoding="utf-8")

    def write(self, records: list[dict[str, Any]]) -> None:
        if self._file is None or not records:
            return
        self._file.write("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records))
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def write_json_atomic(path: str, data: dict[str, Any]) -> None:
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=False)
        handle.write("\n")
    os.replace(tmp, path)

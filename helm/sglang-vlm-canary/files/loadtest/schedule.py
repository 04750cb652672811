"""Open-loop arrival schedules: absolute send times drawn from a seed, split across workers by index."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

ARRIVALS = ("constant", "poisson", "gamma")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h)$")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0}
# Gaps are drawn in blocks: one numpy call per block keeps the per-arrival cost to an index.
_BLOCK = 1024


@dataclass(frozen=True)
class Stage:
    name: str
    duration_s: float  # math.inf for an open-ended run
    rate: float  # requests per second; 0 pauses


@dataclass(frozen=True)
class Arrival:
    seq: int  # position in the whole schedule, the same for every worker split
    offset_s: float  # seconds after the run start
    stage: str


def parse_duration(text: str) -> float:
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"bad duration {text!r}: expected a number with s, m or h, e.g. 30s")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def parse_stages(spec: str) -> tuple[Stage, ...]:
    """`"warmup:10s@5,measure:60s@20"` -> stages; an empty spec means none."""
    stages = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, sep, rest = part.partition(":")
        duration, at, rate = rest.partition("@")
        if not sep or not at or not name.strip():
            raise ValueError(f"bad stage {part!r}: expected name:duration@rate, e.g. measure:60s@20")
        try:
            rate_value = float(rate)
        except ValueError:
            raise ValueError(f"bad stage {part!r}: rate {rate!r} is not a number") from None
        if not math.isfinite(rate_value) or rate_value < 0:
            raise ValueError(f"bad stage {part!r}: rate must be >= 0")
        seconds = parse_duration(duration)
        if seconds <= 0:
            raise ValueError(f"bad stage {part!r}: duration must be > 0")
        stages.append(Stage(name.strip(), seconds, rate_value))
    return tuple(stages)


def check_arrival(arrival: str, burstiness: float) -> None:
    if arrival not in ARRIVALS:
        raise ValueError(f"unknown arrival {arrival!r}: expected one of {', '.join(ARRIVALS)}")
    if not (burstiness > 0 and math.isfinite(burstiness)):
        raise ValueError(f"burstiness must be > 0, got {burstiness}")


@dataclass(frozen=True)
class Schedule:
    stages: tuple[Stage, ...]
    arrival: str = "poisson"
    burstiness: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        check_arrival(self.arrival, self.burstiness)
        if not self.stages:
            raise ValueError("a schedule needs at least one stage")

    @classmethod
    def open_ended(cls, rate: float, arrival: str, burstiness: float, seed: int) -> Schedule:
        if not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"rate must be > 0 requests/s, got {rate}")
        return cls((Stage("main", math.inf, rate),), arrival, burstiness, seed)

    @property
    def duration_s(self) -> float:
        return sum(stage.duration_s for stage in self.stages)

    def arrivals(self, worker: int = 0, workers: int = 1) -> Iterator[Arrival]:
        """Every arrival in time order (lazily; open-ended schedules never end), or one worker's share."""
        if not 0 <= worker < workers:
            raise ValueError(f"worker index {worker} out of range for {workers} workers")
        rng = np.random.default_rng(self.seed)
        seq = 0
        stage_start = 0.0
        for stage in self.stages:
            stage_end = stage_start + stage.duration_s
            if stage.rate > 0:
                for offset in self._stage_offsets(stage, stage_start, stage_end, rng):
                    if seq % workers == worker:
                        yield Arrival(seq, offset, stage.name)
                    seq += 1
            stage_start = stage_end

    def _stage_offsets(
        self, stage: Stage, start: float, end: float, rng: np.random.Generator
    ) -> Iterator[float]:
        if self.arrival == "constant":
            gap = 1.0 / stage.rate
            index = 0
            while (offset := start + index * gap) < end:
                yield offset
                index += 1
            return
        # Poisson is gamma with shape 1; the mean gap is 1/rate either way (sglang bench_serving's form).
        shape = 1.0 if self.arrival == "poisson" else self.burstiness
        scale = 1.0 / (stage.rate * shape)
        offset = start
        while True:
            for gap in rng.gamma(shape, scale, _BLOCK):
                offset += float(gap)
                if offset >= end:
                    return
                yield offset

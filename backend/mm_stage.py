"""The scheduler's multimodal stage: hands a received batch to the mminputs strategy of the configured mode.

Every rank calls `run` with the same ordered batch in the same loop iteration; mminputs decides who
materializes and how the results travel between ranks.
"""

from __future__ import annotations

from collections.abc import Sequence

from mminputs.modes import DEFAULT_MODE as _UPSTREAM_DEFAULT
from mminputs.modes import MMMode, parse_mode
from mminputs.types import MMLimits, MMRequest, Outcome

DEFAULT_MODE = _UPSTREAM_DEFAULT.value


def available_modes() -> list[str]:
    return [m.value for m in MMMode]


class MMStage:
    def __init__(self, mode: str, rank: int, world_size: int, limits: MMLimits | None = None) -> None:
        self.mode = parse_mode(mode)
        self.rank = rank
        self.world_size = world_size
        self.limits = limits or MMLimits()

    def run(self, batch: Sequence[MMRequest]) -> list[Outcome]:
        from mminputs.processor import materialize_all

        return list(materialize_all(batch, self.limits))

    def release(self, rid: str) -> None:
        """Drop whatever the strategy still holds for `rid` (a finished or aborted request)."""

    @property
    def cache_entries(self) -> int:
        return 0

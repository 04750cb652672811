"""The multimodal-input modes: how tensor-parallel ranks obtain materialized inputs."""

from __future__ import annotations

import os
from enum import Enum


class MMMode(str, Enum):  # noqa: UP042 - not StrEnum: sglang images may run Python 3.10
    """Mode names are the strings used on command lines and in `MMINPUTS_MODE`."""

    PER_RANK = "per_rank"  # every rank materializes every request (sglang 0.5.23 default)
    PER_REQUEST = "per_request"  # entry rank materializes, one pickled broadcast per request (PR #11910)
    BATCHED = "batched"  # entry rank materializes the whole batch, one broadcast of shared-memory handles
    # recommended: work split across ranks, shared memory on one host, tensors across hosts
    SHARDED = "sharded"
    SHARDED_TENSOR = "sharded_tensor"  # sharded, forced onto tensor-native collectives (the cross-host path)

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


DEFAULT_MODE = MMMode.PER_RANK
RECOMMENDED_MODE = MMMode.SHARDED
MODE_ENV_VAR = "MMINPUTS_MODE"


def parse_mode(value: str | MMMode) -> MMMode:
    """The mode named by `value`; a clear error naming the bad value and the valid ones otherwise."""
    if isinstance(value, MMMode):
        return value
    try:
        return MMMode(value.strip().lower())
    except ValueError:
        valid = ", ".join(m.value for m in MMMode)
        raise ValueError(f"unknown multimodal-input mode {value!r}; valid modes: {valid}") from None


def mode_from_env(var: str = MODE_ENV_VAR, default: MMMode = DEFAULT_MODE) -> MMMode:
    """The mode named by environment variable `var`, or `default` when it is unset or empty."""
    raw = os.environ.get(var, "")
    if not raw.strip():
        return default
    try:
        return parse_mode(raw)
    except ValueError as exc:
        raise ValueError(f"{var}: {exc}") from None

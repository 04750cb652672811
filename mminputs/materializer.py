"""What a strategy materializes, kept apart from who materializes it and how results travel.

A strategy (see strategies.py) owns the collectives, the error envelope, the cache and the transports; a
`Materializer` owns the work on one request and knows its result's shape. Two forms of the work:
- `materialize(request)`: the whole result in fresh memory (`per_rank`, `per_request`, TP=1);
- `stage(request)` then `Staged.write(views)`: the result without its tensors plus the tensors' specs, so
  the transport can lay every tensor of a batch out in one buffer (a shared-memory segment or one flat
  tensor) and have them written straight into it; peers rebuild the result with `assemble(skeleton,
  views, request)`. Only `Record`s (small, picklable) cross process boundaries. Every rank holds every
  request of the batch, so a result may also take tensors from the receiving rank's own copy of its
  request instead of the transport (the sglang plugin's features).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from .sources import InputRejected
from .types import MMInputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TensorSpec:
    """dtype and shape of one tensor of a result; its bytes are laid out contiguously in the buffer."""

    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count * torch.empty((), dtype=self.dtype).element_size()


@dataclass(frozen=True)
class Staged:
    """A request materialized up to its tensors, on the rank that does the work (never pickled).

    `skeleton` is the result without its tensors (small and picklable); `write(views)` fills one tensor per
    spec, in order (the image pipeline normalizes straight into them; others copy)."""

    rid: str
    skeleton: object
    specs: tuple[TensorSpec, ...]
    write: Callable[[Sequence[torch.Tensor]], None]


class ShardedExchange(Protocol):
    """A materializer's own finer split of a batch over ranks on one host (see sharded_shm)."""

    def collect(self, requests: Sequence[Any]) -> list[tuple[str, Any]]: ...

    def close(self) -> None: ...


class Materializer(Protocol):
    """What one request's materialized inputs are. Every method must be deterministic in the request alone
    (`rid`, `cost`, `check`), because every rank derives the same split and the same errors from them."""

    @property
    def name(self) -> str:
        """Names what is materialized (logs, reports)."""
        ...

    def check(self, request: Any, index: int) -> str:
        """The request's id; TypeError naming `batch[index]` if the request is not of the accepted type."""
        ...

    def cost(self, request: Any) -> int:
        """Relative materialization cost, for splitting work across ranks."""
        ...

    def materialize(self, request: Any) -> Any:
        """The result (fresh memory) or an MMInputError; may raise (the caller's envelope catches)."""
        ...

    def stage(self, request: Any) -> Staged | MMInputError:
        """The result up to its tensors; may raise (the caller's envelope catches)."""
        ...

    def assemble(self, skeleton: Any, tensors: Sequence[torch.Tensor], request: Any) -> Any:
        """The result from its skeleton, its tensors (views of the transport's buffer) and this rank's copy
        of the request."""
        ...

    def sharded_exchange(self, group: Any, rank: int, world_size: int) -> ShardedExchange | None:
        """A finer split than whole requests for ranks sharing memory, or None (whole requests)."""
        ...


# ---- the error envelope: a request's failure is data, never an exception on the materializing rank ----


def materialize_safely(materializer: Materializer, request: Any, rid: str) -> Any:
    """`materializer.materialize(request)`, with bad input and unexpected failures as that request's error."""
    try:
        return materializer.materialize(request)
    except Exception as exc:  # noqa: BLE001 - fails this request only, on every rank
        return _as_error(rid, exc)


def stage_safely(materializer: Materializer, request: Any, rid: str) -> Staged | MMInputError:
    """`materializer.stage(request)` under the same envelope as `materialize_safely`."""
    try:
        return materializer.stage(request)
    except Exception as exc:  # noqa: BLE001 - fails this request only, on every rank
        return _as_error(rid, exc)


def _as_error(rid: str, exc: Exception) -> MMInputError:
    if isinstance(exc, InputRejected):
        return MMInputError(rid, exc.status, exc.message)
    log.exception("materializing request %s failed", rid)
    return MMInputError(rid, 500, f"{type(exc).__name__}: {exc}")  # upstream's envelope text

"""The per-rank cache between a batch's collective step and each request's use of its inputs."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from .types import Outcome

DEFAULT_CACHE_CAPACITY = 1000


class OutcomeCache:
    """Bounded FIFO of outcomes by request id: filled per batch, popped on use, discarded on abort.

    When full, the oldest entry is evicted (counted in `evictions`), so requests that were never popped
    nor discarded cannot grow memory without bound.
    """

    def __init__(self, capacity: int = DEFAULT_CACHE_CAPACITY) -> None:
        if not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"cache_capacity must be a positive integer, got {capacity!r}")
        self.capacity = capacity
        self.evictions = 0
        self._entries: OrderedDict[str, Any] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, rid: object) -> bool:
        return rid in self._entries

    def put(self, outcome: Outcome | Any, rid: str | None = None) -> None:
        """Store `outcome` under `rid` (default: its own `.rid`; results of other materializers have none)."""
        key = outcome.rid if rid is None else rid
        self._entries.pop(key, None)  # a re-sent rid replaces its old entry, at the back
        self._entries[key] = outcome
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
            self.evictions += 1

    def pop(self, rid: str) -> Any:
        try:
            return self._entries.pop(rid)
        except KeyError:
            raise KeyError(
                f"no multimodal inputs cached for request {rid!r} (never prepared, popped or evicted)"
            ) from None

    def discard(self, rid: str) -> bool:
        return self._entries.pop(rid, None) is not None

    def clear(self) -> None:
        self._entries.clear()

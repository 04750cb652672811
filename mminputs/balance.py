"""Splitting work across ranks: a function of the requests alone, so every rank derives the same split."""

from __future__ import annotations

from collections.abc import Sequence

# Assumed cost of a source given as a file path: its size on disk may differ between hosts.
PATH_SOURCE_COST = 256 * 1024


def sources_cost(sources: Sequence[str]) -> int:
    """Estimated materialization cost of some sources: their encoded length (work grows with it)."""
    total = 1
    for source in sources:
        inline = isinstance(source, str) and (source.startswith("data:") or len(source) > 4096)
        total += len(source) if inline else PATH_SOURCE_COST
    return total


def assign(costs: Sequence[int], world_size: int, first: int = 0) -> list[int]:
    """Owner (group rank) of each job: largest first onto the least-loaded rank.

    Ties go to the rank nearest after `first` (in rank order, wrapping). Callers rotate `first` from batch
    to batch (a counter every rank keeps alike), so a stream of one-image batches spreads over the ranks
    instead of always landing on the entry rank, which already does the request fan-out.
    """
    load = [0] * world_size
    owners = [0] * len(costs)
    for index in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        rank = min(range(world_size), key=lambda k: (load[k], (k - first) % world_size))
        owners[index] = rank
        load[rank] += costs[index]
    return owners

"""Modes, the cache, work assignment and TP=1 strategies (no process group)."""

from __future__ import annotations

import pytest

from mminputs import (
    DEFAULT_MODE,
    MaterializedInputs,
    MMInputError,
    MMItem,
    MMMode,
    MMRequest,
    make_strategy,
    materialize,
    mode_from_env,
    parse_mode,
)
from mminputs.balance import assign
from mminputs.cache import OutcomeCache
from mminputs.strategies import PerRankStrategy
from mminputs.types import MMLimits
from testkit.images import synthetic_frame


def test_default_mode_is_upstream_default():
    assert DEFAULT_MODE is MMMode.PER_RANK
    assert [m.value for m in MMMode] == ["per_rank", "per_request", "batched", "sharded", "sharded_tensor"]


def test_parse_mode_accepts_strings_and_names_bad_values():
    assert parse_mode(" Sharded ") is MMMode.SHARDED
    with pytest.raises(ValueError, match=r"'fastest'.*per_rank"):
        parse_mode("fastest")


def test_mode_from_env(monkeypatch):
    monkeypatch.delenv("MMINPUTS_MODE", raising=False)
    assert mode_from_env() is MMMode.PER_RANK
    monkeypatch.setenv("MMINPUTS_MODE", "batched")
    assert mode_from_env() is MMMode.BATCHED
    monkeypatch.setenv("MMINPUTS_MODE", "nope")
    with pytest.raises(ValueError, match="MMINPUTS_MODE"):
        mode_from_env()


def _err(rid: str) -> MMInputError:
    return MMInputError(rid, 400, "x")


def test_cache_is_a_bounded_fifo():
    cache = OutcomeCache(3)
    for k in range(5):
        cache.put(_err(f"r{k}"))
    assert len(cache) == 3 and cache.evictions == 2
    assert "r0" not in cache and "r1" not in cache
    assert cache.pop("r2").rid == "r2"
    assert cache.discard("r3") and not cache.discard("r3")
    with pytest.raises(KeyError, match="r3"):
        cache.pop("r3")
    with pytest.raises(ValueError, match="cache_capacity"):
        OutcomeCache(0)


def test_cache_ten_thousand_through_ends_empty():
    cache = OutcomeCache()
    for k in range(10_000):
        cache.put(_err(f"r{k}"))
        if k % 7 == 0:
            cache.discard(f"r{k}")
        else:
            cache.pop(f"r{k}")
        assert len(cache) <= 1
    assert len(cache) == 0 and cache.evictions == 0


def test_assignment_is_balanced_and_deterministic():
    costs = [5, 1, 1, 1, 1, 1, 9, 3, 3]
    owners = assign(costs, 3)
    assert owners == assign(costs, 3)
    loads = [sum(c for c, o in zip(costs, owners, strict=True) if o == r) for r in range(3)]
    assert max(loads) - min(loads) <= 1


def test_tp1_strategy_needs_no_group_and_matches_reference():
    frames = [synthetic_frame(50 + k, 40, k) for k in range(3)]
    batch = [MMRequest(f"r{k}", (MMItem.image(frames[k]),)) for k in range(3)]
    batch.append(MMRequest("bad", (MMItem.image("data:image/png;base64,AAAA"),)))
    for mode in MMMode:
        strategy = make_strategy(mode)
        assert isinstance(strategy, PerRankStrategy) and strategy.mode is mode
        got = strategy.obtain(batch)
        want = [materialize(r, MMLimits()) for r in batch]
        assert all(
            w.same_as(g) if isinstance(w, MaterializedInputs) else w == g
            for g, w in zip(got, want, strict=True)
        )
        assert strategy.cache_size == 0 and strategy.last_stage_seconds > 0


def test_prepare_pop_discard_and_batch_checks():
    strategy = make_strategy("per_rank", cache_capacity=4)
    batch = [MMRequest(f"r{k}", (MMItem.image(synthetic_frame(20, 20, k)),)) for k in range(3)]
    strategy.prepare(batch)
    assert strategy.cache_size == 3
    assert isinstance(strategy.pop("r1"), MaterializedInputs)
    assert strategy.discard("r0") and strategy.cache_size == 1
    with pytest.raises(ValueError, match="repeated rid 'x'"):
        strategy.prepare([MMRequest("x", ()), MMRequest("x", ())])
    with pytest.raises(TypeError, match=r"batch\[0\] is dict"):
        strategy.prepare([{"rid": "x"}])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="exceeds the cache capacity 4"):
        strategy.prepare([MMRequest(f"y{k}", ()) for k in range(5)])
    # obtain() chunks a batch larger than the cache.
    assert [o.rid for o in strategy.obtain([MMRequest(f"z{k}", ()) for k in range(9)])] == [
        f"z{k}" for k in range(9)
    ]


def test_group_without_torch_distributed_is_refused():
    with pytest.raises(ValueError, match="not initialized"):
        make_strategy("sharded", group=object())

"""Multimodal-input scenarios for the tests, run on every rank of a real gloo group (`testkit.gloo_group`).

Scenario functions live here (not in test modules) because spawned ranks must import them by name.
"""

from __future__ import annotations

import gc
import os
import random
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from mminputs import object_tensors
from mminputs.image_pipeline import ImagePipeline
from mminputs.materializer import materialize_safely
from mminputs.modes import MMMode
from mminputs.processor import materialize
from mminputs.sources import InputRejected
from mminputs.strategies import make_strategy
from mminputs.types import MaterializedInputs, MMInputError, MMItem, MMLimits, MMRequest
from testkit.images import encode_jpeg, synthetic_frame

# -- inputs --------------------------------------------------------------------------------------------
TEST_LIMITS = MMLimits(max_items=4, max_frames=6, max_source_bytes=200_000, max_decoded_pixels=4_000_000)


def mixed_batch(image_path: str) -> list[tuple[MMRequest, int]]:
    """Requests covering every shape and every error, each with its expected status (200 = success)."""
    img = synthetic_frame
    truncated = img(64, 48, 3)[:-200]
    big_pixels = encode_jpeg(__import__("numpy").zeros((2100, 2000, 3), dtype="uint8"), quality=10)
    return [
        (MMRequest("img-small", (MMItem.image(img(40, 30, 1)),)), 200),
        (MMRequest("img-wide", (MMItem.image(img(300, 90, 2)),)), 200),
        (MMRequest("bad-b64", (MMItem.image("data:image/png;base64,@@@@"),)), 400),
        (MMRequest("video-odd", (MMItem.video([img(96, 64, 10 + f) for f in range(5)]),)), 200),
        (
            MMRequest(
                "mixed", (MMItem.image(img(50, 70, 4)), MMItem.video([img(64, 64, 20), img(64, 64, 21)]))
            ),
            200,
        ),
        (MMRequest("no-items", ()), 200),
        (MMRequest("not-image", (MMItem.image("data:image/png;base64,aGVsbG8gd29ybGQ="),)), 400),
        (MMRequest("truncated", (MMItem.image(truncated),)), 400),
        (MMRequest("too-many-frames", (MMItem.video([img(32, 32, 30)] * 7),)), 413),
        (MMRequest("too-many-bytes", (MMItem.image("data:image/png;base64," + "A" * 300_000),)), 413),
        (MMRequest("too-many-pixels", (MMItem.image(big_pixels),)), 413),
        (MMRequest("remote", (MMItem.image("https://example.invalid/cat.png"),)), 400),
        (MMRequest("file", (MMItem.image(image_path),)), 200),
        (MMRequest("missing-file", (MMItem.image("file:///nonexistent/dir/img.png"),)), 400),
        (MMRequest("video-bad-frame", (MMItem.video([img(48, 48, 40), "data:image/png;base64,AAAA"]),)), 400),
        (MMRequest("img-after-errors", (MMItem.image(img(120, 80, 5)),)), 200),
    ]


def same_outcome(got: Any, want: Any) -> bool:
    if isinstance(want, MaterializedInputs):
        return want.same_as(got)
    return bool(got == want)


# -- scenarios (run on every rank) ---------------------------------------------------------------------
def scenario_modes_match_reference(rank: int, world: int, image_path: str, modes: list[str]) -> dict:
    """Every mode's outcomes, bitwise equal to single-process materialization, in order, with statuses."""
    batch = mixed_batch(image_path)
    requests = [r for r, _ in batch]
    reference = [materialize(r, TEST_LIMITS) for r in requests]
    report = {}
    for mode in modes:
        strategy = make_strategy(mode, group=dist.group.WORLD, limits=TEST_LIMITS)
        got = strategy.obtain(requests)
        report[mode] = {
            "transport": strategy.transport_name,
            "equal": [same_outcome(g, w) for g, w in zip(got, reference, strict=True)],
            "status": [g.status if isinstance(g, MMInputError) else 200 for g in got],
            "cache": strategy.cache_size,
        }
        strategy.close()
    return report


def scenario_mixed_stream(rank: int, world: int, modes: list[str], batches: int, seed: int) -> dict:
    """A long stream of mixed good and bad requests per mode; returns counts (all ranks must agree)."""
    good = [synthetic_frame(24 + 8 * k, 20 + 4 * k, k) for k in range(6)]
    bad = ["data:image/jpeg;base64,!!!", "data:image/png;base64,aGVsbG8=", good[0][:-60]]
    report = {}
    for mode in modes:
        rng = random.Random(seed)
        strategy = make_strategy(mode, group=dist.group.WORLD)
        counts = {"ok": 0, "error": 0, "mismatch": 0, "max_cache": 0}
        for b in range(batches):
            batch, expect_ok = [], []
            for i in range(rng.randint(1, 8)):
                is_bad = rng.random() < 0.3
                source = rng.choice(bad) if is_bad else rng.choice(good)
                batch.append(MMRequest(f"{mode}-{b}-{i}", (MMItem.image(source),)))
                expect_ok.append(not is_bad)
            strategy.prepare(batch)
            counts["max_cache"] = max(counts["max_cache"], strategy.cache_size)
            for request, ok in zip(batch, expect_ok, strict=True):
                outcome = strategy.pop(request.rid)
                if ok and isinstance(outcome, MaterializedInputs) and outcome.rid == request.rid:
                    counts["ok"] += 1
                elif not ok and isinstance(outcome, MMInputError) and outcome.status == 400:
                    counts["error"] += 1
                else:
                    counts["mismatch"] += 1
        counts["final_cache"] = strategy.cache_size
        report[mode] = counts
        strategy.close()
    return report


def scenario_writes_stay_private(rank: int, world: int, modes: list[str]) -> dict:
    """Rank 0 overwrites its tensors in place; every other rank's tensors must not change."""
    requests = [MMRequest(f"w{k}", (MMItem.image(synthetic_frame(60 + 10 * k, 50, k)),)) for k in range(3)]
    reference = [materialize(r, MMLimits()) for r in requests]
    report = {}
    for mode in modes:
        strategy = make_strategy(mode, group=dist.group.WORLD)
        got = strategy.obtain(requests)
        if rank == 0:
            for outcome in got:
                assert isinstance(outcome, MaterializedInputs) and outcome.pixel_values is not None
                outcome.pixel_values.fill_(-7.0)
        dist.barrier()
        report[mode] = [same_outcome(g, w) for g, w in zip(got, reference, strict=True)]
        dist.barrier()
        strategy.close()
    return report


def memfd_state() -> dict:
    """Descriptors and mappings of this process that refer to mminputs segments."""
    fds = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith("/memfd:mminputs"):
                fds += 1
        except OSError:
            pass
    with open("/proc/self/maps") as fh:
        maps = sum(1 for line in fh if "memfd:mminputs" in line)
    return {"fds": fds, "maps": maps}


def scenario_many_requests(rank: int, world: int, mode: str, total: int, batch_size: int) -> dict:
    """`total` requests through prepare/pop (every 10th aborted and discarded instead); cache and segments."""
    frames = [synthetic_frame(32 + 4 * k, 24, 100 + k) for k in range(4)]
    strategy = make_strategy(mode, group=dist.group.WORLD)
    max_state = {"fds": 0, "maps": 0}
    max_cache = 0
    for start in range(0, total, batch_size):
        batch = [
            MMRequest(f"r{n}", (MMItem.image(frames[n % 4]),))
            for n in range(start, min(total, start + batch_size))
        ]
        strategy.prepare(batch)
        max_cache = max(max_cache, strategy.cache_size)
        for n, request in enumerate(batch, start):
            if n % 10 == 0:
                strategy.discard(request.rid)
            else:
                outcome = strategy.pop(request.rid)
                assert isinstance(outcome, MaterializedInputs), outcome
        del outcome
        if start % (batch_size * 20) == 0:
            state = memfd_state()
            max_state = {k: max(v, state[k]) for k, v in max_state.items()}
    final_cache = strategy.cache_size
    strategy.close()
    gc.collect()
    return {
        "max_cache": max_cache,
        "final_cache": final_cache,
        "max_state": max_state,
        "after_close": memfd_state(),
    }


def scenario_until_killed(rank: int, world: int, mode: str, marker_dir: str) -> dict:
    """Run batches until a peer dies; then close and report what segments this rank still holds."""
    frames = [synthetic_frame(160, 120, 200 + k) for k in range(4)]
    strategy = make_strategy(mode, group=dist.group.WORLD)
    batches = 0
    error = ""
    try:
        while batches < 100_000:
            batch = [MMRequest(f"b{batches}-{i}", (MMItem.image(frames[i % 4]),)) for i in range(4)]
            outcomes = strategy.obtain(batch)
            batches += 1
            if batches == 3:
                open(os.path.join(marker_dir, f"rank{rank}.ready"), "w").close()
    except Exception as exc:  # noqa: BLE001 - the peer's death is what this scenario waits for
        error = f"{type(exc).__name__}: {exc}"[:300]
    outcomes = []
    del outcomes
    strategy.close()
    gc.collect()
    return {"batches": batches, "error": error, "after_close": memfd_state()}


# -- a materializer other than the image pipeline (the strategies are generic over what they materialize) --
@dataclass(frozen=True, eq=False)
class RecordRequest:
    """A request for `RecordMaterializer`: `fail` 0 = succeed, 413 = rejected input, 500 = a crash. `given`
    is a tensor every rank's copy of the request holds (it needs no transport)."""

    rid: str
    rows: int
    fail: int = 0
    given: torch.Tensor | None = None


@dataclass
class Record:
    """A result with tensors of several dtypes, nested, one referenced twice, one empty, one not a tensor."""

    rid: str
    features: torch.Tensor
    extra: dict
    positions: list
    given: torch.Tensor | None = None


class RecordMaterializer:
    """Deterministic records (like upstream's processor-output conversion: any picklable object with tensors),
    staged through `object_tensors`: the path the sglang plugin takes."""

    name = "records"

    def check(self, request: object, index: int) -> str:
        if not isinstance(request, RecordRequest):
            raise TypeError(f"batch[{index}] is {type(request).__name__}, expected RecordRequest")
        return request.rid

    def cost(self, request: RecordRequest) -> int:
        return request.rows + 1

    def materialize(self, request: RecordRequest) -> Record:
        if request.fail == 413:
            raise InputRejected(413, f"{request.rows} rows is over the limit")
        if request.fail:
            raise ValueError(f"cannot convert {request.rid}")
        gen = torch.Generator().manual_seed(request.rows)
        features = torch.randn(request.rows, 7, generator=gen)
        grid = torch.tensor([[1, request.rows, 7]], dtype=torch.int64)
        return Record(
            request.rid,
            features,
            {
                "grid": grid,
                "half": features.to(torch.bfloat16)[:, ::2],
                "mask": features > 0,
                "empty": torch.empty(0, 3),
            },
            [grid, request.rows, "text"],
            request.given,
        )

    def stage(self, request: RecordRequest):
        given = {} if request.given is None else {id(request.given): "given"}
        return object_tensors.stage_object(request.rid, self.materialize(request), local=given)

    def assemble(self, skeleton, tensors, request: RecordRequest):
        return object_tensors.join(skeleton, tensors, lambda key: getattr(request, str(key)))

    def sharded_exchange(self, group, rank: int, world_size: int):
        return None


class WholeRequestImages(ImagePipeline):
    """The image pipeline without its finer sharded split: the sharded mode's whole-request shm path."""

    def sharded_exchange(self, group, rank: int, world_size: int):
        return None


def same_record(got: Any, want: Any) -> bool:
    """Bitwise equality of two `Record`s (or equal errors), including dtypes and the shared grid."""
    if not isinstance(want, Record):
        return bool(got == want)
    tensors = lambda r: [r.features, *(r.extra[k] for k in sorted(r.extra)), r.positions[0]]  # noqa: E731
    same = all(
        a.dtype == b.dtype
        and a.shape == b.shape
        and torch.equal(a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8))
        for a, b in zip(tensors(got), tensors(want), strict=True)
    )
    same_given = (got.given is None and want.given is None) or (
        got.given is not None and want.given is not None and torch.equal(got.given, want.given)
    )
    return (
        same
        and same_given
        and got.rid == want.rid
        and got.positions[1:] == want.positions[1:]
        and got.positions[0] is got.extra["grid"]
    )


def record_batch() -> list[RecordRequest]:
    return [
        RecordRequest("rec-0", 5, given=torch.arange(6.0)),
        RecordRequest("rec-crash", 3, fail=500),
        RecordRequest("rec-1", 40),
        RecordRequest("rec-big", 2, fail=413),
        RecordRequest("rec-2", 1),
        RecordRequest("rec-3", 17),
    ]


def scenario_generic_materializers(rank: int, world: int, image_path: str, modes: list[str]) -> dict:
    """Every mode with `RecordMaterializer` and with whole-request images: equal to single-process results."""
    records = RecordMaterializer()
    record_requests = record_batch()
    record_reference = [materialize_safely(records, r, r.rid) for r in record_requests]
    images = WholeRequestImages(TEST_LIMITS)
    image_requests = [r for r, _ in mixed_batch(image_path)]
    image_reference = [materialize(r, TEST_LIMITS) for r in image_requests]
    report = {}
    for mode in modes:
        got_records = make_strategy(mode, group=dist.group.WORLD, materializer=records)
        got_images = make_strategy(mode, group=dist.group.WORLD, materializer=images)
        outcomes = got_records.obtain(record_requests)
        image_outcomes = got_images.obtain(image_requests)
        report[mode] = {
            "transport": (got_records.transport_name, got_images.transport_name),
            "records": [same_record(g, w) for g, w in zip(outcomes, record_reference, strict=True)],
            # the rank's own tensor, not a copy that travelled
            "given_is_own": outcomes[0].given is record_requests[0].given,
            "images": [same_outcome(g, w) for g, w in zip(image_outcomes, image_reference, strict=True)],
            "status": [g.status if isinstance(g, MMInputError) else 200 for g in outcomes],
            "cache": got_records.cache_size + got_images.cache_size,
        }
        got_records.close()
        got_images.close()
    return report


__all__ = [
    "MMMode",
    "TEST_LIMITS",
    "mixed_batch",
    "same_outcome",
]

"""Materializers in one process: the object/tensor split, the error envelope, the image pipeline's staging."""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from mminputs import ImagePipeline, InputRejected, MMInputError, MMItem, MMRequest, make_strategy, materialize
from mminputs.materializer import materialize_safely, stage_safely
from mminputs.object_tensors import join, split, stage_object
from mminputs.packing import fill, flat_view, layout, unpack
from testkit.images import synthetic_frame
from testkit.mm_scenarios import Record, RecordMaterializer, RecordRequest, record_batch, same_record


@dataclass
class Holder:
    a: torch.Tensor
    again: torch.Tensor
    nested: dict
    grad: torch.Tensor
    array: np.ndarray


def test_split_keeps_tensors_out_of_the_pickle_and_join_restores_them():
    big = torch.arange(100_000, dtype=torch.float32).view(1000, 100)
    obj = Holder(
        a=big,
        again=big,
        nested={"ids": torch.tensor([3, 4], dtype=torch.int64), "t": (torch.ones(2, dtype=torch.bfloat16),)},
        grad=torch.zeros(3, requires_grad=True),
        array=np.arange(4),
    )
    skeleton, tensors = split(obj)
    assert len(skeleton) < 2_000  # 400 KB of floats are not in it
    assert [t.dtype for t in tensors] == [torch.float32, torch.int64, torch.bfloat16]  # one slot for `big`
    back = join(skeleton, [t.clone() for t in tensors])
    assert torch.equal(back.a, big) and back.again is back.a
    assert back.nested["ids"].tolist() == [3, 4] and back.nested["t"][0].dtype == torch.bfloat16
    assert back.grad.requires_grad and np.array_equal(back.array, np.arange(4))  # pickled inline
    with pytest.raises(pickle.UnpicklingError, match="unknown tensor slot"):
        join(skeleton, tensors[:1])


def test_staged_objects_round_trip_through_a_flat_buffer():
    requests = record_batch()
    m = RecordMaterializer()
    staged = [stage_safely(m, r, r.rid) for r in requests]
    records, nbytes = layout(staged)
    assert nbytes % 64 == 0 and nbytes > 0
    flat = torch.empty(nbytes, dtype=torch.uint8)
    fill(staged, records, flat_view(flat))
    got = unpack(records, flat_view(flat), m, {r.rid: r for r in requests})
    assert [rid for rid, _ in got] == [r.rid for r in requests]
    for (_, outcome), request in zip(got, requests, strict=True):
        assert same_record(outcome, materialize_safely(m, request, request.rid))
    features = got[0][1].features
    assert features.untyped_storage().data_ptr() == flat.untyped_storage().data_ptr()  # a view, not a copy


def test_envelope_turns_failures_into_errors_with_statuses():
    m = RecordMaterializer()
    assert materialize_safely(m, RecordRequest("x", 2, fail=413), "x") == MMInputError(
        "x", 413, "2 rows is over the limit"
    )
    crash = stage_safely(m, RecordRequest("y", 2, fail=500), "y")
    assert (
        isinstance(crash, MMInputError)
        and crash.status == 500
        and "ValueError: cannot convert y" in crash.message
    )
    assert isinstance(materialize_safely(m, RecordRequest("z", 2), "z"), Record)
    assert issubclass(InputRejected, Exception)


def test_tp1_strategy_with_another_materializer():
    m = RecordMaterializer()
    strategy = make_strategy("sharded", materializer=m)
    got = strategy.obtain(record_batch())
    assert [g.status if isinstance(g, MMInputError) else 200 for g in got] == [200, 500, 200, 413, 200, 200]
    with pytest.raises(TypeError, match=r"batch\[0\] is MMRequest, expected RecordRequest"):
        strategy.prepare([MMRequest("a", ())])
    with pytest.raises(ValueError, match="either a materializer or limits"):
        make_strategy("per_rank", materializer=m, limits=ImagePipeline().limits)


def test_image_pipeline_staging_writes_what_materialize_returns():
    pipeline = ImagePipeline()
    request = MMRequest(
        "s",
        (
            MMItem.image(synthetic_frame(70, 50, 1)),
            MMItem.video([synthetic_frame(64, 64, k) for k in range(3)]),
        ),
    )
    staged = pipeline.stage(request)
    assert [s.dtype for s in staged.specs] == [torch.float32, torch.float32]
    views = [torch.empty(s.shape, dtype=s.dtype) for s in staged.specs]
    staged.write(views)
    assert pipeline.assemble(staged.skeleton, views, request).same_as(materialize(request, pipeline.limits))


def test_flat_buffer_views_have_storages_of_their_own():
    m = RecordMaterializer()
    staged = [stage_safely(m, r, r.rid) for r in record_batch()]
    records, nbytes = layout(staged)
    flat = torch.empty(nbytes, dtype=torch.uint8)
    fill(staged, records, flat_view(flat))
    result = unpack(records, flat_view(flat), m, {r.rid: r for r in record_batch()})[0][1]
    # One result pickles its own bytes only (not the whole buffer), and torch.save takes its mixed dtypes.
    assert len(pickle.dumps(result.features)) < result.features.numel() * 4 + 2_000 < nbytes
    buffer = io.BytesIO()
    torch.save(result, buffer)
    result.features.fill_(1.0)
    assert result.features.untyped_storage().data_ptr() >= flat.data_ptr()  # still the buffer's memory
    assert flat.sum() > 0


def test_only_selected_tensors_travel():
    big, small = torch.ones(1000), torch.arange(3)
    skeleton, tensors = split({"big": big, "small": small}, lambda t: t.numel() > 100)
    assert len(tensors) == 1 and tensors[0] is big
    back = join(skeleton, [torch.zeros(1000)])
    assert back["big"].sum() == 0 and back["small"].tolist() == [0, 1, 2]  # small came with the pickle
    staged = stage_object("r", {"big": big, "small": small}, lambda t: t is big)
    assert [s.shape for s in staged.specs] == [(1000,)]


def test_tensors_every_rank_holds_are_taken_from_the_receivers_own_request():
    given, moving = torch.arange(5.0), torch.ones(300)
    skeleton, tensors = split({"given": given, "moving": moving}, local={id(given): ("item", 0)})
    assert [t is moving for t in tensors] == [True]
    mine = torch.arange(5.0)  # the receiving rank's own copy
    back = join(skeleton, [torch.zeros(300)], lambda key: mine if key == ("item", 0) else None)
    assert back["given"] is mine and back["moving"].sum() == 0
    with pytest.raises(pickle.UnpicklingError, match="unknown tensor slot"):
        join(skeleton, [torch.zeros(300)])  # no resolver: a local reference cannot be bound

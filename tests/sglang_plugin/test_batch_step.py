"""The per-rank batch step in one process (TP=1 strategy): cache bounds, fallbacks, metrics, TP=1 cost.

The step is generic over the materializer; most tests drive it with the image pipeline on `MMRequest`s
(cheap, shared with the backend), the last ones with upstream's conversion on processor outputs."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from prometheus_client import REGISTRY

from mminputs import ImagePipeline, MaterializedInputs, MMInputError, MMItem, MMMode, MMRequest
from sglang_plugin.config import PluginConfig
from sglang_plugin.hook import BatchStep, SchedulerBindings, batch_step_of, install, uninstall
from sglang_plugin.materializer import ProcessorOutputConversion, ProcessorOutputRequest
from sglang_plugin.metrics import CACHE_ENTRIES, FALLBACK_TOTAL
from testkit.images import image_request, synthetic_frame

TINY = synthetic_frame(16, 16, 1)


def req(rid: str, source: str = TINY) -> SimpleNamespace:
    return SimpleNamespace(rid=rid, mm_inputs=MMRequest(rid, (MMItem.image(source),)))


def tokenized(recv_req):
    return (recv_req,)


def mm_request(rid: str, raw: object) -> MMRequest | str:
    return raw if isinstance(raw, MMRequest) else f"input_type:{type(raw).__name__}"


def make_step(capacity: int = 1000, rank_label: str = "t0") -> BatchStep:
    return BatchStep(
        config=PluginConfig(MMMode.PER_RANK, capacity),
        group=None,
        src_rank=0,
        rank_label=rank_label,
        materializer=ImagePipeline(),
        extract=mm_request,
    )


def gauge(rank_label: str) -> float | None:
    return REGISTRY.get_sample_value(CACHE_ENTRIES, {"rank": rank_label, "mode": "per_rank"})


def fallbacks(rank_label: str, reason: str) -> float:
    return REGISTRY.get_sample_value(FALLBACK_TOTAL, {"rank": rank_label, "reason": reason}) or 0.0


def test_ten_thousand_requests_leave_the_cache_empty():
    step = make_step(rank_label="t10k")
    taken = dropped = 0
    for start in range(0, 10_000, 100):
        batch = [req(f"r{i}") for i in range(start, start + 100)]
        step.prepare(batch, tokenized)
        assert step.cache_size == 100
        for i, r in enumerate(batch):
            if i % 10 == 3:  # aborted before its inputs were used: never taken
                dropped += 1
                continue
            outcome = step.take(r.mm_inputs)
            assert isinstance(outcome, MaterializedInputs) and outcome.rid == r.rid
            taken += 1
        step.finish_batch()
        assert step.cache_size == 0
    assert (taken, dropped) == (9000, 1000)
    assert gauge("t10k") == 0
    assert step.strategy is not None and step.strategy.cache_evictions == 0


def test_entries_are_popped_on_use_and_errors_are_outcomes():
    step = make_step(rank_label="tpop")
    good, bad = req("good"), req("bad", "data:image/png;base64,AAAA")
    step.prepare([good, bad], tokenized)
    assert gauge("tpop") == 2
    assert isinstance(step.take(good.mm_inputs), MaterializedInputs)
    assert step.take(good.mm_inputs) is None  # popped: a second use goes the upstream way
    error = step.take(bad.mm_inputs)
    assert isinstance(error, MMInputError) and error.status == 400
    assert step.take(MMRequest("never", ())) is None
    step.finish_batch()
    assert step.cache_size == 0 and gauge("tpop") == 0


def test_capacity_bounds_each_batch_and_the_rest_falls_back():
    step = make_step(capacity=3, rank_label="tcap")
    batch = [req(f"c{i}") for i in range(5)]
    step.prepare(batch, tokenized)
    assert step.cache_size == 3
    assert [step.take(r.mm_inputs) is not None for r in batch] == [True, True, True, False, False]
    assert fallbacks("tcap", "over_capacity") == 2
    step.finish_batch()


def test_inputs_not_in_the_shared_form_and_repeated_rids_fall_back():
    step = make_step(rank_label="tform")
    foreign = SimpleNamespace(rid="f", mm_inputs=object())  # e.g. sglang's MultimodalProcessorOutput
    first, again = req("same"), req("same")
    step.prepare([foreign, first, again, SimpleNamespace(rid="text", mm_inputs=None)], tokenized)
    assert step.cache_size == 1
    assert step.take(first.mm_inputs) is not None and step.take(again.mm_inputs) is None
    assert fallbacks("tform", "input_type:object") == 1
    assert fallbacks("tform", "repeated_rid") == 1
    step.finish_batch()


def test_a_failed_prepare_leaves_nothing_behind():
    def broken_factory(*args, **kwargs):
        raise RuntimeError("collective failed")

    step = BatchStep(
        config=PluginConfig(MMMode.SHARDED),
        group=None,
        src_rank=0,
        rank_label="tfail",
        materializer=ImagePipeline(),
        extract=mm_request,
        strategy_factory=broken_factory,
    )
    r = req("x")
    with pytest.raises(RuntimeError, match="collective failed"):
        step.prepare([r], tokenized)
    assert step.take(r.mm_inputs) is None


def _processor_output(rid: str):
    """A processor output like the harness tokenizer's (rank_worker.processor_output); needs the harness."""
    here = str(Path(__file__).resolve().parent)
    sys.path.insert(0, here)
    try:
        from rank_worker import processor_output
    finally:
        sys.path.remove(here)
    return processor_output(image_request(rid, 30, 20, 2))


def test_tp1_attaches_nothing_and_runs_upstream(harness_sglang, monkeypatch):
    module = harness_sglang
    group = SimpleNamespace(world_size=1, rank_in_group=0, ranks=[0], cpu_group=None, first_rank=0)
    monkeypatch.setattr(module, "get_dp_tp_group", lambda: group)
    bindings = SchedulerBindings.from_modules(module, sys.modules["sglang.srt.managers.schedule_batch"])
    install(bindings, PluginConfig(MMMode.SHARDED))
    try:
        scheduler = module.Scheduler(SimpleNamespace(enable_broadcast_mm_inputs_process=True), None)
        assert batch_step_of(scheduler) is None
        r = module.TokenizedGenerateReqInput("solo", _processor_output("solo"))
        scheduler.process_input_requests([r])
        assert scheduler.upstream_broadcasts == 1  # upstream's own path, unchanged
        assert type(scheduler.admitted["solo"]).__name__ == "MultimodalInputs"
    finally:
        uninstall(module.Scheduler)


def test_processor_outputs_run_upstreams_conversion_and_odd_inputs_fall_back(harness_sglang):
    batch_module = sys.modules["sglang.srt.managers.schedule_batch"]
    bindings = SchedulerBindings.from_modules(harness_sglang, batch_module)
    step = BatchStep(
        config=PluginConfig(MMMode.PER_RANK),
        group=None,
        src_rank=0,
        rank_label="tpo",
        materializer=ProcessorOutputConversion(bindings.from_processor_output, True),
        extract=bindings.extract,
    )
    good = SimpleNamespace(rid="good", mm_inputs=_processor_output("good"))
    broken = _processor_output("broken")
    broken.mm_items[0].feature = None
    bad = SimpleNamespace(rid="bad", mm_inputs=broken)
    on_device = _processor_output("meta")
    on_device.mm_items[0].feature = on_device.mm_items[0].feature.to("meta")  # stands for a GPU tensor
    odd = SimpleNamespace(rid="meta", mm_inputs=on_device)
    nameless = SimpleNamespace(rid=None, mm_inputs=_processor_output("x"))
    step.prepare([good, bad, odd, nameless], tokenized)
    assert step.cache_size == 2
    want = batch_module.MultimodalInputs.from_processor_output(
        _processor_output("good"), requires_mm_token_modalities=True
    )
    got = step.take(good.mm_inputs)
    assert isinstance(got, batch_module.MultimodalInputs)
    assert got.mm_items[0].hash == want.mm_items[0].hash and got.token_modalities == want.token_modalities
    error = step.take(bad.mm_inputs)
    assert isinstance(error, MMInputError) and error.status == 500 and error.message.startswith("TypeError: ")
    assert step.take(odd.mm_inputs) is None and step.take(nameless.mm_inputs) is None
    assert fallbacks("tpo", "features_not_on_cpu") == 1 and fallbacks("tpo", "no_rid") == 1
    step.finish_batch()
    assert step.cache_size == 0


def test_features_are_the_receivers_own_unless_the_conversion_replaced_them(harness_sglang):
    batch_module = sys.modules["sglang.srt.managers.schedule_batch"]
    convert = batch_module.MultimodalInputs.from_processor_output
    conversion = ProcessorOutputConversion(convert, True)
    raw = _processor_output("two")
    raw.mm_items.append(_processor_output("two").mm_items[0])
    staged = conversion.stage(ProcessorOutputRequest("two", raw))
    # Every rank holds the features already: nothing travels; positions and grids ride in the skeleton.
    assert staged.specs == ()
    mine = _processor_output("two")  # the receiving rank's own copy of the same request
    mine.mm_items.append(_processor_output("two").mm_items[0])
    inputs = conversion.assemble(staged.skeleton, [], ProcessorOutputRequest("two", mine))
    assert [i.feature for i in inputs.mm_items] == [i.feature for i in mine.mm_items]  # the same objects
    assert all(a.feature is b.feature for a, b in zip(inputs.mm_items, mine.mm_items, strict=True))
    assert inputs.mm_items[0].hash is not None and torch.equal(inputs.mrope_positions, raw.mrope_positions)

    def copying(obj, **kwargs):  # like upstream's GPU hashing buffer: features come back as new tensors
        result = convert(obj, **kwargs)
        for item in result.mm_items:
            item.feature = item.feature.clone()
        return result

    staged = ProcessorOutputConversion(copying, True).stage(ProcessorOutputRequest("two", raw))
    assert [s.shape for s in staged.specs] == [tuple(item.feature.shape) for item in raw.mm_items]
    views = [torch.zeros(s.shape, dtype=s.dtype) for s in staged.specs]
    staged.write(views)
    inputs = conversion.assemble(staged.skeleton, views, ProcessorOutputRequest("two", mine))
    assert inputs.mm_items[0].feature is views[0] and torch.equal(views[1], raw.mm_items[1].feature)
    assert conversion.cost(ProcessorOutputRequest("two", raw)) == 1 + sum(
        i.feature.numel() * 4 for i in raw.mm_items
    )


def test_cuda_vmm_feature_transport_attaches_no_step(harness_sglang, monkeypatch):
    # With --mm-feature-transport cuda_vmm upstream converts on every rank before the broadcast path.
    module = harness_sglang
    group = SimpleNamespace(world_size=2, rank_in_group=0, ranks=[0, 1], cpu_group=None, first_rank=0)
    monkeypatch.setattr(module, "get_dp_tp_group", lambda: group)
    sys.modules["sglang.srt.runtime_context"].publish_mm(mm_feature_transport="cuda_vmm")
    install(
        SchedulerBindings.from_modules(module, sys.modules["sglang.srt.managers.schedule_batch"]),
        PluginConfig(MMMode.SHARDED),
    )
    try:
        scheduler = module.Scheduler(SimpleNamespace(enable_broadcast_mm_inputs_process=True), None)
        assert batch_step_of(scheduler) is None
        sys.modules["sglang.srt.runtime_context"].publish_mm(mm_feature_transport=None)
        assert batch_step_of(module.Scheduler(SimpleNamespace(enable_broadcast_mm_inputs_process=True), None))
    finally:
        uninstall(module.Scheduler)


def test_features_in_lists_are_bound_to_the_receivers_own_too():
    def raw() -> SimpleNamespace:
        frames = [torch.full((4, 3), float(k)) for k in range(2)]
        return SimpleNamespace(mm_items=[SimpleNamespace(feature=frames, precomputed_embeddings=None)])

    def convert(obj, **kwargs):  # keeps the items, as upstream's conversion does
        return SimpleNamespace(mm_items=list(obj.mm_items), requires=kwargs["requires_mm_token_modalities"])

    conversion = ProcessorOutputConversion(convert, False)
    staged = conversion.stage(ProcessorOutputRequest("l", raw()))
    assert staged.specs == ()
    mine = raw()
    inputs = conversion.assemble(staged.skeleton, [], ProcessorOutputRequest("l", mine))
    assert all(a is b for a, b in zip(inputs.mm_items[0].feature, mine.mm_items[0].feature, strict=True))
    assert inputs.requires is False

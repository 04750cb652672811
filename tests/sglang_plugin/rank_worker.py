"""One scheduler rank for the plugin's multi-process tests (run as a script, PYTHONPATH = the harness).

Joins a real gloo group, loads plugins the way sglang does (entry points, then the Scheduler), feeds the
scenario's batches to `process_input_requests`, and saves what the scheduler admitted or aborted per request
with `torch.save`. Every rank builds the same batches from the scenario name alone.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import torch
import torch.distributed as dist

from mminputs import MaterializedInputs, MMLimits, MMRequest, materialize
from testkit.images import image_request, video_request

IMAGE_TOKEN, VIDEO_TOKEN = 151655, 151656


def processor_output(request: MMRequest) -> Any:
    """What sglang's tokenizer sends the scheduler for `request` (a `MultimodalProcessorOutput`): one item per
    image or video with its normalized features and grid, the prompt's token ids with placeholder runs, and
    rope positions. The project's image pipeline stands in for the model's HF processor."""
    from sglang.srt.managers.schedule_batch import Modality, MultimodalDataItem, MultimodalProcessorOutput

    input_ids = [1, 2, 3]
    items = []
    for item in request.items:
        out = materialize(MMRequest(request.rid, (item,)), MMLimits())
        assert isinstance(out, MaterializedInputs), out
        image = item.modality == "image"
        start = len(input_ids)
        input_ids += [IMAGE_TOKEN if image else VIDEO_TOKEN] * out.num_mm_tokens
        items.append(
            MultimodalDataItem(
                modality=Modality.IMAGE if image else Modality.VIDEO,
                feature=out.pixel_values if image else out.pixel_values_videos,
                offsets=[(start, len(input_ids) - 1)],
                model_specific_data={
                    "image_grid_thw" if image else "video_grid_thw": torch.tensor(
                        out.image_grid_thw if image else out.video_grid_thw
                    )
                },
            )
        )
    input_ids.append(4)
    positions = torch.arange(len(input_ids)).expand(3, -1).clone()
    return MultimodalProcessorOutput(
        mm_items=items,
        input_ids=input_ids,
        im_token_id=IMAGE_TOKEN,
        video_token_id=VIDEO_TOKEN,
        mrope_positions=positions,
        mrope_position_delta=torch.tensor([[0]]),
    )


def broken_output(rid: str, problem: str) -> Any:
    """A processor output whose conversion fails on the scheduler: no feature (hashing fails), or placeholder
    offsets beyond the prompt (the token modality map refuses them)."""
    output = processor_output(image_request(rid, 32, 32, 8))
    item = output.mm_items[0]
    if problem == "no-feature":
        item.feature = None
    else:
        item.offsets = [(len(output.input_ids), len(output.input_ids) + 3)]
    return output


def scenario_batches(name: str) -> list[list[object]]:
    from sglang.srt.managers.io_struct import (
        BatchTokenizedGenerateReqInput,
        TokenizedEmbeddingReqInput,
        TokenizedGenerateReqInput,
    )

    def gen(rid: str, request: MMRequest | None, **kw) -> TokenizedGenerateReqInput:
        return TokenizedGenerateReqInput(rid, None if request is None else processor_output(request), **kw)

    if name == "mixed":
        first: list[object] = [
            gen("r-img-a", image_request("r-img-a", 64, 48, 1)),
            TokenizedGenerateReqInput("r-no-feature", broken_output("r-no-feature", "no-feature")),
            gen("r-vid", video_request("r-vid", 48, 32, 4, 2)),
            gen("r-text", None),
            gen("r-rejected", image_request("r-rejected", 40, 40, 3), rejected_before_mm=True),
            BatchTokenizedGenerateReqInput(
                [gen("r-batch-1", image_request("r-batch-1", 90, 30, 4)), gen("r-batch-2", None)]
            ),
            TokenizedEmbeddingReqInput("r-embed", processor_output(image_request("r-embed", 33, 77, 5))),
            TokenizedGenerateReqInput("r-bad-offsets", broken_output("r-bad-offsets", "offsets")),
            gen("r-img-b", image_request("r-img-b", 120, 90, 6)),
        ]
        second: list[object] = [gen("r-after-bad", image_request("r-after-bad", 56, 56, 7))]
        return [first, [], second]
    if name.startswith("many-"):
        total = int(name.split("-", 1)[1])
        batches: list[list[object]] = []
        for start in range(0, total, 50):
            batch: list[object] = []
            for i in range(start, min(start + 50, total)):
                rid = f"m-{i}"
                if i % 13 == 0:
                    batch.append(TokenizedGenerateReqInput(rid, broken_output(rid, "no-feature")))
                else:
                    batch.append(
                        gen(rid, image_request(rid, 24 + i % 5, 20, i), rejected_before_mm=i % 7 == 0)
                    )
            batches.append(batch)
        return batches
    raise SystemExit(f"unknown scenario {name!r}")


def summary(inputs: Any) -> dict | None:
    """Admitted `MultimodalInputs` as plain values (loadable without the harness), tensors kept as tensors."""
    if inputs is None:
        return None
    items = [
        {
            "modality": item.modality.name,
            "hash": item.hash,
            "pad_value": item.pad_value,
            "offsets": item.offsets,
            "feature": item.feature,
            "model_specific_data": dict(item.model_specific_data),
        }
        for item in inputs.mm_items
    ]
    fields = ("padded_input_ids", "token_modalities", "im_token_id", "video_token_id")
    tensors = ("mrope_positions", "mrope_position_delta")
    return {
        "type": type(inputs).__name__,
        "items": items,
        **{name: getattr(inputs, name) for name in fields + tensors},
    }


def fallback_counts(rank_label: str) -> dict[str, float]:
    from prometheus_client import REGISTRY

    from sglang_plugin.metrics import FALLBACK_TOTAL

    counts: dict[str, float] = {}
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            if sample.name == FALLBACK_TOTAL and sample.labels.get("rank") == rank_label:
                counts[sample.labels["reason"]] = sample.value
    return counts


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--world-size", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--groups", required=True, help="TP groups, e.g. '0,1' or '0;1,2'")
    parser.add_argument("--scenario", required=True)
    parser.add_argument("--broadcast-flag", type=int, default=1)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{args.port}",
        rank=args.rank,
        world_size=args.world_size,
        timeout=timedelta(seconds=60),
    )
    from sglang.srt.distributed.parallel_state import init_dp_tp_groups

    groups = [[int(r) for r in g.split(",")] for g in args.groups.split(";")]
    init_dp_tp_groups(groups)

    import sglang.srt.managers.scheduler as scheduler_module

    original = scheduler_module.Scheduler.__dict__["_process_and_broadcast_mm_inputs"]
    scheduler = scheduler_module.run_scheduler_process(
        SimpleNamespace(enable_broadcast_mm_inputs_process=bool(args.broadcast_flag)), None
    )
    from sglang_plugin.hook import batch_step_of, is_installed

    step = batch_step_of(scheduler)
    cache_after_batches = []
    raws: dict[str, Any] = {}
    for batch in scenario_batches(args.scenario):
        for recv in batch:
            raws.update({req.rid: req.mm_inputs for req in getattr(recv, "batch", [recv])})
        scheduler.process_input_requests(batch)
        cache_after_batches.append(0 if step is None else step.cache_size)
    # Whether each admitted request's features are this rank's own received tensors (not copies).
    own_features = {
        rid: all(any(item.feature is mine.feature for mine in raws[rid].mm_items) for item in inputs.mm_items)
        for rid, inputs in scheduler.admitted.items()
        if inputs is not None
    }
    strategy = None if step is None else step.strategy
    result = {
        "rank": args.rank,
        "hooked": is_installed(scheduler_module.Scheduler),
        "replaced": scheduler_module.Scheduler.__dict__["_process_and_broadcast_mm_inputs"] is not original,
        "step": step is not None,
        "strategy_class": None if strategy is None else type(strategy).__name__,
        "strategy_module": None if strategy is None else type(strategy).__module__,
        "strategy_mode": None if strategy is None else strategy.mode.value,
        "transport": None if strategy is None else strategy.transport_name,
        "source_rank": None if strategy is None else strategy.info.source_rank,
        "admitted": {rid: summary(inputs) for rid, inputs in scheduler.admitted.items()},
        "own_features": own_features,
        "admitted_types": sorted({type(x).__name__ for x in scheduler.admitted.values() if x is not None}),
        "fallbacks": fallback_counts(str(scheduler.dp_tp_group.rank_in_group)),
        "aborted": scheduler.aborted,
        "rejected": scheduler.rejected,
        "upstream_broadcasts": scheduler.upstream_broadcasts,
        "cache_after_batches": cache_after_batches,
    }
    torch.save(result, args.out)
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    try:
        code = main()
    except BaseException:
        # Print the failure and leave at once: a normal exit would first wait on the gloo store's teardown.
        traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
    sys.exit(code)

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

import torch
import torch.distributed as dist

from mminputs import MMItem, MMRequest
from mminputs.workloads import image_request, synthetic_frame, video_request

BAD_BASE64 = "data:image/png;base64,bm90IGFuIGltYWdl"  # decodes to "not an image"


def scenario_batches(name: str) -> list[list[object]]:
    from sglang.srt.managers.io_struct import (
        BatchTokenizedGenerateReqInput,
        TokenizedEmbeddingReqInput,
        TokenizedGenerateReqInput,
    )

    gen = TokenizedGenerateReqInput
    if name == "mixed":
        too_many_items = MMRequest(
            "r-413", tuple(MMItem.image(synthetic_frame(16, 16, 9)) for _ in range(17))
        )
        first: list[object] = [
            gen("r-img-a", image_request("r-img-a", 64, 48, 1)),
            gen("r-bad", MMRequest("r-bad", (MMItem.image(BAD_BASE64),))),
            gen("r-vid", video_request("r-vid", 48, 32, 4, 2)),
            gen("r-text", None),
            gen("r-rejected", image_request("r-rejected", 40, 40, 3), rejected_before_mm=True),
            BatchTokenizedGenerateReqInput(
                [gen("r-batch-1", image_request("r-batch-1", 90, 30, 4)), gen("r-batch-2", None)]
            ),
            TokenizedEmbeddingReqInput("r-embed", image_request("r-embed", 33, 77, 5)),
            gen("r-413", too_many_items),
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
                    batch.append(gen(rid, MMRequest(rid, (MMItem.image(BAD_BASE64),))))
                else:
                    batch.append(
                        gen(rid, image_request(rid, 24 + i % 5, 20, i), rejected_before_mm=i % 7 == 0)
                    )
            batches.append(batch)
        return batches
    raise SystemExit(f"unknown scenario {name!r}")


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
    for batch in scenario_batches(args.scenario):
        scheduler.process_input_requests(batch)
        cache_after_batches.append(0 if step is None else step.cache_size)
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
        "admitted": scheduler.admitted,
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

"""The plugin hooking a Scheduler class in real multi-process gloo groups.

Each rank is a separate process running the harness sglang tree (same qualified names and signatures as
sglang 0.5.23, checked in test_manifest.py): plugins are loaded through the `sglang.srt.plugins` entry point
as sglang does, then batches of tokenized requests whose `mm_inputs` are `MultimodalProcessorOutput`s (what
sglang's tokenizer sends) go through `Scheduler.process_input_requests`. What the scheduler admitted or
aborted must be identical on every rank, across every mode, to upstream's per-request path, and to a
single-process `from_processor_output`, whose features are the image pipeline's own.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from infra.net import free_port
from mminputs import MaterializedInputs, MMLimits, MMMode, materialize
from testkit.images import image_request

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
WORKER = HERE / "rank_worker.py"
RANK_TIMEOUT_S = 180

sys.path.insert(0, str(HERE))
from rank_worker import processor_output, scenario_batches, summary  # noqa: E402

sys.path.remove(str(HERE))


def run_ranks(
    tmp_path: Path,
    *,
    mode: str,
    scenario: str,
    groups: str = "0,1",
    world_size: int = 2,
    broadcast_flag: int = 1,
    extra_env: dict[str, str] | None = None,
) -> list[dict]:
    """Start one process per rank, wait for all, return their results; kill every rank on any failure."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE / "harness"), str(REPO)]),
        "SGLANG_MM_INPUT_MODE": mode,
        "OMP_NUM_THREADS": "1",
        **(extra_env or {}),
    }
    procs, outs = [], []
    try:
        for rank in range(world_size):
            out = tmp_path / f"{mode}-{scenario}-{rank}.pt"
            outs.append(out)
            cmd = [sys.executable, str(WORKER), "--rank", str(rank), "--world-size", str(world_size)]
            cmd += ["--port", str(port), "--groups", groups, "--scenario", scenario, "--out", str(out)]
            cmd += ["--broadcast-flag", str(broadcast_flag)]
            procs.append(
                subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            )
        logs = [p.communicate(timeout=RANK_TIMEOUT_S)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    failed = [
        (i, p.returncode, log) for i, (p, log) in enumerate(zip(procs, logs, strict=True)) if p.returncode
    ]
    if failed:
        return [{"failed": failed}]
    return [torch.load(out, weights_only=False) for out in outs]


def _normalized(message: str) -> str:
    # Error texts may carry an object address, which differs between processes.
    return re.sub(r" at 0x[0-9a-f]+", " at 0x?", message)


def reference(scenario: str) -> dict[str, tuple[str, object]]:
    """Per rid, what a single process gets: ("rejected", None), ("admitted", summary or None) or
    ("aborted", "<ExceptionType>: <message>") from the harness `from_processor_output` (model config as the
    harness scheduler's: token modalities required)."""
    sys.path.insert(0, str(HERE / "harness"))
    try:
        from sglang.srt.managers.schedule_batch import MultimodalInputs

        found: dict[str, tuple[str, object]] = {}
        for batch in scenario_batches(scenario):
            for recv in batch:
                for req in getattr(recv, "batch", [recv]):
                    if req.rejected_before_mm:
                        found[req.rid] = ("rejected", None)
                    elif req.mm_inputs is None:
                        found[req.rid] = ("admitted", None)
                    else:
                        try:
                            inputs = MultimodalInputs.from_processor_output(
                                req.mm_inputs, requires_mm_token_modalities=True
                            )
                            found[req.rid] = ("admitted", summary(inputs))
                        except Exception as error:  # noqa: BLE001 - the expected abort
                            found[req.rid] = ("aborted", f"{type(error).__name__}: {error}")
        return found
    finally:
        sys.path.remove(str(HERE / "harness"))
        for name in [m for m in sys.modules if m == "sglang" or m.startswith("sglang.")]:
            del sys.modules[name]


def same_value(a: object, b: object) -> bool:
    """Equality where tensors compare bitwise (dtype, shape, bytes) and containers element by element."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and torch.equal(a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8))
        )
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def assert_matches_single_process(result: dict, scenario: str) -> None:
    """Admitted inputs bitwise equal to a single-process conversion; failed conversions abort the request."""
    for rid, (kind, want) in reference(scenario).items():
        if kind == "rejected":
            assert rid in result["rejected"], rid
        elif kind == "aborted":
            assert rid not in result["admitted"], f"{rid} should have been aborted"
            assert isinstance(want, str) and _normalized(want) in _normalized(result["aborted"][rid]), rid
        else:
            assert same_value(result["admitted"][rid], want), rid


def assert_ranks_agree(results: list[dict]) -> None:
    first = results[0]
    for other in results[1:]:
        assert sorted(other["admitted"]) == sorted(first["admitted"])
        for rid, inputs in first["admitted"].items():
            assert same_value(inputs, other["admitted"][rid]), rid
        assert {k: _normalized(v) for k, v in other["aborted"].items()} == {
            k: _normalized(v) for k, v in first["aborted"].items()
        }
        assert other["rejected"] == first["rejected"]


def test_features_are_the_image_pipelines_own():
    # The harness tokenizer's features are single-process materialization of the same images, so the inputs
    # compared below are bitwise the image pipeline's.
    sys.path.insert(0, str(HERE / "harness"))
    try:
        request = image_request("r", 64, 48, 1)
        output = processor_output(request)
        want = materialize(request, MMLimits())
        assert isinstance(want, MaterializedInputs)
        assert same_value(output.mm_items[0].feature, want.pixel_values)
        assert output.mm_items[0].model_specific_data["image_grid_thw"].tolist() == list(
            map(list, want.image_grid_thw)
        )
    finally:
        sys.path.remove(str(HERE / "harness"))
        for name in [m for m in sys.modules if m == "sglang" or m.startswith("sglang.")]:
            del sys.modules[name]


PLUGIN_MODES = [m.value for m in MMMode]


@pytest.fixture(scope="module")
def mixed_runs(tmp_path_factory) -> dict[str, list[dict]]:
    """The mixed scenario once per plugin mode, and once with the plugin off (upstream per-request path)."""
    tmp = tmp_path_factory.mktemp("mixed")
    return {mode: run_ranks(tmp, mode=mode, scenario="mixed") for mode in ["off", *PLUGIN_MODES]}


@pytest.mark.parametrize("mode", PLUGIN_MODES)
def test_hook_replaces_the_per_request_path_with_the_shared_strategy(mixed_runs, mode):
    results = mixed_runs[mode]
    assert "failed" not in results[0], results[0]
    for result in results:
        assert result["hooked"] and result["replaced"] and result["step"]
        assert result["strategy_module"] == "mminputs.strategies"
        assert result["strategy_mode"] == mode
        assert result["source_rank"] == 0
        # Every multimodal request went through the batch step: upstream's broadcast never ran, and no
        # MultimodalProcessorOutput was counted as taking upstream's path.
        assert result["upstream_broadcasts"] == 0
        assert result["fallbacks"] == {}
        assert result["admitted_types"] == ["MultimodalInputs"]
        # No feature bytes moved: every rank's inputs hold the features it received with the batch; only
        # per_request (upstream's pickled broadcast, as a mode) hands the other rank copies.
        own = list(result["own_features"].values())
        assert own and (all(own) if mode != "per_request" or result["rank"] == 0 else not any(own))
        assert result["cache_after_batches"] == [0, 0, 0]
    if mode in ("batched", "sharded"):
        assert {r["transport"] for r in results} == {"shm"}
    if mode == "sharded_tensor":
        assert {r["transport"] for r in results} == {"tensor"}


@pytest.mark.parametrize("mode", ["off", *PLUGIN_MODES])
def test_results_identical_across_ranks_modes_and_single_process(mixed_runs, mode):
    results = mixed_runs[mode]
    assert "failed" not in results[0], results[0]
    assert_ranks_agree(results)
    assert_matches_single_process(results[0], "mixed")
    # Same admitted set and aborted set as upstream's own per-request path.
    upstream = mixed_runs["off"][0]
    assert sorted(results[0]["admitted"]) == sorted(upstream["admitted"])
    assert sorted(results[0]["aborted"]) == sorted(upstream["aborted"]) == ["r-bad-offsets", "r-no-feature"]
    for rid in upstream["admitted"]:
        assert same_value(results[0]["admitted"][rid], upstream["admitted"][rid]), rid
    if mode != "off":
        for message in results[0]["aborted"].values():
            assert message.startswith("Multimodal input processing failed (status 500): "), message
    assert results[0]["admitted"]["r-after-bad"] is not None  # the next good request succeeds


def test_plugin_off_leaves_upstream_untouched(mixed_runs):
    for result in mixed_runs["off"]:
        assert not result["hooked"] and not result["replaced"] and not result["step"]
        assert result["upstream_broadcasts"] == 8  # one per multimodal request that reached the path
    # Upstream pickles the features to the other rank: its inputs hold copies.
    entry, other = mixed_runs["off"]
    # the same admitted multimodal requests on both ranks (none would make both checks below vacuous)
    assert entry["own_features"] and entry["own_features"].keys() == other["own_features"].keys()
    assert all(entry["own_features"].values()) and not any(other["own_features"].values())


def test_source_rank_is_the_first_rank_of_the_group_and_tp1_pays_nothing(tmp_path):
    # Global rank 0 is a TP=1 group of its own (like another DP-attention group or PP stage); ranks 1 and 2
    # form a TP=2 group whose source must be global rank 1.
    results = run_ranks(tmp_path, mode="batched", scenario="mixed", groups="0;1,2", world_size=3)
    assert "failed" not in results[0], results[0]
    solo, *pair = results
    assert solo["hooked"] and not solo["step"] and solo["upstream_broadcasts"] == 8
    assert [r["source_rank"] for r in pair] == [1, 1]
    assert all(r["upstream_broadcasts"] == 0 for r in pair)
    assert_ranks_agree(pair)
    for result in results:
        assert_matches_single_process(result, "mixed")


def test_small_cache_falls_back_to_upstream_in_step(tmp_path):
    # Capacity 3: the first three multimodal requests of a batch take the batch step, the rest take
    # upstream's per-request collective path, in the same order on every rank.
    results = run_ranks(
        tmp_path, mode="sharded", scenario="mixed", extra_env={"SGLANG_MM_INPUT_CACHE_SIZE": "3"}
    )
    assert "failed" not in results[0], results[0]
    assert [r["upstream_broadcasts"] for r in results] == [4, 4]
    assert [r["fallbacks"] for r in results] == [{"over_capacity": 5.0}] * 2
    assert_ranks_agree(results)
    assert_matches_single_process(results[0], "mixed")


def test_missing_broadcast_flag_refuses_to_start(tmp_path):
    results = run_ranks(tmp_path, mode="sharded", scenario="mixed", broadcast_flag=0)
    failed = results[0].get("failed")
    assert failed and len(failed) == 2
    for _rank, code, log in failed:
        assert code != 0 and "--enable-broadcast-mm-inputs-process" in log


def _dev_shm() -> set[str]:
    """Names in /dev/shm, less Python multiprocessing semaphores (sem.mp-*) of any concurrent process."""
    names = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    return {n for n in names if not n.startswith("sem.mp-")}


def test_many_requests_leave_the_cache_empty_and_no_shm(tmp_path):
    shm_before = _dev_shm()
    results = run_ranks(tmp_path, mode="sharded", scenario="many-500")
    assert "failed" not in results[0], results[0]
    assert_ranks_agree(results)
    for result in results:
        assert set(result["cache_after_batches"]) == {0}
        assert result["upstream_broadcasts"] == 0 and result["fallbacks"] == {}
        assert len(result["admitted"]) + len(result["aborted"]) + len(result["rejected"]) == 500
        assert len(result["aborted"]) == len(range(0, 500, 13))
    assert_matches_single_process(results[1], "many-500")
    shm_after = _dev_shm()
    assert shm_after <= shm_before

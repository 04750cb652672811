"""The plugin hooking a Scheduler class in real multi-process gloo groups.

Each rank is a separate process running the harness sglang tree (same qualified names and signatures as
sglang 0.5.23, checked in test_manifest.py): plugins are loaded through the `sglang.srt.plugins` entry point
as sglang does, then batches go through `Scheduler.process_input_requests`. What the scheduler admitted or
aborted must be identical on every rank, across every mode, to upstream's per-request path, and to
single-process materialization.
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
from mminputs import MaterializedInputs, MMInputError, MMLimits, MMMode, MMRequest, materialize

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
WORKER = HERE / "rank_worker.py"
RANK_TIMEOUT_S = 180

sys.path.insert(0, str(HERE))
from rank_worker import scenario_batches  # noqa: E402

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
    # PIL's error text carries an object address, which differs between processes.
    return re.sub(r" at 0x[0-9a-f]+", " at 0x?", message)


def _requests(scenario: str) -> dict[str, tuple[object, bool]]:
    found: dict[str, tuple[object, bool]] = {}
    for batch in scenario_batches_harnessless(scenario):
        for rid, raw, rejected in batch:
            found[rid] = (raw, rejected)
    return found


def scenario_batches_harnessless(scenario: str) -> list[list[tuple[str, object, bool]]]:
    """The scenario's (rid, raw inputs, rejected) triples, read through the harness request types."""
    sys.path.insert(0, str(HERE / "harness"))
    try:
        out: list[list[tuple[str, object, bool]]] = []
        for batch in scenario_batches(scenario):
            rows: list[tuple[str, object, bool]] = []
            for recv in batch:
                for req in getattr(recv, "batch", [recv]):
                    rows.append((req.rid, req.mm_inputs, req.rejected_before_mm))
            out.append(rows)
        return out
    finally:
        sys.path.remove(str(HERE / "harness"))
        for name in [m for m in sys.modules if m == "sglang" or m.startswith("sglang.")]:
            del sys.modules[name]


def assert_matches_single_process(result: dict, scenario: str) -> None:
    """Admitted inputs are bitwise those of single-process materialization; errors abort the request."""
    limits = MMLimits()
    for rid, (raw, rejected) in _requests(scenario).items():
        if rejected:
            assert rid in result["rejected"], rid
            continue
        if raw is None:
            assert result["admitted"][rid] is None
            continue
        assert isinstance(raw, MMRequest)
        expected = materialize(raw, limits)
        if isinstance(expected, MMInputError):
            assert rid not in result["admitted"], f"{rid} should have been aborted"
            assert f"status {expected.status}" in result["aborted"][rid]
            assert _normalized(expected.message) in _normalized(result["aborted"][rid])
        else:
            got = result["admitted"][rid]
            assert isinstance(got, MaterializedInputs) and got.same_as(expected), rid


def assert_ranks_agree(results: list[dict]) -> None:
    first = results[0]
    for other in results[1:]:
        assert sorted(other["admitted"]) == sorted(first["admitted"])
        for rid, inputs in first["admitted"].items():
            assert (inputs is None and other["admitted"][rid] is None) or inputs.same_as(
                other["admitted"][rid]
            )
        assert {k: _normalized(v) for k, v in other["aborted"].items()} == {
            k: _normalized(v) for k, v in first["aborted"].items()
        }
        assert other["rejected"] == first["rejected"]


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
        # Every multimodal request went through the batch step: upstream's broadcast never ran.
        assert result["upstream_broadcasts"] == 0
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
    assert sorted(results[0]["aborted"]) == sorted(upstream["aborted"]) == ["r-413", "r-bad"]
    assert results[0]["admitted"]["r-after-bad"] is not None  # the next good request succeeds


def test_plugin_off_leaves_upstream_untouched(mixed_runs):
    for result in mixed_runs["off"]:
        assert not result["hooked"] and not result["replaced"] and not result["step"]
        assert result["upstream_broadcasts"] == 8  # one per multimodal request that reached the path


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
    assert_ranks_agree(results)
    assert_matches_single_process(results[0], "mixed")


def test_missing_broadcast_flag_refuses_to_start(tmp_path):
    results = run_ranks(tmp_path, mode="sharded", scenario="mixed", broadcast_flag=0)
    failed = results[0].get("failed")
    assert failed and len(failed) == 2
    for _rank, code, log in failed:
        assert code != 0 and "--enable-broadcast-mm-inputs-process" in log


def test_many_requests_leave_the_cache_empty_and_no_shm(tmp_path):
    shm_before = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    results = run_ranks(tmp_path, mode="sharded", scenario="many-500")
    assert "failed" not in results[0], results[0]
    assert_ranks_agree(results)
    for result in results:
        assert set(result["cache_after_batches"]) == {0}
        assert result["upstream_broadcasts"] == 0
        assert len(result["admitted"]) + len(result["aborted"]) + len(result["rejected"]) == 500
        assert len(result["aborted"]) == len(range(0, 500, 13))
    assert_matches_single_process(results[1], "many-500")
    shm_after = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    assert shm_after <= shm_before

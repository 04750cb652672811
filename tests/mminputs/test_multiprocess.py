"""The strategies in real gloo groups of spawned processes (TP=2 on this machine)."""

from __future__ import annotations

import os
import time

import pytest

from mminputs import MMMode
from testkit.gloo_group import run_group, start_group
from testkit.images import synthetic_frame
from testkit.mm_scenarios import mixed_batch

pytestmark = pytest.mark.integration

ALL_MODES = [m.value for m in MMMode]


def _dev_shm() -> set[str]:
    """Names in /dev/shm, less the test harness's own multiprocessing queue semaphores (sem.mp-*)."""
    names = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    return {n for n in names if not n.startswith("sem.mp-")}


@pytest.fixture
def image_file(tmp_path):
    import base64

    path = tmp_path / "frame.jpg"
    path.write_bytes(base64.b64decode(synthetic_frame(90, 60, 77).split(",", 1)[1]))
    return str(path)


def test_every_mode_equals_single_process_materialization_bitwise(image_file):
    from testkit.mm_scenarios import scenario_modes_match_reference

    expected = [status for _, status in mixed_batch(image_file)]
    reports = run_group(scenario_modes_match_reference, 2, image_file, ALL_MODES, timeout_s=180)
    for rank, report in reports.items():
        for mode in ALL_MODES:
            got = report[mode]
            assert all(got["equal"]), f"rank {rank} {mode}: differs from reference at {got['equal']}"
            assert got["status"] == expected, f"rank {rank} {mode}"
            assert got["cache"] == 0
    transports = {mode: reports[0][mode]["transport"] for mode in ALL_MODES}
    assert transports == {
        "per_rank": "none",
        "per_request": "pickle",
        "batched": "shm",
        "sharded": "shm",
        "sharded_tensor": "tensor",
    }


def test_in_place_writes_on_one_rank_do_not_reach_its_peers():
    from testkit.mm_scenarios import scenario_writes_stay_private

    reports = run_group(
        scenario_writes_stay_private, 2, ["batched", "sharded", "sharded_tensor"], timeout_s=120
    )
    for mode, equal in reports[0].items():
        assert equal == [False, False, False], f"rank 0 {mode}: its own writes must show"
    for mode, equal in reports[1].items():
        assert equal == [True, True, True], f"rank 1 {mode}: saw rank 0's writes"


def test_long_mixed_stream_keeps_group_in_step():
    from testkit.mm_scenarios import scenario_mixed_stream

    reports = run_group(scenario_mixed_stream, 2, ALL_MODES, 60, 1234, timeout_s=240)
    assert reports[0] == reports[1], "ranks disagree"
    for mode, counts in reports[0].items():
        assert counts["mismatch"] == 0, mode
        assert counts["ok"] > 100 and counts["error"] > 40, (mode, counts)
        assert counts["final_cache"] == 0, mode
    # Same seed, same stream: every mode saw the same requests and the same verdicts.
    assert len({(c["ok"], c["error"]) for c in reports[0].values()}) == 1


@pytest.mark.parametrize("mode", ["sharded", "batched"])
def test_ten_thousand_requests_leave_cache_and_shared_memory_empty(mode):
    from testkit.mm_scenarios import scenario_many_requests

    before = _dev_shm()
    reports = run_group(scenario_many_requests, 2, mode, 10_000, 50, timeout_s=300)
    for rank, report in reports.items():
        assert report["final_cache"] == 0, rank
        assert 0 < report["max_cache"] <= 50, rank
        # Bounded while running (the input segment and a few pooled outputs, a leak would be hundreds),
        # nothing once closed.
        assert report["max_state"]["fds"] <= 12, report
        assert report["after_close"] == {"fds": 0, "maps": 0}, report
    assert _dev_shm() - before == set()


@pytest.mark.parametrize(("mode", "victim"), [("sharded", 0), ("sharded", 1), ("batched", 0), ("batched", 1)])
def test_sigkill_of_a_rank_leaves_no_segment_and_no_hang(mode, victim, tmp_path):
    from testkit.mm_scenarios import scenario_until_killed

    before = _dev_shm()
    with start_group(scenario_until_killed, 2, mode, str(tmp_path)) as group:
        deadline = time.monotonic() + 120
        while not all((tmp_path / f"rank{r}.ready").exists() for r in range(2)):
            assert time.monotonic() < deadline, "ranks never got going"
            time.sleep(0.1)
        group.kill(victim)
        survivor = 1 - victim
        report = group.wait(90, ranks=[survivor])[survivor]
    assert report["error"], "the survivor should see its peer's death as an error"
    assert report["batches"] >= 3
    assert report["after_close"] == {"fds": 0, "maps": 0}, report
    assert _dev_shm() - before == set()


def test_other_materializers_take_every_mode_and_transport(image_file):
    # The strategies are generic over what they materialize: records of mixed-dtype tensors (the sglang
    # plugin's shape of result) and the image pipeline without its finer split (whole requests through shm).
    from testkit.mm_scenarios import scenario_generic_materializers

    reports = run_group(scenario_generic_materializers, 2, image_file, ALL_MODES, timeout_s=180)
    expected_images = [status for _, status in mixed_batch(image_file)]
    for rank, report in reports.items():
        for mode in ALL_MODES:
            got = report[mode]
            assert all(got["records"]), f"rank {rank} {mode}: records differ at {got['records']}"
            assert all(got["images"]), f"rank {rank} {mode}: images differ at {got['images']}"
            assert got["status"] == [200, 500, 200, 413, 200, 200], f"rank {rank} {mode}"
            assert got["cache"] == 0
            # A tensor every rank holds does not travel, except in upstream's pickled per-request broadcast.
            assert got["given_is_own"] == (mode != "per_request" or rank == 0), f"rank {rank} {mode}"
    assert reports[0]["sharded"]["transport"] == ("shm", "shm")
    assert reports[0]["batched"]["transport"] == ("shm", "shm")
    assert reports[0]["sharded_tensor"]["transport"] == ("tensor", "tensor")
    assert expected_images.count(200) > 0

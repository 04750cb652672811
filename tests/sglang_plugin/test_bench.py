"""The plugin benchmark's smallest run: real ranks, every mode, every rank and mode agreeing."""

from __future__ import annotations

import json

import pytest

from bench import plugin as bench

pytestmark = pytest.mark.integration


def test_smallest_benchmark_run_agrees_across_ranks_and_modes(tmp_path, capsys):
    code = bench.main(
        ["--workloads", "img480p", "--batches", "1", "--reps", "1", "--warmup", "0", "--out", str(tmp_path)]
    )
    assert code == 0
    [run] = list(tmp_path.iterdir())
    rows = json.loads((run / "results.json").read_text())
    assert [r["mode"] for r in rows] == bench.ALL_MODES
    assert all(r["ranks_agree"] and r["wall_s"] > 0 for r in rows)
    assert {r["mode"]: r["transport"] for r in rows}["sharded"] == "shm"
    assert "| 640x480 image | 1 | per_request | pickle |" in capsys.readouterr().out


def test_bad_arguments_are_usage_errors(capsys):
    assert bench.main(["--workloads", "img4k"]) == 2
    assert "unknown workload" in capsys.readouterr().err
    assert bench.main(["--modes", "sharded"]) == 2

"""bench.serving: judging a rate, the highest sustainable rate, the ladder's schedule, metric parsing;
and one tiny real sweep (integration)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import serving
from bench.serving import Criteria, RateStats, Sample, highest_sustainable, judge, rate_stats
from loadtest.schedule import Schedule


def _record(
    seq: int, e2e_ms: float, *, ok: bool = True, kind: str | None = None, lag_ms: float = 1.0
) -> dict:
    return {
        "seq": seq, "ok": ok, "error_kind": kind, "e2e_ms": e2e_ms, "ttft_ms": e2e_ms / 4 if ok else None,
        "sent_at": 1000.0 + seq * 0.1, "scheduled_at": 1000.0 + seq * 0.1, "lag_ms": lag_ms, "late": False,
    }  # fmt: skip


def _stats(**overrides: Any) -> RateStats:
    base: dict[str, Any] = dict(
        offered_rps=4.0, scheduled=100, completed=100, ok=100, failed=0, unfinished=0, error_rate=0.0,
        sent_rps=4.0, target_rps=4.0, goodput_rps=4.0, e2e_p50_ms=200.0, e2e_p99_ms=500.0,
        e2e_p99_answered_ms=500.0, ttft_p50_ms=50.0, ttft_p99_ms=90.0, lag_p99_ms=2.0, late=0,
    )  # fmt: skip
    base.update(overrides)
    return RateStats(**base)


def test_judge_passes_within_every_bound():
    assert judge(_stats(), Criteria()) == (True, [])


@pytest.mark.parametrize(
    ("overrides", "dropped", "reason"),
    [
        ({"e2e_p99_ms": 601.0}, 0, "P99 e2e 601 ms > 600 ms"),
        ({"e2e_p99_ms": None}, 0, "P99 e2e no data"),
        ({"e2e_p99_ms": serving.SENTINEL_MS, "unfinished": 3}, 0, "3 unanswered"),
        ({"error_rate": 0.001}, 0, "errors 0.10% >= 0.10%"),
        ({"error_rate": None}, 0, "errors no data"),
        ({}, 2, "generator dropped 2 arrivals"),
        ({"lag_p99_ms": 25.0}, 0, "generator lag P99 25.0 ms"),
        ({"sent_rps": 3.8}, 0, "send rate off schedule by -5.0%"),
        ({"scheduled": 0}, 0, "no request scheduled"),
    ],
)
def test_judge_names_every_miss(overrides, dropped, reason):
    ok, reasons = judge(_stats(**overrides), Criteria(), dropped)
    assert not ok
    assert any(reason in r for r in reasons), reasons


def test_rate_stats_counts_unanswered_and_failed_as_slower_than_any_bound():
    records = [_record(s, 100.0 + s) for s in range(98)]
    records.append(_record(98, 0.0, ok=False, kind="http"))
    stats = rate_stats(4.0, list(range(100)), records, 25.0)  # seq 99 never answered
    assert (stats.ok, stats.failed, stats.unfinished, stats.completed) == (98, 1, 1, 99)
    assert stats.error_rate == pytest.approx(1 / 99, abs=1e-6)
    assert stats.e2e_p99_ms is not None and stats.e2e_p99_ms > 600  # two of 100 are beyond the bound
    assert stats.e2e_p99_answered_ms == pytest.approx(196.03, abs=0.01)
    assert stats.goodput_rps == pytest.approx(98 / 25.0)
    assert stats.e2e_p50_ms == pytest.approx(148.5)


def test_rate_stats_ignores_other_stages_records():
    records = [_record(s, 100.0) for s in range(10)] + [_record(50, 99999.0)]
    stats = rate_stats(1.0, list(range(10)), records, 10.0)
    assert stats.scheduled == 10 and stats.e2e_p99_ms == 100.0


def test_highest_sustainable_is_below_the_first_miss():
    results = [
        {"offered_rps": 1.0, "sustainable": True},
        {"offered_rps": 4.0, "sustainable": True},  # not in order: sorted by rate
        {"offered_rps": 2.0, "sustainable": True},
        {"offered_rps": 6.0, "sustainable": False},
        {"offered_rps": 8.0, "sustainable": True},  # a pass above a miss does not count
    ]
    assert highest_sustainable(results) == 4.0
    assert highest_sustainable([{"offered_rps": 1.0, "sustainable": False}]) is None
    assert highest_sustainable([]) is None


def test_ladder_plan_matches_the_generators_schedule():
    stages = serving.ladder_stages([2.0, 5.0], settle_s=3.0, measure_s=10.0)
    assert serving.stages_spec(stages) == "settle0:3s@2,rate0:10s@2,settle1:3s@5,rate1:10s@5"
    plans = serving.plan_stages(stages, seed=7)
    assert [(p.rate, p.start_s, p.end_s) for p in plans] == [(2.0, 3.0, 13.0), (5.0, 16.0, 26.0)]
    arrivals = list(Schedule(stages, "poisson", 1.0, 7).arrivals())
    for plan in plans:
        mine = [a for a in arrivals if a.stage == f"rate{plan.index}"]
        assert len(mine) > plan.rate * 10 / 2  # about rate x 10 s of arrivals, not a stage gone missing
        assert plan.seqs == tuple(a.seq for a in mine)
        assert all(plan.start_s <= plan.offsets[a.seq] < plan.end_s for a in mine)


def test_parse_metrics_and_window_usage():
    text = "\n".join([
        'backend_process_cpu_seconds_total{rank="tokenizer"} 1.5',
        'backend_process_cpu_seconds_total{rank="0"} 10.0',
        'backend_process_resident_memory_bytes{rank="0"} 1048576.0',
        'backend_scheduler_phase_wall_seconds_total{phase="fanout",rank="0"} 2.0',
        'backend_scheduler_phase_cpu_seconds_total{phase="fanout",rank="0"} 1.0',
        'sglang:num_running_reqs{model_name="m"} 3.0',
    ])  # fmt: skip
    cpu, rss, wall, cpu_ph = serving.parse_metrics(text)
    assert cpu == {"tokenizer": 1.5, "0": 10.0} and rss == {"0": 1048576.0}
    assert wall == {"fanout": 2.0} and cpu_ph == {"fanout": 1.0}
    samples = [
        Sample(100.0 + t, {"tokenizer": 0.1 * t, "0": 0.5 * t}, {"0": 2**20 * (1 + t)},
               {"fanout": 0.2 * t}, {"fanout": 0.1 * t}, 0.05 * t)
        for t in range(11)
    ]  # fmt: skip
    usage = serving.window_usage(samples, 102.5, 107.5)
    assert usage["cpu_pct"] == {"tokenizer": 10.0, "0": 50.0}
    assert usage["cpu_total_pct"] == 60.0 and usage["scheduler_cpu_max_pct"] == 50.0
    assert usage["generator_cpu_pct"] == 5.0
    assert usage["rss_mib"] == {"tokenizer": 0.0, "0": 8.0}
    assert usage["entry_rank_phases"] == {"fanout": {"wall_pct": 20.0, "cpu_pct": 10.0}}


def test_targets_and_table_from_results():
    def run(mode, best, rates):
        return {"workload": "1920x1080", "mode": mode, "tp": 4, "server": {"step_all_reduce": "nccl"},
                "highest_sustainable_rps": best, "stopped_by": "unsustainable", "rates": rates}  # fmt: skip

    rate = {**vars(_stats(offered_rps=3.0)), "dropped": 0, "sustainable": True, "reasons": [],
            "cpu_pct": {"tokenizer": 5.0, "0": 55.0}, "cpu_total_pct": 60.0, "scheduler_cpu_max_pct": 55.0,
            "rss_total_mib": 2000.0, "generator_cpu_pct": 3.0}  # fmt: skip
    runs = [run("per_request", 1.0, []), run("per_rank", 3.0, []), run("sharded", 5.0, [rate])]
    lines = serving.targets(runs)
    assert "sharded >= 3x per_request: 5.00x: met" in lines[1]
    assert "sharded >= 1.5x per_rank: 1.67x: met" in lines[2]
    assert "55.0% of a core (< 60), P99 0.500 s (<= 0.6): met" in lines[3]
    data = {"runs": runs, "host": {"cpus": 64, "gpus": 4, "gpu_names": ["H100"]},
            "args": {"tp": 4, "max_tokens": 32, "measure_s": 15.0, "settle_s": 4.0, "p99_ms": 600.0}}  # fmt: skip
    table = serving.to_markdown(data)
    assert "| 1920x1080 | sharded | 3 | 4.0 | 100/100 | 0.00 | 0.200 | 0.500 |" in table


@pytest.mark.integration
def test_tiny_real_sweep(tmp_path: Path):
    """TP=2, one low rate, both ends of the path: a real server, the real load generator, the judge."""
    out = tmp_path / "out"
    code = serving.main(["--tp", "2", "--modes", "sharded", "--workloads", "640x480", "--rates", "640x480=1",
                         "--measure-s", "4", "--settle-s", "1", "--drain-s", "5", "--max-lag-p99-ms", "1000",
                         "--out", str(out)])  # fmt: skip
    assert code == 0
    data = json.loads((out / "results.json").read_text())
    [run] = data["runs"]
    assert run["server"]["mm_input_mode"] == "sharded" and run["server"]["tp_size"] == 2, run
    [rate] = run["rates"]
    assert rate["scheduled"] > 0 and rate["ok"] == rate["scheduled"], rate
    assert set(rate["cpu_pct"]) == {"tokenizer", "0", "1"}
    assert rate["entry_rank_phases"]["mm_inputs"]["wall_pct"] > 0
    assert (out / "table.md").exists()
    assert (out / "p99.png").stat().st_size > 0  # matplotlib is a dependency: the plot is always drawn

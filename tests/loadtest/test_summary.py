import numpy as np
import pytest

from loadtest.summary import (
    RunSummary,
    describe,
    exit_decision,
    judge_generator,
    judge_slo,
    parse_slo,
)


def record(seq, arm="baseline", ok=True, ttft=10.0, stage="main", kind=None, lag=0.5):
    return {
        "seq": seq,
        "stage": stage,
        "arm": arm,
        "sent_at": 1000.0 + seq,
        "lag_ms": lag,
        "ok": ok,
        "error_kind": kind if not ok else None,
        "ttft_ms": ttft if ok else None,
        "ttft_sched_ms": ttft + lag if ok else None,
        "e2e_ms": 3 * ttft,
        "e2e_sched_ms": 3 * ttft + lag,
        "itl_ms": [1.0, 2.0] if ok else [],
        "tpot_ms": 1.5 if ok else None,
        "output_tokens": 3 if ok else 0,
    }


def counters(scheduled, sent, first, last, sent_first=None, sent_last=None):
    return {
        "scheduled": scheduled,
        "sent": sent,
        "late": 0,
        "dropped_in_flight": scheduled - sent,
        "dropped_too_late": 0,
        "first_scheduled_at": first,
        "last_scheduled_at": last,
        "first_sent_at": first if sent_first is None else sent_first,
        "last_sent_at": last if sent_last is None else sent_last,
    }


def test_describe_gives_exact_numpy_percentiles():
    values = np.random.default_rng(0).lognormal(3, 1, 1001)
    stats = describe(values)
    assert stats["count"] == 1001
    assert stats["p99"] == pytest.approx(np.percentile(values, 99), abs=1e-4)
    assert stats["p50"] == pytest.approx(np.median(values), abs=1e-4)
    assert stats["max"] == pytest.approx(values.max(), abs=1e-4)
    assert describe([]) == {
        "count": 0,
        "mean": None,
        "p50": None,
        "p90": None,
        "p95": None,
        "p99": None,
        "p999": None,
        "max": None,
    }


def test_per_arm_statistics_leave_out_warmup_and_cancelled_requests():
    summary = RunSummary({}, 10.0, ())
    summary.add_records(
        [record(i, ttft=float(i)) for i in range(1, 101)]
        + [record(200, arm="canary", ttft=50.0), record(201, arm="canary", ok=False, kind="http")]
        + [record(300, arm="canary", ok=False, kind="cancelled")]
        + [record(400, arm="canary", ttft=999.0, stage="warmup")]
    )
    summary.set_counters(0, {"main": counters(104, 104, 1000.0, 1103.0)})
    out = summary.render(1000.0, 1110.0)
    base, canary = out["arms"]["baseline"], out["arms"]["canary"]
    assert base["ttft_ms"]["p50"] == pytest.approx(50.5)
    assert base["itl_ms"]["count"] == 200
    assert canary["requests"] == 3 and canary["failed"] == 1 and canary["cancelled"] == 1
    assert canary["error_rate"] == 0.5  # cancelled requests are not judged
    assert canary["ttft_ms"]["max"] == 50.0  # the warmup request is left out
    assert out["arms"]["all"]["requests"] == 103
    assert out["schedule"]["lag_ms"]["count"] == 104  # lag counts every sent request, warmup too
    assert out["exit_code"] == 1  # request failures, no --slo (docs/loadtest.md: exit codes)


def test_rates_merge_workers_and_compare_sends_with_the_schedule():
    summary = RunSummary({"max_rate_error_pct": 2.0, "max_lag_p99_ms": 10.0}, 100.0, ())
    summary.set_counters(0, {"main": counters(50, 50, 0.0, 9.8)})
    summary.set_counters(1, {"main": counters(50, 45, 0.1, 9.9)})
    summary.add_records([record(i) for i in range(95)])
    out = summary.render(0.0, 10.0)
    schedule = out["schedule"]
    assert schedule["scheduled"] == 100 and schedule["sent"] == 95
    assert schedule["target_rate_rps"] == pytest.approx(99 / 9.9, abs=1e-3)
    assert schedule["achieved_rate_rps"] == pytest.approx(94 / 9.9, abs=1e-3)
    assert out["self_check"]["ok"] is False and "achieved rate off target" in out["self_check"]["reasons"][0]
    assert out["workers"] == 2
    assert out["exit_code"] == 3  # the generator did not keep up


def test_generator_self_check_limits():
    assert judge_generator(1.9, 9.9, 2.0, 10.0)["ok"] is True
    assert judge_generator(-2.1, 1.0, 2.0, 10.0)["ok"] is False
    assert "lag p99" in judge_generator(0.0, 10.5, 2.0, 10.0)["reasons"][0]
    assert judge_generator(None, None, 2.0, 10.0)["ok"] is None


def test_slo_specs_parse_and_name_bad_parts():
    rules = parse_slo("ttft_ms.p99<=500, error_rate<=0.001")
    assert [(r.metric, r.stat, r.threshold) for r in rules] == [
        ("ttft_ms", "p99", 500.0),
        ("error_rate", "", 0.001),
    ]
    assert parse_slo("") == ()
    for bad, message in [
        ("ttft.p99<=5", "unknown metric 'ttft'"),
        ("ttft_ms.p42<=5", "unknown statistic 'p42'"),
        ("ttft_ms.p99<5", "expected metric.stat<=value"),
        ("ttft_ms.p99<=fast", "threshold 'fast' is not a number"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_slo(bad)


def test_slo_is_judged_per_arm_and_missing_data_fails():
    arms = {
        "baseline": {"requests": 10, "error_rate": 0.0, "ttft_ms": {"p99": 100.0}},
        "canary": {"requests": 10, "error_rate": 0.2, "ttft_ms": {"p99": None}},
        "all": {"requests": 20, "error_rate": 0.1, "ttft_ms": {"p99": 100.0}},
    }
    slo = judge_slo(parse_slo("ttft_ms.p99<=200,error_rate<=0.01"), arms)
    verdicts = {(r["arm"], r["metric"]): r["ok"] for r in slo["results"]}
    assert verdicts == {
        ("baseline", "ttft_ms"): True,
        ("baseline", "error_rate"): True,
        ("canary", "ttft_ms"): False,
        ("canary", "error_rate"): False,
    }
    assert slo["ok"] is False
    no_requests = judge_slo(parse_slo("error_rate<=0.01"), {"all": {"requests": 0, "error_rate": None}})
    assert no_requests["ok"] is False


def test_exit_code_precedence():
    missed = {
        "given": True,
        "ok": False,
        "results": [
            {
                "arm": "canary",
                "metric": "ttft_ms",
                "stat": "p99",
                "threshold": 1.0,
                "value": None,
                "ok": False,
            }
        ],
    }
    held = {"given": True, "ok": True, "results": []}
    none = {"given": False, "ok": None, "results": []}
    # docs/loadtest.md: 0 ok, 1 request failures without --slo, 3 generator behind (over 4), 4 SLO missed
    assert exit_decision(False, missed, 5)[0] == 3
    code, reason = exit_decision(True, missed, 0)
    assert code == 4 and "canary ttft_ms.p99 = no data" in reason
    assert exit_decision(None, held, 3)[0] == 0
    assert exit_decision(True, none, 3)[0] == 1
    assert exit_decision(True, none, 0)[0] == 0

"""loadtest/locust_rows.py on Locust's own statistics: which samples land in which row, and none in Aggregated."""

from locust.env import Environment

from loadtest.locust_rows import SELF_CHECK_ROWS, LocustRows


def record(**changes):
    base = {"arm": "canary", "ok": True, "error_kind": None, "lag_ms": 0.5, "late": False, "ttft_ms": 12.0,
            "itl_ms": [1.0, 2.0, 3.0], "tpot_ms": 2.0}  # fmt: skip
    return {**base, **changes}


def row(env, request_type, name):
    entry = env.stats.entries.get((name, request_type))
    return None if entry is None else (entry.num_requests, entry.avg_response_time)


def test_each_value_lands_in_its_own_row_and_none_in_aggregated():
    env = Environment()
    rows = LocustRows(env)
    rows.show_self_check()
    assert [row(env, "SCHED", name) for name in SELF_CHECK_ROWS] == [(0, 0)] * 4
    rows.add_record(record())
    rows.add_record(record(arm="baseline", ttft_ms=30.0, itl_ms=[5.0], tpot_ms=None, lag_ms=14.5, late=True))
    failed = {
        "ok": False,
        "error_kind": "http",
        "ttft_ms": None,
        "itl_ms": [],
        "tpot_ms": None,
        "lag_ms": 2.0,
    }
    rows.add_record(record(**failed))
    rows.add_record(record(ok=False, error_kind="cancelled", lag_ms=3.0))  # sent, then cut off by the stop
    rows.add_dropped("dropped_in_flight", 0.004)
    rows.add_dropped("dropped_too_late", 1.5)

    assert row(env, "TTFT", "canary") == (1, 12.0)  # successful streams only, as in the summary
    assert row(env, "ITL", "canary") == (3, 2.0)
    assert row(env, "TPOT", "canary") == (1, 2.0)
    assert row(env, "TTFT", "baseline") == (1, 30.0) and row(env, "ITL", "baseline") == (1, 5.0)
    assert row(env, "TPOT", "baseline") is None  # one output token: no time per output token
    assert row(env, "SCHED", "lag") == (4, 5.0)  # every sent request, cancelled ones too
    assert row(env, "SCHED", "late") == (1, 14.5)
    assert row(env, "SCHED", "dropped_in_flight") == (1, 4.0)
    assert row(env, "SCHED", "dropped_too_late") == (1, 1500.0)
    # Aggregated is Locust's count of real requests; these rows are measurements, not requests.
    assert env.stats.total.num_requests == 0 and env.stats.total.num_failures == 0 and not env.stats.errors

import math

import numpy as np
import pytest

from loadtest.schedule import Schedule, Stage, parse_duration, parse_stages


def offsets(schedule, limit, worker=0, workers=1):
    out = []
    for arrival in schedule.arrivals(worker, workers):
        if len(out) == limit:
            break
        out.append(arrival)
    return out


def test_constant_arrivals_are_exactly_one_over_rate_apart():
    arrivals = offsets(Schedule.open_ended(4.0, "constant", 1.0, 0), 5)
    assert [a.offset_s for a in arrivals] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert [a.seq for a in arrivals] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    "arrival,burstiness,cv", [("poisson", 1.0, 1.0), ("gamma", 0.25, 2.0), ("gamma", 4.0, 0.5)]
)
def test_random_arrivals_have_the_rate_and_the_burstiness_asked_for(arrival, burstiness, cv):
    arrivals = offsets(Schedule.open_ended(100.0, arrival, burstiness, 3), 20000)
    gaps = np.diff([0.0] + [a.offset_s for a in arrivals])
    assert gaps.mean() == pytest.approx(0.01, rel=0.05)
    # coefficient of variation of gamma gaps is 1/sqrt(shape)
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.08)


def test_same_seed_same_schedule_other_seed_other_schedule():
    a = [x.offset_s for x in offsets(Schedule.open_ended(10.0, "poisson", 1.0, 1), 50)]
    b = [x.offset_s for x in offsets(Schedule.open_ended(10.0, "poisson", 1.0, 1), 50)]
    c = [x.offset_s for x in offsets(Schedule.open_ended(10.0, "poisson", 1.0, 2), 50)]
    assert a == b
    assert a != c


def test_workers_split_the_same_schedule_disjointly_and_completely():
    schedule = Schedule(parse_stages("a:5s@40,b:5s@10"), "gamma", 0.5, 9)
    whole = list(schedule.arrivals())
    parts = [list(schedule.arrivals(k, 3)) for k in range(3)]
    assert 200 <= len(whole) <= 300  # about 5 s x 40/s + 5 s x 10/s to split
    for k, part in enumerate(parts):
        assert part and all(a.seq % 3 == k for a in part)
    merged = sorted((a for part in parts for a in part), key=lambda a: a.seq)
    assert merged == whole


def test_stages_run_in_order_and_a_zero_rate_stage_pauses():
    schedule = Schedule(parse_stages("warmup:1s@10,pause:2s@0,measure:1s@20"), "constant", 1.0, 0)
    arrivals = list(schedule.arrivals())
    assert schedule.duration_s == 4.0
    assert [a.stage for a in arrivals].count("warmup") == 10
    assert [a.stage for a in arrivals].count("measure") == 20
    assert all(a.offset_s < 1.0 for a in arrivals if a.stage == "warmup")
    assert all(3.0 <= a.offset_s < 4.0 for a in arrivals if a.stage == "measure")
    assert "pause" not in {a.stage for a in arrivals}


def test_open_ended_schedule_has_infinite_duration():
    assert math.isinf(Schedule.open_ended(1.0, "poisson", 1.0, 0).duration_s)
    assert Schedule((Stage("x", 90.0, 1.0),)).duration_s == 90.0


@pytest.mark.parametrize(
    "spec,message",
    [
        ("measure:60@20", "bad duration '60'"),
        ("measure60s@20", "expected name:duration@rate"),
        ("measure:60s@fast", "rate 'fast' is not a number"),
        ("measure:60s@-1", "rate must be >= 0"),
        ("measure:0s@1", "duration must be > 0"),
    ],
)
def test_bad_stage_specs_name_the_problem(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_stages(spec)


def test_durations_and_bad_arrival_values():
    assert parse_duration("2m") == 120.0
    assert parse_duration("1.5h") == 5400.0
    with pytest.raises(ValueError, match="unknown arrival 'bursty'"):
        Schedule.open_ended(1.0, "bursty", 1.0, 0)
    with pytest.raises(ValueError, match="burstiness must be > 0"):
        Schedule.open_ended(1.0, "gamma", 0.0, 0)
    with pytest.raises(ValueError, match="rate must be > 0"):
        Schedule.open_ended(0.0, "poisson", 1.0, 0)
    with pytest.raises(ValueError, match="out of range"):
        next(Schedule.open_ended(1.0, "poisson", 1.0, 0).arrivals(2, 2))

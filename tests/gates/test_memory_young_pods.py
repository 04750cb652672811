"""A canary pod younger than the window: its start-up ramp (a fresh container's working set climbing to
its level in seconds) must not read as a leak, in our gate or in the exported check. Found running the
real Flagger at its exported timing: its canary pods start one interval before the first check, and the
check's lower envelope reaches back to their first samples (tests/helm/test_flagger_traffic.py). Nor may
a young pod's leak read as none: the envelope of a pod younger than its span is the running minimum since
the pod began, flat under any growth. Found running the real Argo Rollouts, whose first measurement at
10% read 0 for a canary leaking 48 MiB/min (tests/helm/test_argo_traffic.py): the exported check now
counts a pod's envelope only once the pod has lived its warm-up and envelope span, and the exports wait
for that (`gates.export.pod_history_s`).

A real Prometheus holds cAdvisor-named series (working set and container start time per pod); the
packaged `kubernetes` memory gate judges them with its `started` query, and without it.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import yaml

from gates import evaluate, load_gate_file
from gates.config import DEFAULT_GATE_FILE
from gates.export import Dialect, gate_checks, pod_history_s
from infra.prometheus import PrometheusServer, backfill, openmetrics_text
from infra.prometheus_api import PrometheusAPI
from testkit.synthetic_arms import MIB

pytestmark = pytest.mark.integration

NAMESPACE, LEAKING, STEPPED = "young", "young-leaking", "stepped"
STEP_AT_S = 60.0  # STEPPED: an old canary pod that starts leaking when its traffic starts, this far in
LEAK_MIB_PER_MIN = 48.0
WINDOW_S = 600.0
SCRAPE_S = 10.0
PODS = {"baseline": "app-primary-5d4f8b6c9-x7k2p", "canary": "app-7c9d5f6b8-q4w2z"}
REGEX = {"baseline": "app-primary-[a-z0-9]+-[a-z0-9]+", "canary": "app-[a-z0-9]+-[a-z0-9]+"}


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    end = math.floor(time.time() / 60) * 60 - 120
    start = end - WINDOW_S
    rng = np.random.default_rng(7)
    series = []
    # baseline: up for an hour, flat at 630 MiB; canary: started 30 s into the window, its working set
    # climbing from 20 to 650 MiB in its first 15 s, then flat (in LEAKING: started at the window's start,
    # then growing LEAK_MIB_PER_MIN; in STEPPED: up for an hour, growing from STEP_AT_S into the window, as
    # when a weight change first sends it traffic); all with 2 MiB of noise
    for namespace, arm, began, level, growth, leak_from in (
        (NAMESPACE, "baseline", start - 3600.0, 630.0, 0.0, start),
        (NAMESPACE, "canary", start + 30.0, 650.0, 0.0, start),
        (LEAKING, "baseline", start - 3600.0, 630.0, 0.0, start),
        (LEAKING, "canary", start, 650.0, LEAK_MIB_PER_MIN, start),
        (STEPPED, "baseline", start - 3600.0, 630.0, 0.0, start),
        (STEPPED, "canary", start - 3600.0, 650.0, LEAK_MIB_PER_MIN, start + STEP_AT_S),
    ):
        times = np.arange(max(began, start - 900.0), end + 1, SCRAPE_S)
        ramp = np.clip((times - began) / 15.0, 0.0, 1.0)
        leaked = growth * np.clip(times - leak_from, 0.0, None) / 60.0
        mib = 20.0 + (level - 20.0) * ramp + leaked + rng.normal(0.0, 2.0, times.size)
        labels = {"namespace": namespace, "pod": PODS[arm], "container": "sglang"}
        series.append(
            ("container_memory_working_set_bytes", labels, list(zip(times, mib * MIB, strict=True)))
        )
        series.append(("container_start_time_seconds", labels, [(t, began) for t in times]))
    data_dir = tmp_path_factory.mktemp("tsdb")
    backfill(openmetrics_text(series), data_dir)
    with PrometheusServer(data_dir=data_dir) as server:
        yield server, start, end


def memory_gate(started: str | None):
    """The packaged leak gate; `started`: "packaged", None (no such query) or a query of its own."""
    document = yaml.safe_load(DEFAULT_GATE_FILE.read_text())
    (gate,) = [g for g in document["gates"] if g["name"] == "memory_leak"]
    if started is None:
        del gate["queries"]["started"]
    elif started != "packaged":
        gate["queries"]["started"] = started
    document["gates"] = [gate]
    return document


def judged(prometheus, tmp_path, started: str | None = "packaged"):
    server, start, end = prometheus
    path = tmp_path / "gates.yaml"
    path.write_text(yaml.safe_dump(memory_gate(started)))
    config = load_gate_file(path, profile="kubernetes")
    evaluation = evaluate(
        config,
        prometheus_url=server.url,
        start=start,
        end=end,
        weights={"baseline": 50.0, "canary": 50.0},
        offered_rps=None,
        variables={"namespace": NAMESPACE, "pod_regex": REGEX},
    )
    dialect = Dialect(
        {a: a for a in REGEX}, {"namespace": NAMESPACE, "pod_regex": REGEX}, f"{int(WINDOW_S)}s"
    )
    (check,) = gate_checks(config.gates[0], dialect)
    samples = PrometheusAPI(server.url).instant(check.query, end)
    return evaluation.gates[0], check, (samples[0].value if samples else None)


def test_our_gate_does_not_read_the_ramp_as_a_leak(prometheus, tmp_path):
    # with the start times the ramp is left out; without them the trend fit sets it aside as a one-time rise
    for started in ("packaged", None):
        gate, _, _ = judged(prometheus, tmp_path, started)
        assert gate.raw_verdict != "fail", (started, gate.reason)


def test_the_exported_check_leaves_the_ramp_out_only_with_the_start_times(prometheus, tmp_path):
    _, check, value = judged(prometheus, tmp_path)
    assert value is not None and value <= check.bound, (value, check.bound)
    # the defect: the lower envelope reaches back to the ramp's first samples, some 630 MiB below
    _, check, without = judged(prometheus, tmp_path, started=None)
    assert without is not None and without > check.bound, (without, check.bound)
    # a series whose start time is unknown is kept whole: the same as without the query
    _, _, unknown = judged(
        prometheus, tmp_path, started='max by (pod) (no_such_start_time{namespace="${namespace}"})'
    )
    assert unknown == pytest.approx(without)


def exported_value(
    prometheus,
    tmp_path,
    at: float,
    window_s: float,
    started: str | None = "packaged",
    namespace: str = LEAKING,
):
    """The exported leak check's value for `namespace`'s pods at `at` over `window_s`, and its bound."""
    server, _, _ = prometheus
    path = tmp_path / "gates.yaml"
    path.write_text(yaml.safe_dump(memory_gate(started)))
    config = load_gate_file(path, profile="kubernetes")
    dialect = Dialect(
        {a: a for a in REGEX}, {"namespace": namespace, "pod_regex": REGEX}, f"{int(window_s)}s"
    )
    (check,) = gate_checks(config.gates[0], dialect)
    samples = PrometheusAPI(server.url).instant(check.query, at)
    return (samples[0].value if samples else None), check.bound


def test_a_young_pods_leak_is_never_read_as_none(prometheus, tmp_path):
    _, start, end = prometheus
    # Argo's first measurement at 10% of 16 req/s before the fix: the pod 270 s old, a 250 s window
    early = start + 270.0
    # the defect, kept by a gate without start times: the envelope is the running minimum since the pod
    # began, flat, so the check passes a leak 32 times its bound
    flat, bound = exported_value(prometheus, tmp_path, early, 250.0, started=None)
    assert flat is not None and flat <= bound, (flat, bound)
    # with them, the young pod has no envelope yet: no value (never a pass), until it has lived
    # pod_history_s, when the export's first measurement comes
    value, _ = exported_value(prometheus, tmp_path, early, 250.0)
    assert value is None, value
    path = tmp_path / "gates.yaml"
    path.write_text(yaml.safe_dump(memory_gate("packaged")))
    history = pod_history_s(load_gate_file(path, profile="kubernetes"))
    assert history <= end - start
    value, bound = exported_value(prometheus, tmp_path, start + history, 250.0)
    assert value is not None and value / (LEAK_MIB_PER_MIN * MIB / 60.0) == pytest.approx(1.0, abs=0.15)
    assert value > bound


def test_a_check_reads_a_step_only_once_the_envelope_has_reached_into_it(prometheus, tmp_path):
    """An old pod that leaks from its step's start: the envelope reaches envelope_seconds back, so a check
    one 300 s interval after the step (Flagger's tick before the fix) reads the minutes before it and
    passes the leak; one after the envelope's whole reach and the check's points reads the leak."""
    _, start, end = prometheus
    step = start + STEP_AT_S
    early, bound = exported_value(prometheus, tmp_path, step + 300.0, 250.0, namespace=STEPPED)
    assert early is not None and early <= bound, (early, bound)
    late, bound = exported_value(prometheus, tmp_path, end, 250.0, namespace=STEPPED)
    assert end - step >= 300.0 + 20 * 10.0  # the envelope's span and the check's 20 points at 10 s
    assert late is not None and late / (LEAK_MIB_PER_MIN * MIB / 60.0) == pytest.approx(1.0, abs=0.15)

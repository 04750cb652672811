"""The evaluator with a stand-in at our own provider layer (MetricsProvider), and load-test samples."""

import json

import numpy as np
import pytest

from gates import GateConfigError, evaluate, parse_gate_document
from gates.loadtest_samples import LoadtestSamplesError, read_loadtest_samples
from gates.provider import RangeSeries, Sample
from gates.record import Evaluation, GateResult, Verdict, overall
from testkit.synthetic_arms import LatencyModel, gc_sawtooth

CPU_DOC = {
    "version": 1,
    "settings": {"consecutive_failures": 2},
    "gates": [{"name": "cpu", "kind": "threshold", "max": 0.6, "queries": {"value": 'cpu{arm="${arm}"}'}}],
}
WEIGHTS = {"baseline": 90.0, "canary": 10.0}


class FakeProvider:
    def __init__(self, answers):
        self.answers = answers
        self.queries = []

    def instant(self, promql, at):
        self.queries.append(promql)
        answer = self.answers[promql]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def range(self, promql, start, end, step_s):
        """The instant answer's value in every sub-window (a threshold gate's interval of no width)."""
        self.queries.append(promql)
        answer = self.answers[promql]
        if isinstance(answer, Exception):
            raise answer
        t = np.arange(start, end + 1e-9, step_s)
        return [RangeSeries(s.labels, t, np.full(t.size, s.value)) for s in answer]


def cpu(canary_value, baseline_value=0.3):
    return FakeProvider(
        {'cpu{arm="canary"}': [Sample({}, canary_value)], 'cpu{arm="baseline"}': [Sample({}, baseline_value)]}
    )


def run(provider, streaks=None, doc=CPU_DOC, looks=None):
    return evaluate(
        parse_gate_document(doc, "local"),
        prometheus_url="http://unused",
        start=1000.0,
        end=1600.0,
        weights=WEIGHTS,
        provider=provider,
        streaks=streaks,
        looks=looks,
    )


def test_consecutive_failure_hysteresis():
    first = run(cpu(0.9))
    assert first.verdict == "inconclusive" and first.gates[0].raw_verdict == "fail"
    assert "failing 1 of 2" in first.gates[0].reason
    second = run(cpu(0.9), streaks=first.streaks())
    assert second.verdict == "fail" and second.gates[0].consecutive_failures == 2
    # a pass in between breaks the streak; records read back from JSON carry the streaks too
    passed = run(cpu(0.1), streaks=Evaluation.from_dict(json.loads(json.dumps(first.to_dict()))).streaks())
    again = run(cpu(0.9), streaks=passed.streaks())
    assert again.verdict == "inconclusive"


def test_multiple_series_never_uses_the_last_one():
    provider = FakeProvider(
        {
            'cpu{arm="canary"}': [Sample({"pod": "a"}, 0.9), Sample({"pod": "b"}, 0.1)],
            'cpu{arm="baseline"}': [Sample({}, 0.1)],
        }
    )
    ev = run(provider)
    assert ev.verdict == "inconclusive" and "multiple_series" in ev.gates[0].reason


def test_nan_is_inconclusive():
    assert run(cpu(float("nan"))).gates[0].raw_verdict == "inconclusive"


def test_record_is_json_with_queries_values_and_threshold():
    record = json.loads(json.dumps(run(cpu(0.5)).to_dict()))
    gate = record["gates"][0]
    assert gate["queries"]["canary"]["value"] == 'cpu{arm="canary"}'
    values = {"baseline": 0.3, "canary": 0.5, "baseline_mean": 0.3, "canary_mean": 0.5}
    assert gate["values"] == pytest.approx(values) and gate["threshold"] == {"max": 0.6, "min_points": 4}
    assert gate["confidence_interval"]["canary"] == pytest.approx([0.5, 0.5])
    # the interval's query: the same value over 30 s sub-windows tiling the window's end
    assert gate["queries"]["canary"]["value_subwindows"] == 'cpu{arm="canary"}  [range 1030..1600 step 30s]'
    assert gate["samples"] == {"baseline": 20, "canary": 20}
    assert record["window"]["seconds"] == 600.0 and record["verdict"] == "pass"


def test_bad_inputs_are_config_errors():
    config = parse_gate_document(CPU_DOC, "local")
    with pytest.raises(GateConfigError, match="weights.canary"):
        evaluate(config, prometheus_url="x", start=0, end=10, weights={"baseline": 100.0}, provider=cpu(0.1))
    with pytest.raises(GateConfigError, match="end"):
        evaluate(config, prometheus_url="x", start=10, end=10, weights=WEIGHTS, provider=cpu(0.1))


def test_no_gates_is_inconclusive():
    assert overall([])[0] == "inconclusive"


def test_one_verdict_for_an_evaluation_is_its_worst_deciding_gate():
    def gate(name, verdict, dry_run=False):
        return GateResult(
            name, "threshold", verdict, "", verdict, "prometheus", {}, {}, {}, {}, {}, dry_run=dry_run
        )

    assert overall([gate("a", "pass"), gate("b", "inconclusive"), gate("c", "fail"), gate("d", "fail")]) == (
        Verdict.FAIL,
        "fail: c, d",
    )
    assert overall([gate("a", "pass"), gate("b", "inconclusive")]) == (
        Verdict.INCONCLUSIVE,
        "inconclusive: b",
    )
    assert overall([gate("a", "pass"), gate("b", "fail", dry_run=True)]) == (
        Verdict.PASS,
        "all 1 gates passed (dry-run: b=fail)",
    )
    assert overall([gate("b", "fail", dry_run=True)]) == (
        Verdict.INCONCLUSIVE,
        "only dry-run gates (dry-run: b=fail)",
    )


# -- load-test samples --------------------------------------------------------------------------------
LATENCY_DOC = {
    "version": 1,
    "gates": [
        {
            "name": "p99",
            "kind": "latency_quantile",
            "max_ratio": 1.10,
            "source": "loadtest",
            "queries": {},
            "consecutive_failures": 1,
        }
    ],
}


def write_samples(path, canary_factor, n=3000, seed=5, start=1000.0):
    rng = np.random.default_rng(seed)
    model = LatencyModel(median_s=0.35, sigma=0.10)
    lines = []
    for arm, factor in (("baseline", 1.0), ("canary", canary_factor)):
        for i, e2e in enumerate(model.sample(rng, n) * factor):
            lines.append(
                json.dumps(
                    {
                        "arm": arm,
                        "ok": True,
                        "stage": "main",
                        "sent_at": start + i * 0.1,
                        "e2e_ms": e2e * 1000,
                        "ttft_ms": 40.0,
                        "itl_ms": [10.0, 11.0],
                    }
                )
            )
    lines.append(json.dumps({"arm": "canary", "ok": False, "sent_at": start + 1, "e2e_ms": 99999.0}))
    lines.append(
        json.dumps({"arm": "canary", "ok": True, "stage": "warmup", "sent_at": start + 1, "e2e_ms": 99999.0})
    )
    path.write_text("\n".join(lines) + "\n" + '{"arm": "canary", "ok": true, "sent_at"')  # partial last line
    return path


@pytest.mark.parametrize(("factor", "verdict"), [(1.0, "pass"), (1.15, "fail")])
def test_loadtest_source_judges_exact_samples(tmp_path, factor, verdict):
    path = write_samples(tmp_path / "requests.jsonl", factor)
    config = parse_gate_document(LATENCY_DOC, "local")
    ev = evaluate(
        config,
        prometheus_url="http://unused",
        start=1000.0,
        end=1400.0,
        weights=WEIGHTS,
        loadtest_samples=path,
        provider=FakeProvider({}),
    )
    gate = ev.gates[0]
    assert gate.source == "loadtest" and gate.verdict == verdict, gate.reason
    assert gate.samples == {"baseline": 3000, "canary": 3000}


def test_loadtest_reader_filters_window_failed_and_warmup(tmp_path):
    path = write_samples(tmp_path / "r.jsonl", 1.0, n=100)
    samples = read_loadtest_samples(path, 1000.0, 1005.0)
    expected = sum(
        1
        for line in path.read_text().splitlines()[:-1]
        if (r := json.loads(line))["arm"] == "canary"
        and r["ok"]
        and r.get("stage") == "main"
        and 1000.0 <= r["sent_at"] + r["e2e_ms"] / 1000 <= 1005.0
    )
    assert 40 <= expected <= 51  # completed in the window, ok, not warm-up
    assert samples.arm_values("e2e_ms", "canary").size == expected
    assert samples.arm_values("e2e_ms", "canary").max() < 99999.0
    baseline = samples.arm_values("e2e_ms", "baseline").size
    assert samples.arm_values("itl_ms", "baseline").size == 2 * baseline  # two gaps per request


def test_loadtest_reader_names_the_bad_line(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"arm": "canary"}\nnot json\n')
    with pytest.raises(LoadtestSamplesError, match=r"r.jsonl:2"):
        read_loadtest_samples(path, 0, 1)


def test_loadtest_source_without_samples_is_inconclusive():
    config = parse_gate_document(LATENCY_DOC, "local")
    ev = evaluate(
        config,
        prometheus_url="http://unused",
        start=1000.0,
        end=1400.0,
        weights=WEIGHTS,
        provider=FakeProvider({}),
    )
    assert ev.verdict == "inconclusive" and "no load-test samples" in ev.gates[0].reason


# -- memory: one series per pod --------------------------------------------------------------------
LEAK_DOC = {
    "version": 1,
    "gates": [
        {
            "name": "leak",
            "kind": "memory_leak",
            "consecutive_failures": 1,
            "confidence": 0.98,
            "queries": {"memory": 'sum by (pod) (mem{arm="${arm}"})'},
        }
    ],
}


class RangeProvider(FakeProvider):
    def range(self, promql, start, end, step_s):
        self.queries.append((promql, start, end, step_s))
        return self.answers[promql](np.arange(start, end + 1e-9, step_s))


def sawtooth_pods(leak_mib_per_min, seed, pods=2):
    def series(t):
        rng = np.random.default_rng(seed)
        out = []
        for i in range(pods):
            model = gc_sawtooth(100, 2, leak_mib_per_min)
            out.append(RangeSeries({"pod": f"p{i}"}, t, model.sample(rng, t)))
        return out

    return series


def run_leak(canary, baseline):
    provider = RangeProvider(
        {'sum by (pod) (mem{arm="canary"})': canary, 'sum by (pod) (mem{arm="baseline"})': baseline}
    )
    ev = evaluate(
        parse_gate_document(LEAK_DOC, "local"),
        prometheus_url="http://unused",
        start=0.0,
        end=1500.0,
        weights={"baseline": 50.0, "canary": 50.0},
        provider=provider,
    )
    return ev.gates[0], provider


def test_memory_leak_judges_each_pod_series():
    gate, provider = run_leak(sawtooth_pods(3.0, 1), sawtooth_pods(0.0, 2))
    assert gate.verdict == "fail", gate.reason
    assert gate.values["canary"] == pytest.approx(3.0, abs=1.0) and gate.values["canary_pods"] == 2
    assert (
        gate.values["method"] == "collection floors"
        and "one series per pod" in gate.queries["canary"]["memory"]
    )
    (_, start, end, step) = provider.queries[0]
    assert (start, end, step) == (60.0, 1500.0, 10.0)  # warm-up left out, the gate's step
    flat, _ = run_leak(sawtooth_pods(0.0, 3), sawtooth_pods(0.0, 2))
    assert flat.verdict == "pass", flat.reason


def test_memory_leak_without_series_or_points_is_inconclusive():
    gate, _ = run_leak(lambda t: [], sawtooth_pods(0.0, 2))
    assert gate.verdict == "inconclusive" and "no_values" in gate.reason
    gate, _ = run_leak(lambda t: [RangeSeries({"pod": "a"}, t[:5], t[:5])], sawtooth_pods(0.0, 2))
    assert gate.verdict == "inconclusive" and "too few memory points" in gate.reason


def test_a_dry_run_gate_is_recorded_and_shown_but_never_decides():
    from gates.report import gate_table, to_junit

    doc = {
        "version": 1,
        "settings": {"consecutive_failures": 1},
        "gates": [
            CPU_DOC["gates"][0],
            {**CPU_DOC["gates"][0], "name": "cpu_trial", "max": 0.1, "dry_run": True},
        ],
    }
    ev = run(cpu(0.3), doc=doc)
    trial = ev.gate("cpu_trial")
    assert trial.verdict == "fail" and trial.dry_run and ev.verdict == "pass"
    assert ev.gates_with(Verdict.FAIL) == () and ev.dry_run_gates() == (trial,)
    assert "dry-run: cpu_trial=fail" in ev.reason
    assert any("| cpu_trial | **fail (dry-run)** |" in line for line in gate_table(ev.gates))
    junit = to_junit(ev, inconclusive_fails=True)
    assert 'failures="0"' in junit and "dry-run, fail" in junit
    assert Evaluation.from_dict(json.loads(json.dumps(ev.to_dict()))).gate("cpu_trial").dry_run
    # the deciding gate still decides; with only dry-run gates there is nothing to decide on
    assert run(cpu(0.9), doc=doc).verdict == "fail"
    only = run(cpu(0.3), doc={**doc, "gates": doc["gates"][1:]})
    assert only.verdict == "inconclusive" and "only dry-run gates" in only.reason

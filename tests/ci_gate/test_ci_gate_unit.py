"""The CI gate's decisions and outputs without a running stack: exit codes, JUnit, summary, options."""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from gates.record import Evaluation, GateResult, Verdict, overall
from rollout.__main__ import ci_gate_main
from rollout.ci_gate import (
    CiGateDecision,
    GateOnceOptions,
    ci_gate_config,
    junit_xml,
    summary_markdown,
)
from rollout.local_stack import ArmSpec
from rollout.sites.local import local_site

ARMS = {"baseline": ArmSpec("baseline", "per_request"), "canary": ArmSpec("canary", "sharded")}


def _evaluation(verdicts: dict[str, str]) -> Evaluation:
    gates = tuple(
        GateResult(
            name=n,
            kind="threshold",
            verdict=Verdict(v),
            reason=f"{n} said {v}",
            raw_verdict=Verdict(v),
            source="prometheus",
            queries={},
            values={},
            threshold={},
            ci={},
            samples={"baseline": 400, "canary": 390},
        )
        for n, v in verdicts.items()
    )
    verdict, reason = overall(gates)
    return Evaluation(
        verdict, reason, gates, "local", 0.0, 40.0, {"baseline": 50, "canary": 50}, 20.0, "", 41.0
    )


def _decision(verdicts: dict[str, str], *, allow_inconclusive: bool = False) -> CiGateDecision:
    evaluation = _evaluation(verdicts)
    return CiGateDecision(
        run_id="r1",
        verdict=evaluation.verdict,
        reason="because",
        evaluation=evaluation,
        allow_inconclusive=allow_inconclusive,
        arms={"baseline": "embedded per_request", "canary": "embedded sharded"},
        load="20 req/s offered (Poisson)",
        canary_weight=50,
        warmup_s=10.0,
        window=(0.0, 40.0),
        started_at=0.0,
        finished_at=41.0,
        site={"kind": "local"},
        gate_variables={},
    )


def exit_code_for(verdict: str, *, allow_inconclusive: bool) -> int:
    decision = _decision({}, allow_inconclusive=allow_inconclusive)
    return dataclasses.replace(decision, verdict=Verdict(verdict)).exit_code


def test_exit_codes() -> None:
    assert exit_code_for("pass", allow_inconclusive=False) == 0
    assert exit_code_for("fail", allow_inconclusive=False) == 1
    assert exit_code_for("fail", allow_inconclusive=True) == 1
    assert exit_code_for("inconclusive", allow_inconclusive=False) == 2
    assert exit_code_for("inconclusive", allow_inconclusive=True) == 0


def test_junit_has_one_case_per_gate_and_fails_the_failing_one() -> None:
    root = ET.fromstring(junit_xml(_decision({"cpu_utilisation": "pass", "memory_leak": "fail"})))
    cases = {c.get("name"): c for c in root.iter("testcase")}
    assert set(cases) == {"cpu_utilisation", "memory_leak"}
    assert cases["cpu_utilisation"].find("failure") is None
    failure = cases["memory_leak"].find("failure")
    assert failure is not None and "memory_leak said fail" in failure.get("message", "")
    assert root.get("failures") == "1" and root.get("tests") == "2"


@pytest.mark.parametrize(("allowed", "failures", "skipped"), [(False, "1", "0"), (True, "0", "1")])
def test_junit_inconclusive_fails_unless_allowed(allowed: bool, failures: str, skipped: str) -> None:
    root = ET.fromstring(junit_xml(_decision({"throughput": "inconclusive"}, allow_inconclusive=allowed)))
    assert (root.get("failures"), root.get("skipped")) == (failures, skipped)


def test_junit_without_any_evaluation_is_a_failure() -> None:
    decision = _decision({})
    decision = dataclasses.replace(decision, reason="evaluation did not complete: TimeoutError")
    root = ET.fromstring(junit_xml(decision))
    assert root.get("failures") == "1"
    assert "TimeoutError" in root.find("testcase/failure").get("message", "")  # type: ignore[union-attr]


def test_summary_names_the_failing_gate_and_the_sample_counts() -> None:
    text = summary_markdown(_decision({"latency_e2e_p99": "pass", "memory_leak": "fail"}))
    assert "**FAIL**" in text
    assert "Failed gate(s): memory_leak" in text
    assert "| memory_leak | **fail** | 400/390 |" in text


def test_every_gate_decides_on_the_single_evaluation() -> None:
    config = ci_gate_config(local_site(state_dir=None), None)
    assert config.gates and {g.consecutive_failures for g in config.gates} == {1}
    leak = next(g for g in config.gates if g.name == "memory_leak")
    assert leak.params["warmup_seconds"] == 15  # the quick profile's sizing reached the gate


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"offered_rps": 0.0}, "offered_rps"),
        ({"duration_s": -1.0}, "duration_s"),
        ({"warmup_s": -1.0}, "warmup_s"),
        ({"canary_weight": 100}, "canary_weight"),
    ],
)
def test_bad_options_are_named(changes: dict, message: str, tmp_path: Path) -> None:
    values = {"offered_rps": 20.0, "duration_s": 40.0, "warmup_s": 10.0, "reports_dir": tmp_path}
    with pytest.raises(ValueError, match=message):
        GateOnceOptions(**{**values, **changes})


def test_a_local_site_needs_both_arms() -> None:
    with pytest.raises(ValueError, match="arms"):
        local_site(state_dir=None, arms={"baseline": ARMS["baseline"]})


def test_usage_errors_exit_3_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        ci_gate_main(["--rate", "fast"])
    assert info.value.code == 3
    bad = tmp_path / "gates.yaml"
    bad.write_text("version: 1\ngates:\n  - {name: x, kind: no_such_kind, queries: {}}\n")
    code = ci_gate_main(["--gate-file", str(bad), "--reports-dir", str(tmp_path / "reports")])
    assert code == 3
    assert "no_such_kind" in capsys.readouterr().err
    assert not (tmp_path / "reports").exists()  # nothing was started or written


def test_a_dry_run_says_whether_the_window_can_hold_a_pass(capsys: pytest.CaptureFixture[str]) -> None:
    """At 20 req/s 50/50 the local check's P99 gates need about 100 s of samples: 120 s can pass, 40 s
    cannot (a healthy candidate would be inconclusive), and a cluster's plan needs the Gateway's rate."""
    assert ci_gate_main(["--dry-run", "--rate", "20", "--duration", "120"]) == 0
    out = capsys.readouterr().out
    assert "candidate 50% (10 req/s), a 120s window after a 10s warm-up" in out
    assert "within the window" in out and "WARNING" not in out
    assert ci_gate_main(["--dry-run", "--rate", "20", "--duration", "40"]) == 1
    assert (
        "past the 40s window: a healthy candidate's check will be inconclusive (exit 2)"
        in capsys.readouterr().out
    )
    cluster = [
        "--kube-namespace",
        "serving",
        "--release",
        "vlm",
        "--prometheus-url",
        "http://prometheus:9090",
    ]
    assert ci_gate_main(["--dry-run", *cluster]) == 3
    assert "needs --rate" in capsys.readouterr().err
    assert ci_gate_main(["--dry-run", *cluster, "--rate", "50", "--duration", "600"]) == 0
    assert "gates: defaults\n" in capsys.readouterr().out  # the shipped bounds, no local sizing

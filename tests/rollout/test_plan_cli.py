"""`python -m rollout plan` and `run --dry-run`: when each gate can pass a healthy canary, per step."""

import json
from dataclasses import replace

from rollout.__main__ import main
from rollout.plan import default_assumptions, get_profile


def test_the_demo_profile_reaches_its_evidence_within_every_maximum_bake(capsys):
    assert main(["plan", "--profile", "quick"]) == 0
    out = capsys.readouterr().out
    assert "step 1: 25% canary (5 req/s), bake 70s, max bake 420s (36 looks: a pass holds across them)" in out
    for gate in ("cpu_utilisation", "latency_e2e_p99", "throughput", "error_rate", "memory_leak"):
        assert f"  {gate} " in out
    assert "WARNING" not in out


def test_the_packaged_harms_at_a_demo_rate_warn_and_exit_1(capsys):
    rc = main(["plan", "--profile", "default", "--gate-profile", "kubernetes", "--json"])
    plan = json.loads(capsys.readouterr().out)
    assert rc == 1 and plan["rate_rps"] == 18.0
    first = plan["steps"][0]
    assert first["canary_weight"] == 10 and not first["reachable"]
    # 0.1% errors at 1.8 req/s on the held step's pass bound (99.85% across the step's 47 looks): no error in
    # ~7,200 requests, about 67 minutes (docs/gates.md)
    assert 63 * 60 < first["gates"]["error_rate"] < 71 * 60
    assert first["pass_after_s"] == max(first["gates"].values())


def test_a_longer_step_or_a_higher_rate_is_what_the_plan_asks_for(capsys):
    assert main(["plan", "--profile", "default", "--max-bake", "60,60,60", "--bake", "30,30,30"]) == 1
    assert "WARNING: latency_e2e_p99 needs" in capsys.readouterr().out
    assert (
        main(
            ["plan", "--profile", "default", "--rate", "200", "--max-bake", "90,90,90", "--bake", "30,30,30"]
        )
        == 0
    )


def test_run_dry_run_prints_the_plan_and_starts_nothing(tmp_path, capsys):
    state = tmp_path / "state"
    assert main(["run", "--profile", "quick", "--dry-run", "--state-dir", str(state)]) == 0
    assert "every gate can pass after" in capsys.readouterr().out
    assert not state.exists()


def test_inter_token_samples_per_request_follow_the_load_tests_tokens():
    quick = get_profile("quick")
    assert default_assumptions(quick).per_request("itl_ms") == 7  # --max-tokens 8: 7 gaps
    plain = replace(quick, loadtest_args=())
    assert default_assumptions(plain).per_request("itl_ms") == 63  # loadtest/vlm.py's default of 64


def test_other_steps_or_bakes_get_the_default_maximum_bakes(capsys):
    assert main(["plan", "--profile", "default", "--steps", "50", "--bake", "600"]) == 0
    assert "step 1: 50% canary (9 req/s), bake 600s, max bake 1800s" in capsys.readouterr().out

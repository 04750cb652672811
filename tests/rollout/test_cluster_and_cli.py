import math

import pytest

from rollout.__main__ import main
from rollout.plan import get_profile
from rollout.sites.cluster import ClusterTarget, chart_fullname, cluster_site


def test_chart_naming_matches_the_helm_helper():
    assert chart_fullname("demo") == "demo-sglang-vlm-canary"
    assert chart_fullname("my-sglang-vlm-canary") == "my-sglang-vlm-canary"
    assert len(chart_fullname("x" * 60)) == 40


def test_cluster_target_prefers_the_jobs_environment():
    env = {
        "ROLLOUT_HTTPROUTE": "r",
        "ROLLOUT_STATE_CONFIGMAP": "cm",
        "ROLLOUT_PROMETHEUS_URL": "http://p:9090",
    }
    target = ClusterTarget.resolve(namespace="ml", release="demo", env=env)
    assert (target.state_configmap, target.prometheus_url) == ("cm", "http://p:9090")
    assert cluster_site(target).router.describe()["route"] == "r"
    assert target.canary_deployment == "demo-sglang-vlm-canary-canary"
    with pytest.raises(ValueError, match="--prometheus-url"):
        ClusterTarget.resolve(namespace="ml", release="demo", env={}).require_prometheus()


def test_profiles_give_every_arm_300_samples_with_margin_at_every_step_and_fit_their_time_budget():
    for name, budget_s in (("quick", 180), ("default", 600)):
        p = get_profile(name)
        for weight, bake in zip(p.steps, p.bake_s, strict=True):
            for share in (weight, 100 - weight):
                if share:
                    assert p.request_rate * share / 100 * (bake - p.settle_s) >= 330, (name, weight, share)
        # A step passes at its first evaluation (on the step's interval grid) at or past its bake.
        steps_s = sum(math.ceil(bake / p.interval_s) * p.interval_s for bake in p.bake_s)
        startup_and_report_s = 30
        assert steps_s + startup_and_report_s <= budget_s, name


def test_bad_profile_override_is_a_usage_error_naming_the_value(capsys):
    assert main(["run", "--steps", "50,10", "--state-dir", "/nonexistent/x"]) == 3
    assert "steps (50, 10)" in capsys.readouterr().err


def test_status_with_no_state(tmp_path, capsys):
    assert main(["status", "--state-dir", str(tmp_path)]) == 0
    assert "no rollout recorded" in capsys.readouterr().out


def test_rollback_with_no_state_fails_clearly(tmp_path, capsys):
    assert main(["rollback", "--reason", "x", "--state-dir", str(tmp_path)]) == 1
    assert "nothing to roll back" in capsys.readouterr().err

"""The chart's notifications: webhook URLs reach the orchestrator Job from a Secret (secretKeyRef), the
hooks file it mounts names only the variables, and no rendered manifest carries a URL."""

from __future__ import annotations

import json

import pytest
import yaml

from rollout.hooks import parse_hooks, parse_notifications

FULLNAME = "vlm-sglang-vlm-canary"
NOTIFY_VALUES = {
    "orchestrator": {
        "notifications": {
            "secretName": "rollout-notify",
            "targets": [
                {
                    "name": "team-slack",
                    "type": "slack",
                    "secretKey": "slack",
                    "events": ["promoted", "reverted", "rolled-back"],
                },
                {
                    "name": "audit",
                    "type": "webhook",
                    "secretKey": "audit-url",
                    "timeoutSeconds": 3,
                    "attempts": 5,
                    "backoffSeconds": 0.5,
                    "budgetSeconds": 20,
                },
            ],
        }
    }
}


@pytest.fixture(scope="module")
def notify_values_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("values") / "notifications-values.yaml"
    path.write_text(yaml.safe_dump(NOTIFY_VALUES))
    return str(path)


def orchestrator_job(out):
    (job,) = [j for j in out.of_kind("Job") if j["metadata"]["name"].startswith(f"{FULLNAME}-rollout-")]
    return job


def test_targets_get_their_urls_from_the_secret_and_the_job_mounts_the_hooks_file(render, notify_values_file):
    out = render(notify_values_file)
    job = orchestrator_job(out)
    pod = job["spec"]["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == "orchestrator"]
    env = {e["name"]: e for e in container["env"]}
    assert env["ROLLOUT_NOTIFY_TEAM_SLACK_URL"]["valueFrom"] == {
        "secretKeyRef": {"name": "rollout-notify", "key": "slack", "optional": True}
    }
    assert env["ROLLOUT_NOTIFY_AUDIT_URL"]["valueFrom"]["secretKeyRef"]["key"] == "audit-url"
    assert "value" not in env["ROLLOUT_NOTIFY_TEAM_SLACK_URL"]
    hooks_path = env["ROLLOUT_HOOKS_CONFIG"]["value"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "notifications"]
    assert hooks_path == f"{mount['mountPath']}/hooks.yaml" and mount["readOnly"] is True
    (volume,) = [v for v in pod["volumes"] if v["name"] == "notifications"]
    config_map = out.get("ConfigMap", volume["configMap"]["name"])

    # The mounted file is what `rollout run --hooks` reads: no hooks, the two targets, URLs by variable.
    hooks_file = yaml.safe_load(config_map["data"]["hooks.yaml"])
    assert parse_hooks(hooks_file, "chart") == ()
    slack, audit = parse_notifications(hooks_file, "chart")
    assert (slack.name, slack.type, slack.url_env, slack.events) == (
        "team-slack",
        "slack",
        "ROLLOUT_NOTIFY_TEAM_SLACK_URL",
        ("promoted", "reverted", "rolled-back"),
    )
    assert (audit.url_env, audit.timeout_s, audit.attempts, audit.backoff_s, audit.budget_s) == (
        "ROLLOUT_NOTIFY_AUDIT_URL",
        3.0,
        5,
        0.5,
        20.0,
    )
    assert {t.url_env for t in (slack, audit)} <= set(env)


def test_no_rendered_manifest_carries_a_url_for_the_notifications(render, notify_values_file):
    out = render(notify_values_file)
    for obj in out.objects:
        text = json.dumps(obj)
        assert "hooks.slack.com" not in text
        if obj["kind"] in ("ConfigMap", "Secret") and "notifications" in obj["metadata"]["name"]:
            assert "http" not in text, f"{obj['kind']} {obj['metadata']['name']} holds a URL"
    assert not out.of_kind("Secret")  # the chart never creates the Secret: the URLs are not values


def test_without_targets_nothing_is_rendered_for_notifications(render):
    out = render()
    container = orchestrator_job(out)["spec"]["template"]["spec"]["containers"][0]
    names = {e["name"] for e in container["env"]}
    assert "ROLLOUT_HOOKS_CONFIG" not in names and not any(n.startswith("ROLLOUT_NOTIFY_") for n in names)
    assert not [c for c in out.of_kind("ConfigMap") if c["metadata"]["name"].endswith("-notifications")]


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (
            (
                "orchestrator.notifications.secretName=rollout-notify",
                "orchestrator.notifications.targets[0].name=chat",
                "orchestrator.notifications.targets[0].type=slack",
                "orchestrator.notifications.targets[0].secretKey=slack",
                "orchestrator.notifications.targets[0].url=https://hooks.slack.com/services/T/B/x",
            ),
            "additional properties 'url' not allowed",
        ),
        (
            (
                "orchestrator.notifications.targets[0].name=chat",
                "orchestrator.notifications.targets[0].type=slack",
                "orchestrator.notifications.targets[0].secretKey=slack",
            ),
            "orchestrator.notifications.targets is set but orchestrator.notifications.secretName is empty",
        ),
        (
            (
                "orchestrator.notifications.secretName=rollout-notify",
                "orchestrator.notifications.targets[0].name=chat",
                "orchestrator.notifications.targets[0].type=teams",
                "orchestrator.notifications.targets[0].secretKey=slack",
            ),
            "at '/orchestrator/notifications/targets/0/type': value must be one of",
        ),
        (
            (
                "orchestrator.notifications.secretName=rollout-notify",
                "orchestrator.notifications.targets[0].name=chat",
                "orchestrator.notifications.targets[0].type=slack",
                "orchestrator.notifications.targets[0].secretKey=slack",
                "orchestrator.notifications.targets[0].events[0]=promote",
            ),
            "at '/orchestrator/notifications/targets/0/events/0': value must be one of",
        ),
        (
            (
                "orchestrator.notifications.secretName=rollout-notify",
                "orchestrator.notifications.targets[0].name=chat",
                "orchestrator.notifications.targets[0].type=slack",
                "orchestrator.notifications.targets[0].secretKey=a",
                "orchestrator.notifications.targets[1].name=chat",
                "orchestrator.notifications.targets[1].type=webhook",
                "orchestrator.notifications.targets[1].secretKey=b",
            ),
            'name "chat" is used twice',
        ),
    ],
)
def test_bad_notification_values_are_refused(render_error, sets, message):
    assert message in render_error(*sets)

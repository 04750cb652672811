import json

import pytest

from infra.net import free_port
from rollout.hooks import Hook, call_hook, load_hooks, run_hooks


def test_url_hook_posts_the_context_merged_with_its_body(receiver):
    result = call_hook(
        Hook(kind="pre-step", url=receiver.url("/hook"), body={"cpu_burn_ms": 40}),
        {"run_id": "r", "canary_weight": 10},
    )
    assert result.ok and result.detail == "HTTP 200"
    assert receiver.posts == [
        ("/hook", {"hook": "pre-step", "run_id": "r", "canary_weight": 10, "cpu_burn_ms": 40})
    ]


def test_url_hook_error_status_and_unreachable_url_are_failures_not_exceptions(receiver):
    receiver.statuses = [503]
    assert not call_hook(Hook(kind="rollback", url=receiver.url("/hook")), {}).ok
    result = call_hook(Hook(kind="rollback", url=f"http://127.0.0.1:{free_port()}/", timeout_s=1), {})
    assert not result.ok and "unreachable" in result.detail


def test_command_hook_gets_context_in_env_and_stdin(tmp_path):
    out = tmp_path / "out"
    hook = Hook(
        kind="post-step",
        command=("sh", "-c", f'echo "$ROLLOUT_RUN_ID $ROLLOUT_CANARY_WEIGHT" > {out}; cat >> {out}'),
    )
    assert call_hook(hook, {"run_id": "r7", "canary_weight": 50}).ok
    first, second = out.read_text().splitlines()
    assert first == "r7 50" and json.loads(second)["hook"] == "post-step"


def test_command_hook_timeout_is_a_failure():
    result = call_hook(Hook(kind="pre-step", command=("sleep", "5"), timeout_s=0.2), {})
    assert not result.ok and "did not run to completion" in result.detail


def test_run_hooks_selects_by_kind_and_step():
    hooks = (
        Hook(kind="pre-step", command=("true",), steps=(50,)),
        Hook(kind="pre-step", command=("false",)),
        Hook(kind="rollback", command=("true",)),
    )
    assert [r.ok for r in run_hooks(hooks, "pre-step", {"canary_weight": 10})] == [False]
    assert [r.ok for r in run_hooks(hooks, "pre-step", {"canary_weight": 50})] == [True, False]


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (
            "  - {kind: pre-step, url: 'http://x'}\n  - {kind: sometimes, url: 'http://x'}\n",
            r"hooks\[1\].*'sometimes'",
        ),
        ("  - {kind: rollback, url: 'http://x', command: [true]}\n", "exactly one of url or command"),
        ("  - {kind: rollback, urll: 'http://x'}\n", "urll"),
    ],
)
def test_load_hooks_names_the_bad_entry(tmp_path, entries, message):
    path = tmp_path / "hooks.yaml"
    path.write_text("hooks:\n" + entries)
    with pytest.raises(ValueError, match=message):
        load_hooks(path)


def test_load_hooks_reads_a_timeout(tmp_path):
    path = tmp_path / "hooks.yaml"
    path.write_text("hooks:\n  - {kind: rollback, command: [echo, hi], timeout_s: 3}\n")
    assert load_hooks(path) == (Hook(kind="rollback", command=("echo", "hi"), timeout_s=3.0),)

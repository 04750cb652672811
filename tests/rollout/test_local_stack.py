from pathlib import Path

from rollout.local_stack import ArmSpec, LocalStack, scrape_configs
from rollout.processes import ProcessRef, spawn_detached, terminate


def test_every_arm_target_is_labelled_with_its_arm_and_the_router_is_scraped_without_one():
    jobs = scrape_configs(
        {"baseline": "http://127.0.0.1:1001", "canary": "http://127.0.0.1:1002"}, "http://127.0.0.1:1003"
    )
    by_job = {j["job_name"]: j["static_configs"][0] for j in jobs}
    assert by_job["baseline"] == {"targets": ["127.0.0.1:1001"], "labels": {"arm": "baseline"}}
    assert by_job["canary"] == {"targets": ["127.0.0.1:1002"], "labels": {"arm": "canary"}}
    assert by_job["router"] == {"targets": ["127.0.0.1:1003"]}


def test_embedded_arm_command_and_a_replacement_command_line():
    embedded = ArmSpec(arm="baseline", mm_input_mode="per_request", extra_args=("--fault-error-ratio", "0.1"))
    cmd = embedded.command_line(4000)
    assert cmd[1:3] == ["-m", "backend"] and "--port=4000" in cmd and "--mm-input-mode=per_request" in cmd
    assert not any(a.startswith("--cpu-cores") for a in cmd)  # the backend's default: one per TP rank
    assert cmd[-2:] == ["--fault-error-ratio", "0.1"]
    real = ArmSpec(
        arm="canary", mm_input_mode="x", command="python -m sglang.launch_server --port {port} --tp 4"
    )
    assert real.command_line(4001) == ["python", "-m", "sglang.launch_server", "--port", "4001", "--tp", "4"]


def test_dead_parts_and_stop_use_the_recorded_processes(tmp_path: Path):
    alive = spawn_detached(["sleep", "30"], log_path=tmp_path / "a.log")
    gone = spawn_detached(["true"], log_path=tmp_path / "b.log")
    terminate(gone)
    stack = LocalStack(
        run_dir=tmp_path,
        arms={
            "baseline": {"url": "u", "process": alive.as_dict()},
            "canary": {"url": "u", "process": gone.as_dict()},
        },
        prometheus={"url": "p", "process": None},
        loadtest={
            "process": ProcessRef(pid=alive.pid, start_ticks=alive.start_ticks + 1).as_dict()
        },  # recycled pid
        router_url="r",
    )
    try:
        assert stack.dead_parts() == ["canary", "loadtest"]
        assert LocalStack.from_dict(stack.as_dict()).as_dict() == stack.as_dict()
        stack.stop(("loadtest", "baseline"), say=lambda _: None)
        assert stack.dead_parts() == ["baseline", "canary", "loadtest"]
    finally:
        terminate(alive)


def test_rollback_after_a_finished_run_with_its_stack_stopped_only_records_the_request(tmp_path: Path):
    from dataclasses import replace

    from rollout.controller import new_state
    from rollout.events import Rollback
    from rollout.plan import Phase, get_profile
    from rollout.routers.local import LocalProxyRouter
    from rollout.run import rollback
    from rollout.sites.local import local_site
    from rollout.state import FileStateStore

    gone = spawn_detached(["true"], log_path=tmp_path / "b.log")
    terminate(gone)
    stack = LocalStack(
        run_dir=tmp_path,
        arms={
            "baseline": {"url": "u", "process": gone.as_dict()},
            "canary": {"url": "u", "process": gone.as_dict()},
        },
        prometheus={"url": "http://127.0.0.1:9", "process": None},
        loadtest={},
        router_url="r",
    )
    router = LocalProxyRouter(admin_url="http://127.0.0.1:9")
    store = FileStateStore(tmp_path / "state")
    state = new_state(run_id="r", profile=get_profile("quick"), router=router, stack=stack.as_dict(), now=1.0)
    store.save(replace(state, phase=Phase.PROMOTED, finished_at=2.0))
    lines: list[str] = []
    after = rollback(
        local_site(state_dir=tmp_path / "state"),
        reports_dir=tmp_path / "reports",
        who="w",
        reason="why",
        say=lines.append,
    )
    assert after is not None and after.phase is Phase.PROMOTED
    done = after.last_event(Rollback)
    assert done is not None and done.who == "w" and done.changed is False and "nothing to move" in lines[-1]

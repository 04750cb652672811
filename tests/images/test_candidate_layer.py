"""The candidate layer on a stand-in for the user's sglang image (Python and the pinned sglang wheel, no GPU
stack): baseline and candidate built by `make images`'s code path, the plugin's compatibility check run
inside the container, and an sglang that differs from the manifest refused, at start and at build."""

from __future__ import annotations

import pytest
from image_harness import TEST_REPOSITORY, run_container

from sglang_plugin.manifest import SCHEDULER
from sglang_plugin.wheel import cached_wheel, module_path, read_sources

pytestmark = pytest.mark.images

INSTALLED_SCHEDULER = f"/opt/sglang/lib/python3.11/site-packages/{module_path(SCHEDULER)}"
# Two differences a later sglang could bring: a changed signature and a removed method.
CHANGES = (
    (
        "def process_input_requests(self, recv_reqs: List):",
        "def process_input_requests(self, recv_reqs: List, budget: int):",
    ),
    ("def _process_and_broadcast_mm_inputs(", "def _broadcast_mm_inputs("),
)
DIFFERENCES = (
    "Scheduler.process_input_requests: has parameters (self, recv_reqs, budget), expected (self, recv_reqs)",
    "Scheduler._process_and_broadcast_mm_inputs: is missing",
)


def changed_scheduler() -> str:
    source = read_sources(cached_wheel(), {SCHEDULER})[SCHEDULER]
    for old, new in CHANGES:
        assert source.count(old) == 1, old
        source = source.replace(old, new)
    return source


def test_baseline_carries_the_pinned_sglang(engine, arms):
    proc = run_container(
        engine,
        arms["baseline"].ref,
        "python3",
        "-c",
        "import importlib.metadata as m; print(m.version('sglang'))",
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "0.5.23", proc.stderr


def test_candidate_checks_the_installed_sglang_then_starts_its_command(engine, arms):
    proc = run_container(engine, arms["candidate"].ref, "python3", "-c", "print('serving')")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "serving"
    assert "compatible: installed sglang 0.5.23 has every name and signature in the manifest" in proc.stderr
    # The plugin is registered where sglang's loader looks, with the mode the image sets.
    script = (
        "import importlib.metadata as m, os\n"
        "print([e.value for e in m.entry_points(group='sglang.srt.plugins')], os.environ['SGLANG_MM_INPUT_MODE'])"
    )
    proc = run_container(engine, arms["candidate"].ref, "python3", "-c", script)
    assert proc.stdout.strip() == "['sglang_plugin.entry:load'] sharded", proc.stderr


def test_candidate_refuses_to_start_on_a_different_sglang_with_the_differences(engine, arms, tmp_path):
    scheduler = tmp_path / "scheduler.py"
    scheduler.write_text(changed_scheduler())
    scheduler.chmod(0o644)
    proc = run_container(
        engine,
        arms["candidate"].ref,
        "python3",
        "-c",
        "print('serving')",
        options=("-v", f"{scheduler}:{INSTALLED_SCHEDULER}:ro"),
    )
    print(proc.stderr)
    assert proc.returncode == 1
    assert "serving" not in proc.stdout  # the command never ran
    assert "sglang_plugin refuses to start: sglang 0.5.23 does not have" in proc.stderr
    for difference in DIFFERENCES:
        assert f"  - sglang.srt.managers.scheduler.{difference}" in proc.stderr


def test_candidate_build_fails_on_a_different_sglang(images, engine, sglang_standin, tmp_path, capfd):
    (tmp_path / "scheduler.py").write_text(changed_scheduler())
    containerfile = tmp_path / "Containerfile"
    containerfile.write_text(
        f"ARG BASE_IMAGE\nFROM ${{BASE_IMAGE}}\nCOPY scheduler.py {INSTALLED_SCHEDULER}\n"
    )
    changed = images.build_image(
        engine,
        images.ImageSpec(
            ref=f"{TEST_REPOSITORY}/sglang-standin:0.5.23-changed",
            containerfile=containerfile,
            files=(("scheduler.py", tmp_path / "scheduler.py"),),
            build_args=(("BASE_IMAGE", sglang_standin),),
            bases=(sglang_standin,),
        ),
    )
    names = {
        "sglang": changed.ref,
        "baseline": f"{TEST_REPOSITORY}/baseline:0.5.23-changed",
        "candidate": f"{TEST_REPOSITORY}/candidate:0.5.23-changed",
    }
    with pytest.raises(images.BuildError):
        images.build(["arms"], engine, names=names)
    output = capfd.readouterr()
    assert "sglang_plugin refuses to start" in output.out + output.err
    assert not engine.exists(names["candidate"])

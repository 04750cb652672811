"""The toolkit image itself: exactly the runtime set, product code only, the chart's user and read-only root,
the three entry points, its size, and a rebuild of an unchanged tree that builds nothing."""

from __future__ import annotations

import json
import tarfile
import time
import tomllib

import pytest
from image_harness import installed_distributions, run_container

pytestmark = pytest.mark.images

# The chart's pods: user 65532, read-only root, only /tmp writable (orchestrator-job.yaml, loadtest.yaml).
AS_THE_CHART_RUNS_IT = ("--user", "65532:65532", "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL")
# Far above today's ~710 MB, far below what a GPU stack would add (torch alone pulls ~2.8 GB of CUDA wheels).
SIZE_LIMIT_BYTES = 1_000_000_000


def test_python_packages_are_exactly_the_locked_runtime_set(images, engine, toolkit):
    installed = installed_distributions(engine, toolkit.ref)
    locked = {name: version for name, (version, _) in images.read_lock().items()}
    print(f"{len(installed)} distributions in {toolkit.ref}:")
    for name in sorted(installed):
        print(f"  {name}=={installed[name]}")
    assert installed == locked, {
        "in the image, not locked": sorted(installed.keys() - locked.keys()),
        "locked, not in the image": sorted(locked.keys() - installed.keys()),
        "other version": sorted(n for n in installed.keys() & locked.keys() if installed[n] != locked[n]),
    }
    assert not any(name == "torch" or name.startswith("nvidia-") for name in installed)
    assert not {"pip", "setuptools", "wheel"} & installed.keys()  # installed from a separate pip venv
    # Of the dev extra only pytest is here: locust declares it (its pytest-style locustfiles).
    project = tomllib.loads((images.ROOT / "pyproject.toml").read_text())["project"]
    dev = {images.requirement_name(r) for r in project["optional-dependencies"]["dev"]}
    assert dev & installed.keys() == {"pytest"}


def test_holds_the_toolkit_packages_and_nothing_else_of_the_repository(images, engine, toolkit):
    proc = run_container(
        engine, toolkit.ref, "sh", "-c", "ls /opt/sglang-vlm-canary; ls -A /run/secrets 2>/dev/null; true"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == sorted(images.TOOLKIT_PACKAGES)  # and the build secret is gone


def test_runs_as_the_charts_user_with_a_read_only_root(engine, toolkit):
    assert engine.inspect(toolkit.ref, "{{.Config.User}}") == "65532:65532"
    proc = run_container(engine, toolkit.ref, "sh", "-c", "id -u; touch /opt/x 2>/dev/null || echo read-only")
    assert proc.stdout.split() == ["65532", "read-only"], proc.stderr


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (("python", "-m", "rollout", "--help"), "usage: python -m rollout"),
        (("python", "-m", "gates", "--help"), "usage: python -m gates"),
        (("locust", "-f", "loadtest/vlm.py", "--list"), "OpenLoopUser"),  # the locustfile imports
    ],
    ids=["rollout", "gates", "locust"],
)
def test_entry_points(engine, toolkit, command, expected):
    proc = run_container(engine, toolkit.ref, *command, options=AS_THE_CHART_RUNS_IT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert expected in proc.stdout


def test_size_is_reported_and_bounded(engine, toolkit):
    size = engine.size(toolkit.ref)
    print(f"toolkit image {toolkit.ref}: {size / 1e6:.0f} MB")
    assert size < SIZE_LIMIT_BYTES


def test_unchanged_tree_rebuilds_nothing_and_the_archive_names_the_image(images, engine, toolkit):
    # The tree as it is now: in a shared work tree it may have changed since the session's build.
    current = images.build(["toolkit"], engine)["toolkit"]
    began = time.monotonic()
    again = images.build(["toolkit"], engine)["toolkit"]
    seconds = time.monotonic() - began
    print(f"rebuild of an unchanged tree: {seconds:.2f}s")
    assert not again.built and again.image_id == current.image_id and again.hash_ref == current.hash_ref
    assert seconds < 30
    archive = images.archive_path(toolkit.ref)
    with tarfile.open(archive) as tar:
        index_file = tar.extractfile("index.json")
        assert index_file is not None
        index = json.load(index_file)
    # What `ctr images import` / `kind load image-archive` name the image: the chart's default reference.
    names = [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]]
    assert names == [again.ref] == [toolkit.ref]

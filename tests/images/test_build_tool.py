"""tools/images.py's decisions, against a recording stand-in for the engine CLI (no container is built):
build once per content hash, tag and prune, skip the arms without a local sglang image, the same flags
for podman and docker."""

from __future__ import annotations

import json
import re
import stat
import sys
import tomllib
from pathlib import Path

import pytest
from image_harness import images_tool

images = images_tool()

# Images live in a JSON file: {ref: id}. Every call is logged with the variables that matter.
FAKE_ENGINE = """\
import json, os, sys
from pathlib import Path
here = Path(sys.argv[0]).parent
store_path, log_path = here / "store.json", here / "calls.jsonl"
store = json.loads(store_path.read_text()) if store_path.exists() else {}
args = sys.argv[1:]
with log_path.open("a") as log:
    env = {k: os.environ.get(k) for k in ("CONTAINERS_CONF", "DOCKER_BUILDKIT")}
    log.write(json.dumps({"args": args, "env": env}) + "\\n")
if args[:2] == ["image", "inspect"]:
    ref = args[-1]
    if ref not in store:
        sys.exit(f"no such image {ref}")
    if args[3] == "{{json .RepoTags}}":
        print(json.dumps([r for r, i in store.items() if i == store[ref]]))
    else:
        print(store[ref] if args[3] == "{{.Id}}" else 1000)
elif args[0] == "build":
    tags = [args[i + 1] for i, a in enumerate(args) if a == "-t"]
    image_id = f"id-{len(store)}"
    store.update({t: image_id for t in tags})
elif args[0] == "tag":
    store[args[2]] = store[args[1]]
elif args[0] == "rmi":
    store.pop(args[1], None)
store_path.write_text(json.dumps(store))
"""


def fake_engine(tmp_path: Path, name: str, images_there: dict[str, str] | None = None):
    folder = tmp_path / "engine"
    folder.mkdir()
    script = folder / name
    script.write_text(f"#!{sys.executable}\n{FAKE_ENGINE}")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    (folder / "store.json").write_text(json.dumps(images_there or {}))
    return images.Engine(str(script))


def calls(engine) -> list[dict]:
    log = Path(engine.command).parent / "calls.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def builds(engine) -> list[list[str]]:
    return [c["args"] for c in calls(engine) if c["args"][0] == "build"]


def spec(tmp_path: Path, content: str = "one") -> object:
    (tmp_path / "Containerfile").write_text("FROM ${BASE}\nCOPY a /a\n")
    (tmp_path / "a").write_text(content)
    return images.ImageSpec(
        ref="localhost/x/app:1.0",
        containerfile=tmp_path / "Containerfile",
        files=(("a", tmp_path / "a"),),
        build_args=(("BASE", "localhost/x/base:1"),),
        bases=("localhost/x/base:1",),
        secrets=(("pip-ca", tmp_path / "a"),),
    )


def test_unchanged_sources_build_once_and_a_change_builds_again(tmp_path):
    engine = fake_engine(tmp_path, "podman", {"localhost/x/base:1": "base-id"})
    first = images.build_image(engine, spec(tmp_path))
    assert first.built and first.hash_ref.startswith("localhost/x/app:src-")
    (build,) = builds(engine)
    assert build[build.index("-t") + 1 :][:3] == ["localhost/x/app:1.0", "-t", first.hash_ref]
    assert "--secret" in build and f"id=pip-ca,src={tmp_path / 'a'}" in build
    assert calls(engine)[0]["env"]["CONTAINERS_CONF"] == str(images.CONTAINERS_CONF)

    again = images.build_image(engine, spec(tmp_path))
    assert not again.built and again.hash_ref == first.hash_ref and len(builds(engine)) == 1
    assert ["tag", first.hash_ref, "localhost/x/app:1.0"] in [c["args"] for c in calls(engine)]

    changed = images.build_image(engine, spec(tmp_path, "two"))
    assert changed.built and changed.hash_ref != first.hash_ref and len(builds(engine)) == 2
    assert ["rmi", first.hash_ref] in [c["args"] for c in calls(engine)]  # the stale hash tag is pruned


def test_only_the_replaced_build_is_pruned(tmp_path):
    # Another tag of the same repository (another variant) keeps its hash tag.
    other = "localhost/x/app:src-0000000000000000"
    engine = fake_engine(
        tmp_path, "podman", {"localhost/x/base:1": "base-id", "localhost/x/app:other": "o", other: "o"}
    )
    assert images.build_image(engine, spec(tmp_path)).built and len(builds(engine)) == 1
    assert not [c for c in calls(engine) if c["args"][0] == "rmi"]
    assert engine.exists(other)


def test_a_new_base_image_rebuilds(tmp_path):
    engine = fake_engine(tmp_path, "podman", {"localhost/x/base:1": "base-id"})
    first = images.build_image(engine, spec(tmp_path))
    store = Path(engine.command).parent / "store.json"
    store.write_text(json.dumps(json.loads(store.read_text()) | {"localhost/x/base:1": "new-base-id"}))
    assert images.build_image(engine, spec(tmp_path)).hash_ref != first.hash_ref


def test_docker_builds_with_buildkit(tmp_path):
    engine = fake_engine(tmp_path, "docker", {"localhost/x/base:1": "base-id"})
    images.build_image(engine, spec(tmp_path))
    (build,) = [c for c in calls(engine) if c["args"][0] == "build"]
    assert build["env"]["DOCKER_BUILDKIT"] == "1" and build["env"]["CONTAINERS_CONF"] is None


def test_arms_are_skipped_in_one_line_without_a_local_sglang_image(tmp_path, monkeypatch, capsys):
    engine = fake_engine(tmp_path, "podman")
    monkeypatch.setattr(images, "ensure_tools", lambda engine: None)
    assert images.build(["arms"], engine, names=images.image_names({})) == {}
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "[images] baseline and candidate: skipped: lmsysorg/sglang:v0.5.23 is not in podman's local storage "
        "(`podman pull lmsysorg/sglang:v0.5.23` first, or set SGLANG_IMAGE)"
    ]
    assert builds(engine) == []


def test_unknown_engine_is_refused():
    with pytest.raises(images.BuildError, match="use podman or docker"):
        images.Engine.from_env({"ENGINE": "nerdctl"})


def test_candidate_packaging_registers_the_repositorys_entry_point_and_ships_the_plugin_only():
    ours = tomllib.loads((images.ROOT / "pyproject.toml").read_text())
    candidate = tomllib.loads((images.IMAGES / "candidate" / "pyproject.toml").read_text())
    group = "sglang.srt.plugins"
    assert candidate["project"]["entry-points"][group] == ours["project"]["entry-points"][group]
    shipped = {p.rstrip("*") for p in candidate["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert shipped == set(images.PLUGIN_PACKAGES)


def test_baseline_defaults_to_the_pinned_upstream_image():
    baseline = (images.IMAGES / "baseline" / "Containerfile").read_text()
    assert re.search(rf"^ARG SGLANG_IMAGE={re.escape(images.DEFAULT_SGLANG_IMAGE)}$", baseline, re.M)
    assert images.DEFAULT_SGLANG_IMAGE.endswith(f":v{images.chart_app_version()}")


@pytest.mark.parametrize(
    ("argv", "built"),
    [
        (["build"], ["toolkit", "arms"]),
        (["build", "arms"], ["arms"]),
        (["build", "toolkit", "arms"], ["toolkit", "arms"]),
    ],
)
def test_the_command_line_make_images_runs_builds_what_it_names(monkeypatch, argv, built):
    """`make images` runs `tools/images.py build` with no image named: both are built (Python 3.11's
    argparse once refused the empty list against `choices`)."""
    calls: list[list[str]] = []
    monkeypatch.setattr(images, "build", lambda which, engine: calls.append(list(which)) or {})
    monkeypatch.setattr(images.Engine, "from_env", classmethod(lambda cls, env=None: None))
    assert images.main(argv) == 0
    assert calls == [built]


def test_an_unknown_image_name_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        images.main(["build", "toolkit", "gpu"])
    assert exit_info.value.code == 2
    assert "unknown image(s) ['gpu']; choose from ['toolkit', 'arms']" in capsys.readouterr().err

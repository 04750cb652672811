"""The toolkit's runtime set, derived in one place (tools/images.py: pyproject's [project] dependencies that
the toolkit's packages import) and pinned in images/toolkit/requirements.txt."""

from __future__ import annotations

import tomllib

from image_harness import images_tool
from packaging.requirements import Requirement

images = images_tool()


def test_lock_pins_exactly_the_derived_runtime_set():
    derived = images.toolkit_requirements()
    direct = {name: note for name, (_, note) in images.read_lock().items() if note}
    assert direct == {images.requirement_name(r): f"pyproject: {r}" for r in derived}, (
        "images/toolkit/requirements.txt is stale: run `.venv/bin/python tools/images.py lock`"
    )


def test_pinned_versions_satisfy_pyproject():
    pins = images.read_lock()
    for requirement in images.toolkit_requirements():
        parsed = Requirement(requirement)
        version = pins[images.canonical(parsed.name)][0]
        assert parsed.specifier.contains(version, prereleases=True), (requirement, version)


def test_torch_stays_out():
    # A product dependency (the embedded backend's and the plugin's) that the toolkit never imports.
    pyproject = tomllib.loads((images.ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "torch" in {images.requirement_name(r) for r in pyproject}
    assert "torch" not in {images.requirement_name(r) for r in images.toolkit_requirements()}
    assert not any(name == "torch" or name.startswith("nvidia-") for name in images.read_lock())


def test_every_line_is_pinned():
    text = images.TOOLKIT_REQUIREMENTS.read_text()
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert lines and all(images.LOCK_LINE.match(line) for line in lines)
    assert len(images.read_lock()) == len(lines)  # no name twice

"""The chart's default images are what `make images` produces (tools/images.py names them)."""

from __future__ import annotations

import yaml
from helm_chart_render import CHART
from image_harness import images_tool

images = images_tool()


def test_chart_defaults_name_the_built_images():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    names = images.image_names({})

    def ref(image: dict) -> str:
        return f"{image['repository']}:{image['tag'] or app_version}"

    assert ref(values["orchestrator"]["image"]) == names["toolkit"]
    assert ref(values["loadtest"]["image"]) == names["toolkit"]
    assert ref(values["arms"]["baseline"]["image"]) == names["baseline"]
    assert ref(values["arms"]["canary"]["image"]) == names["candidate"]


def test_toolkit_carries_the_project_version_and_the_arms_the_sglang_version():
    from sglang_plugin.manifest import SGLANG_VERSION

    names = images.image_names({})
    assert names["toolkit"].endswith(f":{images.project_version()}")
    assert names["baseline"].endswith(f":{SGLANG_VERSION}") and names["candidate"].endswith(
        f":{SGLANG_VERSION}"
    )


def test_environment_overrides_each_name():
    env = {
        "TOOLKIT_IMAGE": "r/t:1",
        "BASELINE_IMAGE": "r/b:2",
        "CANDIDATE_IMAGE": "r/c:3",
        "SGLANG_IMAGE": "s:4",
    }
    assert images.image_names(env) == {
        "toolkit": "r/t:1",
        "baseline": "r/b:2",
        "candidate": "r/c:3",
        "sglang": "s:4",
    }
    assert images.repository_of("registry:5000/a/b:1.0") == "registry:5000/a/b"
    assert images.repository_of("registry:5000/a/b") == "registry:5000/a/b"

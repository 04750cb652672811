"""The images tier: the images tools/images.py builds, run with podman (the toolkit is built by `make test`
before pytest starts; here that build is a no-op, checked by its content hash)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).parent
# Shared helpers import by their unique module names under importlib mode: this folder's, the chart
# tests' (chart paths, helm on a cluster, the release's series) and the load tests' (the stub endpoint).
for folder in (HERE, HERE.parent / "helm", HERE.parent / "loadtest"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from image_harness import TEST_REPOSITORY, images_tool  # noqa: E402


@pytest.fixture(scope="session")
def images():
    return images_tool()


@pytest.fixture(scope="session")
def engine(images):
    return images.Engine("podman")


@pytest.fixture(scope="session")
def toolkit(images, engine):
    """The toolkit image as `make images` builds it (unchanged tree: nothing is built here)."""
    built = images.build(["toolkit"], engine)["toolkit"]
    print(f"toolkit image: {built.describe()}")
    return built


@pytest.fixture(scope="session")
def sglang_standin(images, engine):
    """A local stand-in for the user's sglang image: the Debian base, Python and the pinned sglang wheel
    (no dependencies, no GPU stack); see sglang-standin.Containerfile."""
    from sglang_plugin.wheel import cached_wheel

    wheel = cached_wheel()
    base = images.base_image(engine)
    spec = images.ImageSpec(
        ref=f"{TEST_REPOSITORY}/sglang-standin:0.5.23",
        containerfile=HERE / "sglang-standin.Containerfile",
        files=((wheel.name, wheel),),
        build_args=(("BASE_IMAGE", base),),
        bases=(base,),
    )
    built = images.build_image(engine, spec)
    print(f"sglang stand-in: {built.describe()}")
    return built.ref


@pytest.fixture(scope="session")
def arms(images, engine, sglang_standin):
    """Baseline and candidate built by the same code path as `make images`, FROM the stand-in."""
    names = {
        "sglang": sglang_standin,
        "baseline": f"{TEST_REPOSITORY}/baseline:0.5.23",
        "candidate": f"{TEST_REPOSITORY}/candidate:0.5.23",
    }
    began = time.monotonic()
    built = images.build(["arms"], engine, names=names)
    print(f"arms on the stand-in in {time.monotonic() - began:.1f}s")
    assert set(built) == {"baseline", "candidate"}
    return built

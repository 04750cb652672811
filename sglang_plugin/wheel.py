"""The pinned sglang wheel as source text: fetched once with pip, read from the zip, never imported."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from sglang_plugin.manifest import ATTRIBUTES, MANIFEST, SGLANG_VERSION

# The wheel is pinned by platform so every host (CI included) inspects the same file.
WHEEL_PLATFORM = "manylinux_2_34_x86_64"
WHEEL_PYTHON = "3.11"
WHEEL_NAME = f"sglang-{SGLANG_VERSION}-cp311-cp311-{WHEEL_PLATFORM}.whl"
WHEEL_SHA256 = "00b3cd5b265ac76c64185fbb6b95424f324ddd9f428d0306b77bc9db9d859937"

DEFAULT_CACHE_DIR = Path(".cache") / "sglang-wheel"


def ensure_wheel(cache_dir: Path = DEFAULT_CACHE_DIR) -> Path:
    """The wheel's path, downloading it with `pip download` on first use."""
    path = cache_dir / WHEEL_NAME
    if path.is_file():
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        f"sglang=={SGLANG_VERSION}",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        WHEEL_PYTHON,
        "--platform",
        WHEEL_PLATFORM,
        "--dest",
        str(cache_dir),
        "--quiet",
    ]
    print(
        f"downloading sglang {SGLANG_VERSION} wheel into {cache_dir} (once) ...", file=sys.stderr, flush=True
    )
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0 or not path.is_file():
        raise RuntimeError(f"pip download of sglang=={SGLANG_VERSION} failed: {proc.stderr.strip()[-2000:]}")
    return path


def cached_wheel(cache_dir: Path = DEFAULT_CACHE_DIR) -> Path:
    """The wheel's path when set-up fetched it (`python -m sglang_plugin.wheel`); tests never download."""
    path = cache_dir / WHEEL_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: the test set-up fetches it once (`make test-unit` or `python -m sglang_plugin.wheel`)"
        )
    if sha256_of(path) != WHEEL_SHA256:
        raise ValueError(
            f"{path} is not the pinned sglang {SGLANG_VERSION} wheel (sha256 differs); delete it"
        )
    return path


def module_path(module: str) -> str:
    return module.replace(".", "/") + ".py"


def read_sources(wheel: Path, modules: set[str] | None = None) -> dict[str, str]:
    """`module name -> source text` for the manifest's modules (or `modules`) found in the wheel."""
    wanted = modules if modules is not None else {e.module for e in MANIFEST} | {a.module for a in ATTRIBUTES}
    sources: dict[str, str] = {}
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for module in wanted:
            member = module_path(module)
            if member in names:
                sources[module] = zf.read(member).decode("utf-8")
    return sources


def sha256_of(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


if __name__ == "__main__":
    ensure_wheel()
    print(cached_wheel())

"""`python -m sglang_plugin check [--installed | --wheel PATH]`: compare the manifest to sglang's source.

Reads source text only (no sglang import, no GPU): the pinned wheel by default (downloaded once into
.cache/sglang-wheel), a wheel file, or the sglang installed in this Python (the candidate image's build
runs this). Exit 0 compatible, 1 incompatible, 2 usage or I/O error.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from .manifest import SGLANG_VERSION, IncompatibleSglang, check_sources
from .wheel import DEFAULT_CACHE_DIR, ensure_wheel, module_path, read_sources


def installed_sources() -> tuple[dict[str, str], str | None]:
    from .manifest import ATTRIBUTES, MANIFEST, installed_sglang_version

    spec = importlib.util.find_spec("sglang")  # locates the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("sglang is not installed in this Python")
    root = Path(next(iter(spec.submodule_search_locations))).parent
    sources: dict[str, str] = {}
    for module in {e.module for e in MANIFEST} | {a.module for a in ATTRIBUTES}:
        path = root / module_path(module)
        if path.is_file():
            sources[module] = path.read_text(encoding="utf-8")
    return sources, installed_sglang_version()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sglang_plugin", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="compare the compatibility manifest to sglang's source")
    where = check.add_mutually_exclusive_group()
    where.add_argument("--installed", action="store_true", help="the sglang installed in this Python")
    where.add_argument("--wheel", type=Path, help=f"an sglang wheel (default: the pinned {SGLANG_VERSION})")
    check.add_argument(
        "--cache-dir", type=Path, default=DEFAULT_CACHE_DIR, help="where the pinned wheel is kept"
    )
    args = parser.parse_args(argv)

    try:
        if args.installed:
            sources, version = installed_sources()
            origin = f"installed sglang {version}"
        else:
            wheel = args.wheel or ensure_wheel(args.cache_dir)
            if not wheel.is_file():
                raise FileNotFoundError(f"no wheel at {wheel}")
            sources, version = read_sources(wheel), None
            origin = str(wheel)
    except (OSError, RuntimeError) as exc:
        print(f"sglang_plugin check: {exc}", file=sys.stderr)
        return 2
    mismatches = check_sources(sources)
    if mismatches:
        print(IncompatibleSglang(mismatches, version), file=sys.stderr)
        return 1
    print(
        f"compatible: {origin} has every name and signature in the manifest (built against {SGLANG_VERSION})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Copy `loadtest/*.py` into the chart, whose Locust ConfigMap can read only files inside the chart.

    python tools/sync_chart_loadtest.py          # make helm/sglang-vlm-canary/files/loadtest/ a copy
    python tools/sync_chart_loadtest.py --check  # exit 1 if the copy differs from loadtest/

Helm's `.Files.Get` cannot reach outside the chart directory, and a packaged chart must carry its
locustfile, so the chart holds a copy; `make helm-docs` refreshes it and a test proves it current.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "loadtest"
COPY = ROOT / "helm" / "sglang-vlm-canary" / "files" / "loadtest"


def differences(source: Path = SOURCE, copy: Path = COPY) -> list[str]:
    """What differs between the two directories' `*.py` files, one line per file."""
    src = {p.name: p.read_bytes() for p in sorted(source.glob("*.py"))}
    dst = {p.name: p.read_bytes() for p in sorted(copy.glob("*.py"))}
    out = [f"{name}: missing from the chart copy" for name in src.keys() - dst.keys()]
    out += [f"{name}: in the chart copy but not in loadtest/" for name in dst.keys() - src.keys()]
    out += [f"{name}: contents differ" for name in src.keys() & dst.keys() if src[name] != dst[name]]
    return sorted(out)


def sync(source: Path = SOURCE, copy: Path = COPY) -> None:
    copy.mkdir(parents=True, exist_ok=True)
    for stale in copy.glob("*.py"):
        if not (source / stale.name).exists():
            stale.unlink()
    for src in source.glob("*.py"):
        (copy / src.name).write_bytes(src.read_bytes())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="report differences instead of copying")
    args = parser.parse_args(argv)
    if not (SOURCE / "vlm.py").is_file():
        print(f"sync_chart_loadtest: {SOURCE.name}/vlm.py not found", file=sys.stderr)
        return 2
    diff = differences()
    if args.check:
        for line in diff:
            print(f"sync_chart_loadtest: {line}; run `make helm-docs`", file=sys.stderr)
        return 1 if diff else 0
    sync()
    print(f"sync_chart_loadtest: {len(diff)} file(s) updated in the chart copy")
    return 0


if __name__ == "__main__":
    sys.exit(main())

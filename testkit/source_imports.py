"""What the repository's Python sources import, read with `ast` (never imported): for the tests that keep
product code, test kit and benchmarks apart and the runtime dependencies honest."""

from __future__ import annotations

import ast
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST_KIT_AND_BENCHMARKS = ("testkit", "bench")


@dataclass(frozen=True)
class ImportSite:
    path: Path
    line: int
    module: str  # dotted, absolute

    @property
    def top(self) -> str:
        return self.module.split(".")[0]

    def __str__(self) -> str:
        return f"{self.path.relative_to(ROOT).as_posix()}:{self.line}: {self.module}"


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def product_packages() -> tuple[str, ...]:
    """The top-level packages the wheel ships (pyproject's setuptools `include` patterns, `name*`)."""
    patterns = pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    return tuple(sorted({p.rstrip("*").split(".")[0] for p in patterns}))


def python_files(*packages: str) -> list[Path]:
    return sorted(f for package in packages for f in (ROOT / package).rglob("*.py"))


def absolute_imports(path: Path) -> Iterator[ImportSite]:
    """Every `import a.b` and `from a.b import c` in the file (relative imports stay inside their package)."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield ImportSite(path, node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield ImportSite(path, node.lineno, node.module)


def third_party_imports(
    packages: tuple[str, ...], first_party: tuple[str, ...]
) -> dict[str, list[ImportSite]]:
    """Top-level module name -> where the packages import it, for modules neither stdlib nor first party."""
    found: dict[str, list[ImportSite]] = {}
    for path in python_files(*packages):
        for site in absolute_imports(path):
            if site.top in sys.stdlib_module_names or site.top in first_party or site.top == "__future__":
                continue
            found.setdefault(site.top, []).append(site)
    return found

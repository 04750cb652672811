"""Product and test kit apart: no product package imports the test kit or the benchmarks (or runs them as
`python -m testkit...`), and the wheel leaves both out."""

from __future__ import annotations

import ast
import fnmatch
import re

from testkit.source_imports import (
    ROOT,
    TEST_KIT_AND_BENCHMARKS,
    absolute_imports,
    product_packages,
    pyproject,
    python_files,
)

NAMES_A_MODULE = re.compile(rf"^({'|'.join(TEST_KIT_AND_BENCHMARKS)})(\.\w+)*$")


def test_product_packages_are_the_ones_the_project_names():
    assert product_packages() == (
        "backend",
        "gates",
        "infra",
        "loadtest",
        "mminputs",
        "rollout",
        "sglang_plugin",
    )
    for package in product_packages():
        assert (ROOT / package / "__init__.py").is_file(), package


def test_product_packages_do_not_import_the_test_kit_or_benchmarks():
    offenders = [
        str(site)
        for path in python_files(*product_packages())
        for site in absolute_imports(path)
        if site.top in TEST_KIT_AND_BENCHMARKS
    ]
    assert offenders == []


def test_product_packages_do_not_name_test_kit_or_benchmark_modules():
    # `python -m testkit.stub_server` or importlib.import_module("bench.x") would be a dependency too.
    offenders = [
        f"{path.relative_to(ROOT).as_posix()}:{node.lineno}: {node.value!r}"
        for path in python_files(*product_packages())
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and NAMES_A_MODULE.match(node.value)
    ]
    assert offenders == []


def test_the_wheel_leaves_out_the_test_kit_and_benchmarks():
    patterns = pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    for name in TEST_KIT_AND_BENCHMARKS:
        assert (ROOT / name / "__init__.py").is_file(), name
        shipped = [p for p in patterns if fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(f"{name}.x", p)]
        assert shipped == [], f"{name} would be in the wheel through {shipped}"

"""Runtime dependencies are what the product imports: pyproject's [project] dependencies equal the
third-party modules the product packages import. Test kit and benchmarks may use the dev extra too."""

from __future__ import annotations

import re

from testkit.source_imports import TEST_KIT_AND_BENCHMARKS, product_packages, pyproject, third_party_imports

# Distribution -> top-level module, where the module is not the distribution's name with '-' as '_'.
IMPORT_NAMES = {
    "pillow": "PIL",
    "pyyaml": "yaml",
    "pyzmq": "zmq",
    "prometheus-client": "prometheus_client",
}


def import_names(requirements: list[str]) -> set[str]:
    names = set()
    for requirement in requirements:
        match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
        assert match, f"cannot read a distribution name from {requirement!r}"
        distribution = re.sub(r"[._-]+", "-", match.group(0)).lower()
        names.add(IMPORT_NAMES.get(distribution, distribution.replace("-", "_")))
    return names


def test_runtime_dependencies_are_what_the_product_imports():
    packages = product_packages()
    imported = third_party_imports(packages, first_party=packages)
    declared = import_names(pyproject()["project"]["dependencies"])
    undeclared = {
        name: [str(s) for s in sites[:3]] for name, sites in imported.items() if name not in declared
    }
    unused = sorted(declared - set(imported))
    assert not undeclared and not unused, (
        f"imported by the product but not in [project] dependencies: {undeclared}; "
        f"in [project] dependencies but imported by no product package: {unused}"
    )


def test_test_kit_and_benchmarks_need_nothing_beyond_the_dev_extra():
    project = pyproject()["project"]
    available = import_names(project["dependencies"] + project["optional-dependencies"]["dev"])
    imported = third_party_imports(
        TEST_KIT_AND_BENCHMARKS, first_party=product_packages() + TEST_KIT_AND_BENCHMARKS
    )
    missing = {name: [str(s) for s in sites[:3]] for name, sites in imported.items() if name not in available}
    assert not missing, (
        f"imported by testkit/ or bench/ but in neither [project] dependencies nor the dev extra: {missing}"
    )

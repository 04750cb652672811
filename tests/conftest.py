"""Set-up for the whole suite: gevent's patches before anything imports ssl, and a mark on every test that
needs a binary `make test` builds from its Go module (helm, actionlint), so the fast tier (`make test-unit`)
can leave them out without building anything."""

from __future__ import annotations

# Locust patches the standard library with gevent when the load-test tests import it; ssl state made before
# that (requests, under the Prometheus client) then recurses. Patch first, as gevent requires.
from gevent import monkey

monkey.patch_all()

import pytest  # noqa: E402

# Fixtures that build their binary on first use (tests/helm/conftest.py, tests/ci_gate/test_templates.py).
BUILT_BINARIES = ("helm_bin", "actionlint")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if any(name in getattr(item, "fixturenames", ()) for name in BUILT_BINARIES):
            item.add_marker(pytest.mark.binaries)

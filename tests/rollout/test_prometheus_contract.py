"""Only `infra/prometheus_api.py` talks HTTP to Prometheus; gates, reports, the stack and tests call it.

Three marks of a second client, looked for in every Python file of the repository (docstrings and
comments aside): a Prometheus endpoint path in a string (`/api/v1/query`, `/-/reload`, ...), an HTTP
client call (urllib, requests, aiohttp, httpx) whose URL argument names Prometheus, and an import of
`prometheus_api_client`. Other HTTP code (the local router, the backend, hooks) has none of them.
"""

import ast
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLIENT = "infra/prometheus_api.py"
SKIP_DIRS = {"build", "node_modules", "__pycache__"}

PROMETHEUS_PATH = re.compile(
    r"/api/v1/(?:query|query_range|query_exemplars|series|labels?|targets|rules|alerts|metadata|status"
    r"|admin|format_query)\b|/-/(?:ready|healthy|reload|quit)\b|/federate\b"
)
PROMETHEUS_NAME = re.compile(r"prometheus|(?:^|_)prom(?:_|$)", re.IGNORECASE)  # `prom_url`, not `prompt`
HTTP_MODULES = ("urllib.request", "requests", "aiohttp", "httpx", "http.client", "urllib3")
HTTP_CALLS = {"urlopen", "Request", "request", "get", "post", "put", "patch", "delete", "head", "ws_connect"}


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def _imports(tree: ast.AST) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            out += [(node.lineno, node.module)] + [
                (node.lineno, f"{node.module}.{a.name}") for a in node.names
            ]
    return out


def _names_prometheus(expr: ast.AST) -> bool:
    for node in ast.walk(expr):
        if isinstance(node, ast.Name) and PROMETHEUS_NAME.search(node.id):
            return True
        if isinstance(node, ast.Attribute) and PROMETHEUS_NAME.search(node.attr):
            return True
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if "/" in node.value and PROMETHEUS_NAME.search(
                node.value
            ):  # a URL such as http://prometheus:9090
                return True
    return False


def offences(source: str) -> list[str]:
    """`line: what` for each mark of a Prometheus HTTP client in one module's source."""
    tree = ast.parse(source)
    found = []
    docstrings = _docstrings(tree)
    imports = _imports(tree)
    for line, name in imports:
        if name == "prometheus_api_client" or name.startswith("prometheus_api_client."):
            found.append(f"{line}: imports {name}")
    uses_http = any(name == m or name.startswith(m + ".") for _, name in imports for m in HTTP_MODULES)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            match = PROMETHEUS_PATH.search(node.value)
            if match:
                found.append(f"{node.lineno}: Prometheus endpoint {match.group(0)!r}")
        if uses_http and isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            url = (
                node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "url"), None)
            )
            if called in HTTP_CALLS and url is not None and _names_prometheus(url):
                found.append(f"{node.lineno}: HTTP call {called}() on a Prometheus URL")
    return found


def python_files():
    for directory, dirs, files in os.walk(ROOT):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS)
        for name in sorted(files):
            if name.endswith(".py"):
                yield Path(directory, name)


def test_only_the_client_module_talks_http_to_prometheus():
    offenders = {}
    for path in python_files():
        rel = path.relative_to(ROOT).as_posix()
        if path == Path(__file__).resolve():
            continue  # this file spells the marks out
        found = offences(path.read_text())
        if found:
            offenders[rel] = found
    assert CLIENT in offenders, "the detector no longer recognises the client module itself"
    assert set(offenders) == {CLIENT}, {k: v for k, v in offenders.items() if k != CLIENT}


@pytest.mark.parametrize(
    "source",
    [
        'import urllib.request\nurllib.request.urlopen(f"{url}/api/v1/query?query=up")\n',
        'import json\nbody = f"{base}/api/v1/query_range?" + params\n',
        'import requests\nrequests.get(stack.prometheus_url, params={"query": "up"})\n',
        "import aiohttp\nasync def f(session, prom_url):\n    async with session.get(prom_url + path) as r:\n        pass\n",
        'from urllib.request import Request\nRequest(self.prometheus["url"] + "/graph")\n',
        "from prometheus_api_client import PrometheusConnect\n",
        'import urllib.request\nurllib.request.urlopen(urllib.request.Request(base + "/-/reload", method="POST"))\n',
    ],
    ids=["urllib-query", "path-anywhere", "requests", "aiohttp", "urllib-request", "api-client", "reload"],
)
def test_a_second_prometheus_client_is_caught(source):
    assert offences(source)


@pytest.mark.parametrize(
    "source",
    [
        # the local router forwards to its upstream arms with aiohttp
        "import aiohttp\nasync def f(self, method, upstream):\n"
        "    async with self.session.request(method, upstream + path) as r:\n        pass\n",
        'import urllib.request\nurllib.request.urlopen(spec.admin_url + "/weights", timeout=5)\n',
        # state lookups that merely name Prometheus, in a module that does HTTP elsewhere
        'import urllib.request\nurl = stack.get("prometheus")\nprompt = payload.get(prompt_key)\n',
        'import requests\nrequests.get(f"{apiserver}/api/v1/namespaces/ml/configmaps/state")\n',
        '"""Queries go through `/api/v1/query` (the client module)."""\nimport urllib.request\n',
    ],
    ids=["proxy-upstream", "router-admin", "state-lookups", "kubernetes-path", "docstring"],
)
def test_other_http_code_is_not_flagged(source):
    assert offences(source) == []

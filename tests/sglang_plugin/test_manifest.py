"""The compatibility manifest against the real sglang 0.5.23 wheel (source only), modified sources, and
the harness tree (live objects, as the plugin checks at hook time)."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from sglang_plugin import entry, manifest, wheel
from sglang_plugin.hook import is_installed, uninstall
from sglang_plugin.manifest import (
    MANIFEST,
    SCHEDULER,
    IncompatibleSglang,
    check_runtime,
    check_sources,
    render_ast_arguments,
    render_signature,
)

REPO = Path(__file__).resolve().parents[2]


def test_pinned_wheel_matches_the_manifest(wheel_sources):
    assert set(wheel_sources) >= {e.module for e in MANIFEST}
    assert check_sources(wheel_sources) == []


def test_the_wheel_really_has_the_upstream_path_the_plugin_replaces(wheel_sources):
    # Not only names: upstream's router calls the method we replace, behind the flag we require.
    tree = ast.parse(wheel_sources[SCHEDULER])
    scheduler = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Scheduler")
    router = next(
        n for n in scheduler.body if isinstance(n, ast.FunctionDef) and n.name == "_get_multimodal_inputs"
    )
    source = ast.unparse(router)
    assert "self._process_and_broadcast_mm_inputs(" in source
    assert "enable_broadcast_mm_inputs_process" in source


def _mutate(sources: dict[str, str], module: str, old: str, new: str) -> dict[str, str]:
    assert old in sources[module], f"the pinned source no longer contains {old!r}"
    return {**sources, module: sources[module].replace(old, new)}


@pytest.mark.parametrize(
    ("module", "old", "new", "expected"),
    [
        (
            SCHEDULER,
            "def _process_and_broadcast_mm_inputs(",
            "def _broadcast_mm_inputs(",
            "Scheduler._process_and_broadcast_mm_inputs: is missing",
        ),
        (
            SCHEDULER,
            "def process_input_requests(self, recv_reqs: List):",
            "def process_input_requests(self, recv_reqs: List, budget: int):",
            "Scheduler.process_input_requests: has parameters (self, recv_reqs, budget), expected (self, recv_reqs)",
        ),
        (
            SCHEDULER,
            "    @staticmethod\n    def _tokenized_requests(recv_req):",
            "    def _tokenized_requests(self, recv_req):",
            "Scheduler._tokenized_requests: is a method, expected a staticmethod",
        ),
        (
            SCHEDULER,
            "class _MultimodalInputProcessingError(RuntimeError):",
            "class _MMInputError(RuntimeError):",
            "scheduler._MultimodalInputProcessingError: is missing",
        ),
        (
            SCHEDULER,
            "        self.dp_tp_cpu_group = self.dp_tp_group.cpu_group",
            "        self.tp_cpu_group = self.dp_tp_group.cpu_group",
            "Scheduler.dp_tp_cpu_group: attribute is never assigned",
        ),
        (
            manifest.IO_STRUCT,
            "    mm_inputs: Optional[MultimodalProcessorOutput]\n",
            "    mm_data: Optional[MultimodalProcessorOutput]\n",
            "TokenizedGenerateReqInput.mm_inputs: field is not declared",
        ),
        (
            manifest.SCHEDULE_BATCH,
            "obj: MultimodalProcessorOutput, *, requires_mm_token_modalities: bool = False",
            "obj: MultimodalProcessorOutput, requires_mm_token_modalities: bool = False",
            "MultimodalInputs.from_processor_output: has parameters (obj, requires_mm_token_modalities), "
            "expected (obj, *, requires_mm_token_modalities)",
        ),
        (
            manifest.MODEL_CONFIG,
            "        self.requires_mm_token_modalities = requires_mm_token_modalities(",
            "        self.needs_mm_token_modalities = requires_mm_token_modalities(",
            "ModelConfig.requires_mm_token_modalities: attribute is never assigned",
        ),
    ],
    ids=[
        "renamed-method",
        "changed-signature",
        "static-to-method",
        "renamed-error",
        "renamed-attr",
        "field",
        "conversion-signature",
        "model-config-attr",
    ],
)
def test_modified_source_is_refused_with_a_clear_message(wheel_sources, module, old, new, expected):
    mismatches = check_sources(_mutate(wheel_sources, module, old, new))
    assert mismatches, "a modified sglang must not pass"
    message = str(IncompatibleSglang(mismatches, "0.5.99"))
    assert expected in message
    assert "refuses to start" in message and "sglang 0.5.99" in message and manifest.SGLANG_VERSION in message


def test_missing_module_is_reported(wheel_sources):
    sources = {k: v for k, v in wheel_sources.items() if k != manifest.RUNTIME_CONTEXT}
    assert [str(m) for m in check_sources(sources)] == [
        f"{manifest.RUNTIME_CONTEXT}: module source not found"
    ]


def _sig_cases():
    def a(self, x, /, y, *args, z, **kw): ...
    def b(obj, *, flag=False): ...
    def c(): ...
    def d(self, recv_req, *, mm_input_error=None): ...
    def e(x, y=1, /): ...

    return [a, b, c, d, e]


@pytest.mark.parametrize("func", _sig_cases(), ids=lambda f: f.__name__)
def test_live_and_parsed_renderings_agree(func):
    parsed = ast.parse(inspect.getsource(func).strip()).body[0]
    assert isinstance(parsed, ast.FunctionDef)
    assert render_signature(inspect.signature(func)) == render_ast_arguments(parsed.args)


def test_rendering_examples():
    def f(self, a, /, b, *, c, **kw): ...

    assert render_signature(inspect.signature(f)) == "self, a, /, b, *, c, **kw"


def test_harness_tree_satisfies_the_manifest_at_runtime(harness_sglang):
    assert check_runtime() == []


def test_runtime_check_refuses_a_changed_signature(harness_sglang, monkeypatch):
    def process_input_requests(self, recv_reqs, extra):  # what a future sglang might have
        raise AssertionError("never called")

    monkeypatch.setattr(harness_sglang.Scheduler, "process_input_requests", process_input_requests)
    monkeypatch.delattr(harness_sglang.Scheduler, "_tokenized_requests")
    problems = [str(m) for m in check_runtime()]
    assert problems == [
        f"{SCHEDULER}.Scheduler.process_input_requests: has parameters (self, recv_reqs, extra), "
        "expected (self, recv_reqs)",
        f"{SCHEDULER}.Scheduler._tokenized_requests: is missing",
    ]

    monkeypatch.setenv("SGLANG_MM_INPUT_MODE", "sharded")
    with pytest.raises(SystemExit) as exc:
        entry.load()
    assert "refuses to start" in str(exc.value) and "process_input_requests" in str(exc.value)
    assert not is_installed(harness_sglang.Scheduler)


def test_entry_point_hooks_only_when_a_mode_is_set(harness_sglang, monkeypatch):
    cls = harness_sglang.Scheduler
    monkeypatch.setenv("SGLANG_MM_INPUT_MODE", "off")
    entry.load()
    assert not is_installed(cls)
    monkeypatch.setenv("SGLANG_MM_INPUT_MODE", "batched")
    try:
        entry.load()
        assert is_installed(cls)
        assert cls.process_input_requests.__wrapped__.__name__ == "process_input_requests"
        entry.load()  # idempotent: sglang calls load_plugins() more than once per process
        assert cls.__init__.__wrapped__.__qualname__ == "Scheduler.__init__"
    finally:
        uninstall(cls)
    assert not is_installed(cls)


def test_entry_point_skips_processes_without_a_scheduler(monkeypatch):
    # The detokenizer also runs sglang's plugin loader; it must not import the scheduler module.
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent / "harness"))
    monkeypatch.setenv("SGLANG_MM_INPUT_MODE", "sharded")
    try:
        entry.load()
        assert SCHEDULER not in sys.modules
    finally:
        for name in [m for m in sys.modules if m == "sglang" or m.startswith("sglang.")]:
            del sys.modules[name]


def test_entry_point_refuses_a_bad_mode(monkeypatch):
    monkeypatch.setenv("SGLANG_MM_INPUT_MODE", "fastest")
    with pytest.raises(SystemExit, match=r"SGLANG_MM_INPUT_MODE='fastest'.*valid modes"):
        entry.load()


def test_entry_point_is_registered_for_sglangs_loader():
    from importlib.metadata import entry_points

    found = {ep.name: ep.value for ep in entry_points(group="sglang.srt.plugins")}
    assert found.get("mm_batched_broadcast") == "sglang_plugin.entry:load"


def _write_wheel(path: Path, sources: dict[str, str]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for module, text in sources.items():
            zf.writestr(wheel.module_path(module), text)


def test_cli_checks_a_wheel_file(wheel_sources, tmp_path):
    good, bad = tmp_path / "good.whl", tmp_path / "bad.whl"
    _write_wheel(good, wheel_sources)
    _write_wheel(
        bad,
        _mutate(
            wheel_sources, SCHEDULER, "def _get_multimodal_inputs(self, mm_inputs)", "def _get_mm(self, x)"
        ),
    )
    cmd = [sys.executable, "-m", "sglang_plugin", "check", "--wheel"]
    ok = subprocess.run([*cmd, str(good)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "compatible" in ok.stdout
    refused = subprocess.run([*cmd, str(bad)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert refused.returncode == 1
    assert "Scheduler._get_multimodal_inputs: is missing" in refused.stderr
    missing = subprocess.run(
        [*cmd, str(tmp_path / "nope.whl")], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert missing.returncode == 2 and "no wheel at" in missing.stderr

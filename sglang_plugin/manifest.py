"""What this plugin was built against: the sglang names it calls or replaces, with their parameter lists.

Checked twice: at hook time against the live classes with `inspect` (the plugin refuses to start on any
mismatch), and in tests against the pinned wheel's source with `ast` (no heavy import needed).
A parameter list is rendered like a signature without annotations or defaults: `self, recv_req, *, flag`.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

SGLANG_VERSION = "0.5.23"

# "field": a class-level annotated name (msgspec/dataclass field); "imported": a module-level name bound by
# `from <params> import <name>` (params holds the source module).
Kind = Literal["class", "method", "staticmethod", "property", "function", "field", "imported"]

SCHEDULER = "sglang.srt.managers.scheduler"
IO_STRUCT = "sglang.srt.managers.io_struct"
SCHEDULE_BATCH = "sglang.srt.managers.schedule_batch"
MODEL_CONFIG = "sglang.srt.configs.model_config"
RUNTIME_CONTEXT = "sglang.srt.runtime_context"
PARALLEL_STATE = "sglang.srt.distributed.parallel_state"


@dataclass(frozen=True)
class Expected:
    """One name the plugin relies on: `module` + dotted `qualname`, its kind, and (callables) its parameters."""

    module: str
    qualname: str
    kind: Kind
    params: str = ""

    @property
    def where(self) -> str:
        return f"{self.module}.{self.qualname}"


@dataclass(frozen=True)
class ExpectedAttributes:
    """Instance attributes a class must assign (`self.<name> = ...`) because the plugin reads them."""

    module: str
    class_name: str
    names: tuple[str, ...]


MANIFEST: tuple[Expected, ...] = (
    Expected(SCHEDULER, "Scheduler", "class"),
    # wrapped: attaches the batch step once upstream's constructor is done
    Expected(SCHEDULER, "Scheduler.__init__", "method", "self, server_args, port_args"),
    # wrapped: the batch-level step runs once per received batch, before upstream handles each request
    Expected(SCHEDULER, "Scheduler.process_input_requests", "method", "self, recv_reqs"),
    # replaced: serves each request's inputs from what the batch step prepared
    Expected(SCHEDULER, "Scheduler._process_and_broadcast_mm_inputs", "method", "self, raw_mm_inputs"),
    # upstream's router into the replaced method (taken when --enable-broadcast-mm-inputs-process is on)
    Expected(SCHEDULER, "Scheduler._get_multimodal_inputs", "method", "self, mm_inputs"),
    # called: the tokenized requests inside one received request (single or batch form)
    Expected(SCHEDULER, "Scheduler._tokenized_requests", "staticmethod", "recv_req"),
    # raised: upstream turns it into an abort of that request alone
    Expected(SCHEDULER, "_MultimodalInputProcessingError", "class"),
    # called: reads enable_broadcast_mm_inputs_process
    Expected(SCHEDULER, "get_mm", "imported", RUNTIME_CONTEXT),
    Expected(RUNTIME_CONTEXT, "get_mm", "function", ""),
    # read: each tokenized request's raw multimodal inputs, and its id (declared on their base class)
    Expected(IO_STRUCT, "TokenizedGenerateReqInput.mm_inputs", "field"),
    Expected(IO_STRUCT, "TokenizedEmbeddingReqInput.mm_inputs", "field"),
    Expected(IO_STRUCT, "BaseReq.rid", "field"),
    # the form the tokenizer sends (isinstance), and upstream's conversion the strategies run (called)
    Expected(SCHEDULE_BATCH, "MultimodalProcessorOutput", "class"),
    Expected(SCHEDULE_BATCH, "MultimodalInputs", "class"),
    Expected(
        SCHEDULE_BATCH,
        "MultimodalInputs.from_processor_output",
        "staticmethod",
        "obj, *, requires_mm_token_modalities",
    ),
    # read: the TP group (world_size, rank_in_group, first_rank = source rank)
    Expected(PARALLEL_STATE, "GroupCoordinator", "class"),
    Expected(PARALLEL_STATE, "GroupCoordinator.first_rank", "property"),
)

ATTRIBUTES: tuple[ExpectedAttributes, ...] = (
    ExpectedAttributes(SCHEDULER, "Scheduler", ("dp_tp_group", "dp_tp_cpu_group", "model_config")),
    # read: passed to from_processor_output, as upstream passes it
    ExpectedAttributes(MODEL_CONFIG, "ModelConfig", ("requires_mm_token_modalities",)),
    ExpectedAttributes(
        PARALLEL_STATE, "GroupCoordinator", ("ranks", "world_size", "rank_in_group", "cpu_group")
    ),
)


@dataclass(frozen=True)
class Mismatch:
    """One difference between the manifest and what is installed (or in a source tree)."""

    where: str
    problem: str

    def __str__(self) -> str:
        return f"{self.where}: {self.problem}"


class IncompatibleSglang(RuntimeError):
    """The installed sglang is not the one this plugin was built against."""

    def __init__(self, mismatches: list[Mismatch], installed_version: str | None = None):
        self.mismatches = mismatches
        found = f"sglang {installed_version}" if installed_version else "the installed sglang"
        lines = "\n".join(f"  - {m}" for m in mismatches)
        super().__init__(
            f"sglang_plugin refuses to start: {found} does not have the methods and signatures this plugin "
            f"was built against (sglang {SGLANG_VERSION}):\n{lines}\n"
            "Install sglang "
            f"{SGLANG_VERSION}, or unset SGLANG_MM_INPUT_MODE to run upstream sglang unchanged."
        )


# ---- rendering parameter lists ---------------------------------------------------------------------


def render_signature(sig: inspect.Signature) -> str:
    """`self, a, /, b, *args, c, **kw` from a live signature: names and kinds only."""
    out: list[str] = []
    saw_star = False
    last_posonly = -1
    for param in sig.parameters.values():
        if param.kind is param.POSITIONAL_ONLY:
            out.append(param.name)
            last_posonly = len(out)
        elif param.kind is param.POSITIONAL_OR_KEYWORD:
            out.append(param.name)
        elif param.kind is param.VAR_POSITIONAL:
            out.append(f"*{param.name}")
            saw_star = True
        elif param.kind is param.KEYWORD_ONLY:
            if not saw_star:
                out.append("*")
                saw_star = True
            out.append(param.name)
        else:
            out.append(f"**{param.name}")
    if last_posonly >= 0:
        out.insert(last_posonly, "/")
    return ", ".join(out)


def render_ast_arguments(args: ast.arguments) -> str:
    """The same rendering from a parsed `def` (source inspection without importing)."""
    out: list[str] = [a.arg for a in args.posonlyargs]
    if args.posonlyargs:
        out.append("/")
    out += [a.arg for a in args.args]
    if args.vararg is not None:
        out.append(f"*{args.vararg.arg}")
    elif args.kwonlyargs:
        out.append("*")
    out += [a.arg for a in args.kwonlyargs]
    if args.kwarg is not None:
        out.append(f"**{args.kwarg.arg}")
    return ", ".join(out)


# ---- checking live objects (hook time) -------------------------------------------------------------


def check_runtime(
    import_module: Callable[[str], object] = importlib.import_module,
    manifest: tuple[Expected, ...] = MANIFEST,
) -> list[Mismatch]:
    """Every manifest entry that the importable modules do not satisfy (empty list: compatible)."""
    mismatches: list[Mismatch] = []
    for exp in manifest:
        try:
            module = import_module(exp.module)
        except ImportError as exc:
            mismatches.append(Mismatch(exp.where, f"module {exp.module} cannot be imported ({exc})"))
            continue
        mismatch = _check_live(module, exp)
        if mismatch is not None:
            mismatches.append(mismatch)
    return mismatches


def _check_live(module: object, exp: Expected) -> Mismatch | None:
    if exp.kind == "imported":
        found = getattr(module, exp.qualname, None)
        try:
            source = importlib.import_module(exp.params)
        except ImportError as exc:
            return Mismatch(exp.where, f"module {exp.params} cannot be imported ({exc})")
        if found is None or found is not getattr(source, exp.qualname, None):
            return Mismatch(exp.where, f"is not the name imported from {exp.params}")
        return None
    owner: object = module
    *parents, name = exp.qualname.split(".")
    for part in parents:
        owner = getattr(owner, part, None)
        if owner is None:
            return Mismatch(exp.where, f"{part} is missing")
    if exp.kind == "field":
        declared = isinstance(owner, type) and any(
            name in vars(k).get("__annotations__", {}) for k in owner.__mro__
        )
        return None if declared else Mismatch(exp.where, "field is not declared")
    raw = inspect.getattr_static(owner, name, None) if isinstance(owner, type) else getattr(owner, name, None)
    if raw is None:
        return Mismatch(exp.where, "is missing")
    kind = _live_kind(raw, inside_class=isinstance(owner, type))
    if kind != exp.kind:
        return Mismatch(exp.where, f"is a {kind}, expected a {exp.kind}")
    if exp.kind in ("class", "property"):
        return None
    func = raw.__func__ if isinstance(raw, staticmethod | classmethod) else raw
    try:
        found = render_signature(inspect.signature(func))
    except (TypeError, ValueError) as exc:
        return Mismatch(exp.where, f"signature cannot be read ({exc})")
    if found != exp.params:
        return Mismatch(exp.where, f"has parameters ({found}), expected ({exp.params})")
    return None


def _live_kind(raw: object, *, inside_class: bool) -> str:
    if isinstance(raw, type):
        return "class"
    if isinstance(raw, staticmethod):
        return "staticmethod"
    if isinstance(raw, classmethod):
        return "classmethod"
    if isinstance(raw, property):
        return "property"
    if callable(raw):
        return "method" if inside_class else "function"
    return type(raw).__name__


def check_instance_attributes(obj: object, class_name: str) -> list[Mismatch]:
    """After construction: the attributes the manifest says `class_name` assigns are present on `obj`."""
    missing: list[Mismatch] = []
    for group in ATTRIBUTES:
        if group.class_name != class_name:
            continue
        for name in group.names:
            if not hasattr(obj, name):
                missing.append(Mismatch(f"{group.module}.{class_name}.{name}", "attribute is not set"))
    return missing


# ---- checking a source tree (tests, CI, `python -m sglang_plugin check-wheel`) ---------------------


def check_sources(
    sources: Mapping[str, str],
    manifest: tuple[Expected, ...] = MANIFEST,
    attributes: tuple[ExpectedAttributes, ...] = ATTRIBUTES,
) -> list[Mismatch]:
    """Compare the manifest to module sources (`module name -> source text`) parsed with `ast`."""
    trees: dict[str, ast.Module] = {}
    mismatches: list[Mismatch] = []
    for module in sorted({e.module for e in manifest} | {a.module for a in attributes}):
        if module not in sources:
            mismatches.append(Mismatch(module, "module source not found"))
            continue
        try:
            trees[module] = ast.parse(sources[module])
        except SyntaxError as exc:
            mismatches.append(Mismatch(module, f"source does not parse ({exc})"))
    for exp in manifest:
        if exp.module in trees:
            mismatch = _check_ast(trees[exp.module], exp)
            if mismatch is not None:
                mismatches.append(mismatch)
    for group in attributes:
        if group.module in trees:
            mismatches += _check_ast_attributes(trees[group.module], group)
    return mismatches


def _find_ast(body: list[ast.stmt], name: str) -> ast.stmt | None:
    # The last definition wins, as at import time.
    found = None
    for node in body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name:
            found = node
    return found


def _check_ast(tree: ast.Module, exp: Expected) -> Mismatch | None:
    body: list[ast.stmt] = tree.body
    if exp.kind == "imported":
        imported = any(
            isinstance(node, ast.ImportFrom)
            and node.module == exp.params
            and any(
                alias.name == exp.qualname and alias.asname in (None, exp.qualname) for alias in node.names
            )
            for node in body
        )
        return None if imported else Mismatch(exp.where, f"is not imported from {exp.params}")
    *parents, name = exp.qualname.split(".")
    for part in parents:
        parent = _find_ast(body, part)
        if not isinstance(parent, ast.ClassDef):
            return Mismatch(exp.where, f"{part} is missing")
        body = parent.body
    if exp.kind == "field":
        declared = any(
            isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == name
            for node in body
        )
        return None if declared else Mismatch(exp.where, "field is not declared")
    node = _find_ast(body, name)
    if node is None:
        return Mismatch(exp.where, "is missing")
    kind = _ast_kind(node, inside_class=bool(parents))
    if kind != exp.kind:
        return Mismatch(exp.where, f"is a {kind}, expected a {exp.kind}")
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and exp.kind != "property":
        found = render_ast_arguments(node.args)
        if found != exp.params:
            return Mismatch(exp.where, f"has parameters ({found}), expected ({exp.params})")
    return None


def _ast_kind(node: ast.stmt, *, inside_class: bool) -> str:
    if isinstance(node, ast.ClassDef):
        return "class"
    assert isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    decorators = {d.id for d in node.decorator_list if isinstance(d, ast.Name)}
    for kind in ("staticmethod", "classmethod", "property"):
        if kind in decorators:
            return kind
    return "method" if inside_class else "function"


def _check_ast_attributes(tree: ast.Module, group: ExpectedAttributes) -> list[Mismatch]:
    cls = _find_ast(tree.body, group.class_name)
    if not isinstance(cls, ast.ClassDef):
        return [Mismatch(f"{group.module}.{group.class_name}", "is missing")]
    assigned: set[str] = set()
    for node in ast.walk(cls):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AnnAssign | ast.AugAssign):
            targets = [node.target]
        for target in targets:
            for sub in ast.walk(target):
                if (
                    isinstance(sub, ast.Attribute)
                    and isinstance(sub.value, ast.Name)
                    and sub.value.id == "self"
                ):
                    assigned.add(sub.attr)
    return [
        Mismatch(
            f"{group.module}.{group.class_name}.{name}", "attribute is never assigned (self.<name> = ...)"
        )
        for name in group.names
        if name not in assigned
    ]


def installed_sglang_version() -> str | None:
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("sglang")
    except PackageNotFoundError:
        return None

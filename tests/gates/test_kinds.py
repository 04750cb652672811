"""The gate kinds' registry: each kind is one file, and a new kind needs nothing but its own file.

A kind is found by its file (`gates/kinds/<name>.py` defining `KIND`); the toy kind below (a ratio of two
queries under a bound) is then put in the registry as that file would put it, and the gate file loader, the
evaluator, the exports and the report take it as they take the packaged kinds, without a change anywhere
else.
"""

from __future__ import annotations

import sys

import jsonschema
import pytest

from gates import judge as J
from gates import kinds
from gates.config import GateConfigError, parse_gate_document
from gates.evaluate import evaluate
from gates.export import argo_dialect, gate_checks, not_exported
from gates.kinds import KINDS
from gates.kinds.base import (
    COUNT,
    Bound,
    Check,
    Context,
    Dialect,
    GateKind,
    Outcome,
    Panel,
    errors_block,
    instant_per_arm,
    kind_schema,
    panel_queries,
    panel_title,
)
from gates.spec import GateSpec


def test_registry_names_each_kind_once_and_its_defaults_fit_its_schema():
    assert sorted(KINDS) == ["error_rate", "latency_quantile", "memory_leak", "threshold", "throughput"]
    for name, kind in KINDS.items():
        assert kind.name == name
        # The defaults are valid values of the kind's own parameters.
        props = kind.schema["properties"]
        for key, value in kind.defaults.items():
            jsonschema.validate(value, props[key])


def _toy_evaluate(gate: GateSpec, ctx: Context) -> Outcome:
    queries: dict[str, dict[str, str]] = {}
    errors: dict[str, str] = {}
    part = instant_per_arm(gate, ctx, "part", queries, errors)
    whole = instant_per_arm(gate, ctx, "whole", queries, errors)
    blocked = errors_block(errors, ["canary"])
    if blocked:
        return Outcome(blocked, queries, errors)
    ratio = part["canary"] / whole["canary"]
    verdict = J.PASS if ratio <= gate.params["max"] else J.FAIL
    return Outcome(J.Judgement(verdict, f"canary ratio {ratio:g}", {"canary": ratio}), queries, errors)


def _toy_checks(gate: GateSpec, dialect: Dialect) -> list[Check]:
    ratio = f"({dialect.query(gate, 'part', 'canary')}) / ({dialect.query(gate, 'whole', 'canary')})"
    return [Check(gate.name, "canary", ratio, "<=", float(gate.params["max"]))]


def _toy_panel(gate: GateSpec, variables, window_s: float) -> tuple[Panel, ...]:
    part = panel_queries(gate, "part", variables, window_s)
    whole = panel_queries(gate, "whole", variables, window_s)
    ratio = {arm: f"({part[arm]}) / ({whole[arm]})" for arm in part}
    return (
        Panel(
            panel_title(gate, "part / whole"),
            "",
            ratio,
            bounds=(Bound("max", gate.params["max"], ("canary",)),),
        ),
    )


TOY = GateKind(
    name="share",
    schema=kind_schema(
        ["part", "whole"], [], {"max": {"type": "number"}, "min_samples": COUNT}, required=("max",)
    ),
    defaults={"min_samples": 1},
    evaluate=_toy_evaluate,
    checks=_toy_checks,
    panel=_toy_panel,
)

DOCUMENT = {
    "version": 1,
    "gates": [
        {
            "name": "queue_share",
            "kind": "share",
            "max": 0.5,
            "queries": {"part": 'queued{arm="${arm}"}', "whole": 'admitted{arm="${arm}"}'},
        }
    ],
}


class _Numbers:
    """A provider answering each rendered query with a number (the thin wrapper layer tests mock at)."""

    def __init__(self, answers: dict[str, float]) -> None:
        self.answers = answers

    def instant(self, promql, at):
        from gates.provider import Sample

        return [Sample({}, self.answers[promql])]

    def range(self, promql, start, end, step_s):  # pragma: no cover - the toy kind reads instants only
        raise AssertionError("not used")


KIND_FILE = """
from gates.kinds.base import NUMBER, GateKind, kind_schema


def evaluate(gate, ctx):
    raise NotImplementedError


KIND = GateKind("{name}", kind_schema(["part"], [], {{"max": NUMBER}}), defaults={{}}, evaluate=evaluate)
"""


@pytest.mark.parametrize(("module", "named"), [("share", "share"), ("misnamed", "share")])
def test_a_kind_is_found_by_its_file_and_named_after_it(tmp_path, monkeypatch, module, named):
    (tmp_path / f"{module}.py").write_text(KIND_FILE.format(name=named))
    monkeypatch.setattr(kinds, "__path__", [*kinds.__path__, str(tmp_path)])
    monkeypatch.delitem(sys.modules, f"gates.kinds.{module}", raising=False)
    try:
        if module != named:
            with pytest.raises(ValueError, match="a gate kind is named after its module"):
                kinds._found()
            return
        found = kinds._found()
        assert sorted(found) == sorted([*KINDS, "share"]) and found["share"].name == "share"
    finally:
        sys.modules.pop(f"gates.kinds.{module}", None)


def test_a_new_kind_is_one_registry_entry(monkeypatch):
    monkeypatch.setitem(kinds.KINDS, "share", TOY)
    config = parse_gate_document(DOCUMENT, "local")
    (gate,) = config.gates
    assert gate.params == {"min_samples": 1, "max": 0.5}
    answers = {
        'queued{arm="baseline"}': 1.0,
        'admitted{arm="baseline"}': 10.0,
        'queued{arm="canary"}': 8.0,
        'admitted{arm="canary"}': 10.0,
    }
    result = evaluate(
        config,
        prometheus_url="http://unused",
        start=0.0,
        end=60.0,
        weights={"baseline": 50, "canary": 50},
        provider=_Numbers(answers),
    ).gate("queue_share")
    # judged by the kind, then the hysteresis every gate gets (one failing evaluation of two needed)
    assert (
        result.kind == "share" and result.raw_verdict is J.FAIL and result.reason.endswith("canary ratio 0.8")
    )
    assert result.verdict is J.INCONCLUSIVE and result.consecutive_failures == 1
    (check,) = gate_checks(gate, argo_dialect(config))
    assert check.name == "queue-share-canary" and check.bound == 0.5
    assert "{{args.canary-hash}}" in check.query
    assert not_exported(config) == []
    # and its panel in the report: the ratio it judges, per arm, under its bound
    (panel,) = kinds.KINDS["share"].panel(gate, config.variables, 30.0)
    assert panel.title == "queue_share (part / whole)" and panel.bounds == (Bound("max", 0.5, ("canary",)),)
    assert panel.queries["canary"] == '(queued{arm="canary"}) / (admitted{arm="canary"})'


def test_a_kinds_schema_and_rules_guard_its_entries(monkeypatch):
    monkeypatch.setitem(kinds.KINDS, "share", TOY)
    bad = {**DOCUMENT, "gates": [{**DOCUMENT["gates"][0], "max": "high"}]}
    with pytest.raises(
        GateConfigError, match=r"gates\[0\] \(queue_share\)\.max: 'high' is not of type 'number'"
    ):
        parse_gate_document(bad, "local")
    # A rule the schema cannot say is the kind's own (latency: buckets unless load-test samples).
    latency = {
        "version": 1,
        "gates": [{"name": "p99", "kind": "latency_quantile", "max_seconds": 1, "queries": {}}],
    }
    with pytest.raises(
        GateConfigError, match=r"gates\[0\] \(p99\)\.queries\.buckets: required unless source"
    ):
        parse_gate_document(latency, "local")


def test_an_unknown_kind_is_refused_naming_the_known_ones():
    document = {"version": 1, "gates": [{"name": "x", "kind": "vibes", "queries": {}}]}
    with pytest.raises(GateConfigError, match="'vibes' is not one of"):
        parse_gate_document(document, "local")

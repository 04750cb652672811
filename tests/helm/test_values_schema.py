"""Bad values are rejected before anything reaches a cluster, with a message naming the value."""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml
from helm_chart_render import CHART


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("server.tpSize=0", "at '/server/tpSize': minimum: got 0, want 1"),
        ("server.tpSize=two", "at '/server/tpSize': got string, want integer"),
        ("server.tpsize=4", "at '/server': additional properties 'tpsize' not allowed"),
        ("route.weights.canary=150", "at '/route/weights/canary': maximum: got 150, want 100"),
        ("server.resources.limits.cpu=null", "at '/server/resources/limits': missing property 'cpu'"),
        (
            "server.resources.limits.memory=lots",
            "at '/server/resources/limits/memory': 'lots' does not match",
        ),
        ("server.probes.startup.path=health", "at '/server/probes/startup/path': 'health' does not match"),
        (
            "arms.canary.image.pullPolicy=Sometimes",
            "at '/arms/canary/image/pullPolicy': value must be one of",
        ),
        ("arms.canary.mmInputMode=Batched", "at '/arms/canary/mmInputMode': value must be one of"),
        ("route.armHeader=x canary", "at '/route/armHeader': 'x canary' does not match"),
        ("loadtest.runTime=forever", "at '/loadtest/runTime': 'forever' does not match"),
        ("orchestrator.prometheusUrl=prometheus:9090", "at '/orchestrator/prometheusUrl': 'prometheus:9090'"),
        ("orchestrator.image.tag=", "at '/orchestrator/image/tag': '' does not match"),
        ("server.terminationGracePeriodSeconds=5", "at '/server/terminationGracePeriodSeconds': minimum"),
        ("arms.baseline.replicas=-1", "at '/arms/baseline/replicas': minimum: got -1, want 0"),
        ("server.keepAliveSeconds=0", "at '/server/keepAliveSeconds': minimum: got 0, want 1"),
    ],
)
def test_schema_rejects_bad_values(render_error, bad, message):
    assert message in render_error(bad)


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (("route.weights.canary=20",), "route.weights: baseline (100) + canary (20) must be 100"),
        (
            ("monitoring.serviceMonitor.enabled=true", "monitoring.podMonitor.enabled=true"),
            "monitoring.serviceMonitor.enabled and monitoring.podMonitor.enabled are both true",
        ),
        (("arms.canary.enabled=false",), "orchestrator.enabled is true but arms.canary.enabled is false"),
        (
            (
                "arms.canary.enabled=false",
                "orchestrator.enabled=false",
                "route.weights.canary=10",
                "route.weights.baseline=90",
            ),
            "route.weights.canary is 10 but arms.canary.enabled is false",
        ),
        (("route.enabled=false",), "orchestrator.enabled is true but route.enabled is false"),
        (("loadtest.enabled=true", "loadtest.host="), "loadtest.host is empty but loadtest.enabled is true"),
    ],
)
def test_cross_value_checks_name_both_values(render_error, sets, message):
    assert message in render_error(*sets)


def test_schema_forbids_unknown_keys_everywhere():
    # Every object in the schema either closes its properties or describes a free-form map on purpose.
    schema = json.loads((CHART / "values.schema.json").read_text())
    free_form = {
        "strategy",
        "affinity",
        "podSecurityContext",
        "securityContext",
        "podAnnotations",
        "nodeSelector",
        "commonLabels",
        "labels",
        "annotations",
    }
    open_objects: list[str] = []

    def walk(node, path):
        if isinstance(node, dict):
            if (
                node.get("type") == "object"
                and "properties" in node
                and node.get("additionalProperties") is not False
            ):
                open_objects.append(path)
            for key, child in node.items():
                walk(child, f"{path}/{key}")
        elif isinstance(node, list):
            for i, child in enumerate(node):
                walk(child, f"{path}/{i}")

    walk(schema, "")
    assert open_objects == [p for p in open_objects if p.rsplit("/", 1)[-1] in free_form]
    assert schema["additionalProperties"] is False


def test_defaults_satisfy_the_schema_and_modes_match_the_plugin():
    from mminputs.modes import MMMode
    from sglang_plugin.config import OFF_VALUES

    schema = json.loads((CHART / "values.schema.json").read_text())
    mode_enum = schema["properties"]["arms"]["properties"]["canary"]["properties"]["mmInputMode"]["enum"]
    assert set(mode_enum) == set(OFF_VALUES) | {m.value for m in MMMode}
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    # the defaults themselves pass the schema helm checks them against
    assert [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(values)] == []
    assert values["server"]["mmInputModeEnv"] == "SGLANG_MM_INPUT_MODE"
    from sglang_plugin.config import MODE_ENV

    assert values["server"]["mmInputModeEnv"] == MODE_ENV

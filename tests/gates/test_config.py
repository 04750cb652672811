import copy

import pytest
import yaml

from gates import GateConfigError, load_gate_file, parse_gate_document
from gates.config import DEFAULT_GATE_FILE, render

DEFAULTS = yaml.safe_load(DEFAULT_GATE_FILE.read_text())


def doc_with(change):
    doc = copy.deepcopy(DEFAULTS)
    change(doc)
    return doc


@pytest.mark.parametrize("profile", ["local", "kubernetes"])
def test_defaults_hold_the_mission_criteria_for_both_profiles(profile):
    config = load_gate_file(None, profile=profile)
    gates = {g.name: g for g in config.gates}
    assert gates["cpu_utilisation"].params["max"] == 0.60
    assert gates["latency_e2e_p99"].params["max_seconds"] == 0.600
    # The smallest harmful effects the gates must catch (docs/gates.md: "What a pass means").
    assert gates["latency_e2e_p99"].params["max_ratio"] == 1.15
    assert gates["throughput"].params["min_offered_fraction"] == 0.90
    assert gates["throughput"].params["max_share_drop"] == 0.05
    assert gates["error_rate"].params["max"] == 0.001
    assert gates["memory_leak"].params["leak_bytes_per_minute"] == 1.5 * 1048576
    assert all(g.consecutive_failures == 2 for g in config.gates)
    cadvisor = "container_cpu_usage_seconds_total" in gates["cpu_utilisation"].queries["value"]
    assert cadvisor == (profile == "kubernetes")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["gates"][0].update(maxx=1), r"gates\[0\] \(cpu_utilisation\): unknown key .*maxx"),
        (
            lambda d: d["gates"][0].update(max="high"),
            r"gates\[0\] \(cpu_utilisation\)\.max: 'high' is not of type 'number'",
        ),
        (lambda d: d["gates"][1].update(source="guess"), r"gates\[1\] \(latency_e2e_p99\)\.source"),
        (lambda d: d["gates"][0].update(kind="magic"), r"gates\[0\]\.kind"),
        (lambda d: d["gates"][2].update(name="cpu_utilisation"), "duplicate gate name"),
        (
            lambda d: d["gates"][0]["queries"].pop("value"),
            r"gates\[0\] \(cpu_utilisation\).*'value' is a required",
        ),
        (
            lambda d: d["gates"][0]["queries"]["value"].pop("local"),
            r"queries\.value: no query for profile 'local'",
        ),
        (lambda d: d["settings"].update(consecutive_failures=0), r"settings\.consecutive_failures"),
        (lambda d: d.update(extra=1), "unknown key"),
        (lambda d: d["gates"][0].update(min=0.9), r"min: 0.9 is above max 0.6"),
    ],
)
def test_bad_gate_file_names_the_bad_key(change, message):
    with pytest.raises(GateConfigError, match=message):
        parse_gate_document(doc_with(change), "local")


def test_unreadable_and_malformed_files_are_config_errors(tmp_path):
    with pytest.raises(GateConfigError, match="cannot read gate file"):
        load_gate_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("gates: [\n")
    with pytest.raises(GateConfigError, match="not valid YAML"):
        load_gate_file(bad)


def test_missing_template_variable_is_named():
    config = load_gate_file(None, profile="kubernetes")
    config.check_variables({})  # the file's own defaults fill namespace and pod_regex
    doc = doc_with(lambda d: d["variables"].update(kubernetes={}))
    with pytest.raises(GateConfigError, match="needs variable 'namespace'"):
        parse_gate_document(doc, "kubernetes").check_variables({})
    with pytest.raises(GateConfigError, match="reserved"):
        config.check_variables({"arm": "canary"})


def test_render_fills_per_arm_variables_and_the_window():
    template = 'sum(rate(x{ns="${namespace}",pod=~"${pod_regex}"}[${window}]))'
    variables = {"namespace": "prod", "pod_regex": {"baseline": "b-.*", "canary": "c-.*"}}
    assert (
        render(template, variables, arm="canary", window_s=299.6)
        == 'sum(rate(x{ns="prod",pod=~"c-.*"}[300s]))'
    )
    assert 'pod=~"b-.*"' in render(template, variables, arm="baseline", window_s=60)
    with pytest.raises(GateConfigError, match="window must be positive"):
        render(template, variables, arm="canary", window_s=0)


def test_custom_promql_gate_is_allowed(tmp_path):
    path = tmp_path / "gates.yaml"
    path.write_text(
        "version: 1\n"
        "gates:\n"
        "  - name: queue_depth\n"
        "    kind: threshold\n"
        "    arms: [baseline, canary]\n"
        "    max: 8\n"
        "    queries:\n"
        '      value: max_over_time(sglang:num_queue_reqs{arm="${arm}"}[${window}])\n'
    )
    config = load_gate_file(path, profile="kubernetes")
    assert config.gates[0].arms == ("baseline", "canary") and config.source == str(path)

import json
import xml.etree.ElementTree as ET

import yaml

from gates import load_gate_file
from gates.__main__ import main
from gates.config import render
from gates.export import to_argo, to_flagger


def test_usage_errors_exit_3(capsys):
    assert main(["--prometheus", "http://x", "--window", "10m", "--weights", "baseline=90"]) == 3
    assert main(["--prometheus", "http://x", "--weights", "baseline=90,canary=10"]) == 3
    assert "give the window" in capsys.readouterr().err
    assert main(["evaluate", "--nope"]) == 3
    assert main(["--help"]) == 0


def test_bad_gate_file_exits_3_naming_the_key(tmp_path, capsys):
    path = tmp_path / "g.yaml"
    path.write_text(
        "version: 1\ngates:\n  - name: x\n    kind: threshold\n    mx: 1\n    queries: {value: up}\n"
    )
    assert main(["validate", "--gate-file", str(path)]) == 3
    assert "gates[0] (x)" in capsys.readouterr().err


def test_unreachable_prometheus_exits_2_and_writes_all_outputs(tmp_path):
    out = tmp_path / "out"
    rc = main(
        [
            "--prometheus",
            "http://127.0.0.1:9",
            "--window",
            "5m",
            "--weights",
            "baseline=90,canary=10",
            "--var",
            "unused=1",
            "--json",
            str(out / "r.json"),
            "--markdown",
            str(out / "s.md"),
            "--junit",
            str(out / "j.xml"),
        ]
    )
    assert rc == 2
    record = json.loads((out / "r.json").read_text())
    assert record["verdict"] == "inconclusive" and all(
        g["verdict"] == "inconclusive" for g in record["gates"]
    )
    suite = ET.parse(out / "j.xml").getroot()
    assert suite.get("tests") == str(len(record["gates"])) and suite.get("skipped") == suite.get("tests")
    assert "# Gate evaluation: INCONCLUSIVE" in (out / "s.md").read_text()


def test_validate_and_defaults_print(capsys):
    assert main(["validate", "--profile", "kubernetes"]) == 0
    assert main(["defaults"]) == 0
    assert "cpu_utilisation" in capsys.readouterr().out


def test_argo_export_renders_the_gate_files_promql():
    config = load_gate_file(None, profile="kubernetes")
    template = to_argo(config, prometheus_address="http://prom:9090")
    assert template["apiVersion"] == "argoproj.io/v1alpha1" and template["kind"] == "AnalysisTemplate"
    args = {a["name"]: a.get("value") for a in template["spec"]["args"]}
    assert args["namespace"] == "default" and args["pod_regex-canary"] == "sglang-canary-.*"
    metrics = {m["name"]: m for m in template["spec"]["metrics"]}
    cpu = metrics["cpu-utilisation-canary-max"]
    placeholders = {
        "namespace": "{{args.namespace}}",
        "pod_regex": {"baseline": "{{args.pod_regex-baseline}}", "canary": "{{args.pod_regex-canary}}"},
    }
    gate = next(g for g in config.gates if g.name == "cpu_utilisation")
    expected = render(gate.queries["value"], placeholders, arm="canary", window="{{args.window}}")
    assert cpu["provider"]["prometheus"]["query"] == expected
    assert cpu["successCondition"] == "len(result) == 1 && !isNaN(result[0]) && result[0] <= 0.6"
    assert cpu["failureLimit"] == 1
    assert "latency-e2e-p99-ratio" in metrics and "memory-leak-slope-vs-baseline" in metrics
    assert json.loads(template["metadata"]["annotations"]["canary-gates/not-exported"]) == ["throughput"]
    yaml.safe_load(yaml.safe_dump(template))  # serialisable


def test_flagger_export_uses_flagger_placeholders(tmp_path, capsys):
    config = load_gate_file(None, profile="kubernetes")
    docs = to_flagger(config, prometheus_address="http://prom:9090", namespace="flagger")
    assert all(d["kind"] == "MetricTemplate" and d["apiVersion"] == "flagger.app/v1beta1" for d in docs)
    cpu = next(d for d in docs if d["metadata"]["name"] == "canary-gates-cpu-utilisation-canary-max")
    assert (
        'namespace="{{ namespace }}"' in cpu["spec"]["query"] and "[{{ interval }}]" in cpu["spec"]["query"]
    )
    assert "{{ variables.pod_regex_canary }}" in cpu["spec"]["query"]
    assert json.loads(cpu["metadata"]["annotations"]["canary-gates/threshold-range"]) == {"max": 0.6}
    assert (
        main(["export", "--format", "flagger", "--profile", "kubernetes", "-o", str(tmp_path / "f.yaml")])
        == 0
    )
    assert len(list(yaml.safe_load_all((tmp_path / "f.yaml").read_text()))) == len(docs)


def test_module_entry_point_exit_code():
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "gates", "--bogus"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 3 and "error:" in proc.stderr

import json
import re
import xml.etree.ElementTree as ET

import yaml

from gates import load_gate_file
from gates.__main__ import main
from gates.export import (
    PrometheusAccess,
    argo_dialect,
    flagger_analysis,
    gate_checks,
    not_exported,
    to_argo,
    to_flagger,
)


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
    # every packaged gate was tried and none could be judged (none left out, which would also pass `all`)
    assert [g["name"] for g in record["gates"]] == [g.name for g in load_gate_file(None).gates]
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
    step, background = to_argo(
        config, prometheus=PrometheusAccess("http://prom:9090"), window="5m", interval="1m"
    )
    assert all(
        t["apiVersion"] == "argoproj.io/v1alpha1" and t["kind"] == "AnalysisTemplate"
        for t in (step, background)
    )
    assert (step["metadata"]["name"], background["metadata"]["name"]) == (
        "canary-gates",
        "canary-gates-background",
    )
    args = {a["name"]: a.get("value") for a in step["spec"]["args"]}
    # arms by pod-template hash, filled by the Rollout (valueFrom.podTemplateHashValue): no defaults
    assert args["namespace"] == "default" and args["baseline-hash"] is None and args["canary-hash"] is None
    assert "pod_regex-canary" not in args
    metrics = {m["name"]: m for m in step["spec"]["metrics"]}
    cpu = metrics["cpu-utilisation-canary-max"]
    # gates/defaults.yaml's kubernetes CPU query with Argo's placeholders written in by hand
    assert cpu["provider"]["prometheus"]["query"] == (
        '(sum(rate(container_cpu_usage_seconds_total{namespace="{{args.namespace}}",'
        'pod=~".*-{{args.canary-hash}}-.*",container!="",container!="POD"}[{{args.window}}]))'
        ' / sum(kube_pod_container_resource_limits{namespace="{{args.namespace}}",'
        'pod=~".*-{{args.canary-hash}}-.*",resource="cpu",container!=""}))'
    )
    finite = "len(result) == 1 && !isNaN(result[0]) && !isInf(result[0])"
    assert cpu["successCondition"] == f"{finite} && result[0] <= 0.6"
    assert cpu["failureCondition"] == f"{finite} && result[0] > 0.6"
    # step variant: at most consecutive_failures measurements, the first success ends it, failures are
    # then necessarily in a row; anything neither success nor failure ends it Inconclusive
    assert (cpu["count"], cpu["consecutiveSuccessLimit"], cpu["failureLimit"], cpu["inconclusiveLimit"]) == (
        2,
        1,
        1,
        0,
    )
    assert (cpu["interval"], cpu["initialDelay"]) == ("1m", "5m")
    bg = {m["name"]: m for m in background["spec"]["metrics"]}["cpu-utilisation-canary-max"]
    assert "count" not in bg and "consecutiveSuccessLimit" not in bg and bg["failureLimit"] == 1
    e2e = metrics["latency-e2e-p99-canary"]["provider"]["prometheus"]["query"]
    assert (
        'pod=~".*-{{args.canary-hash}}-.*"' in e2e and "and on() (max(sum by (le)" in e2e and ">= 300)" in e2e
    )
    ratio = metrics["latency-e2e-p99-ratio"]["provider"]["prometheus"]["query"]
    assert 'pod=~".*-{{args.baseline-hash}}-.*"' in ratio and 'pod=~".*-{{args.canary-hash}}-.*"' in ratio
    leak = metrics["memory-leak-slope-vs-baseline"]
    assert "[{{args.window}}:10s]" in leak["provider"]["prometheus"]["query"]
    assert (
        "count_over_time(" in leak["provider"]["prometheus"]["query"]
        and ">= 20)" in leak["provider"]["prometheus"]["query"]
    )
    assert step["metadata"]["annotations"]["canary-gates/not-exported"] == "throughput"
    assert "dryRun" not in step["spec"]
    shadow = to_argo(config, prometheus=PrometheusAccess("http://p"), dry_run=True)[0]
    assert shadow["spec"]["dryRun"] == [{"metricName": ".*"}]
    yaml.safe_load(yaml.safe_dump(step))  # serialisable


def test_argo_export_guards_each_check_with_its_sample_count():
    config = load_gate_file(None, profile="kubernetes")
    dialect = argo_dialect(config)
    by_gate = {g.name: gate_checks(g, dialect) for g in config.gates}
    assert by_gate["throughput"] == [] and not_exported(config) == ["throughput"]
    (errors,) = by_gate["error_rate"]
    assert errors.query.endswith(">= 300)") and (errors.op, errors.bound) == ("<=", 0.001)
    (leak,) = by_gate["memory_leak"]
    assert leak.bound == 1572864 / 60


def test_argo_judges_the_error_rate_by_its_interval_and_flagger_by_its_value():
    """Argo can say Inconclusive: its error metric succeeds only when the rate's upper bound is within 0.1%
    and fails only when its lower bound is beyond (docs/gates.md); Flagger compares the rate itself."""
    config = load_gate_file(None, profile="kubernetes")
    step, _ = to_argo(config, prometheus=PrometheusAccess("http://p"))
    errors = {m["name"]: m for m in step["spec"]["metrics"]}["error-rate-canary"]
    query = errors["provider"]["prometheus"]["query"]
    assert query.startswith("sort(label_replace(") and query.count("label_replace(") == 2
    assert '"bound", "lower", "", "")' in query and '"bound", "upper", "", "")' in query
    assert "clamp_min(" in query and "2.57583" in query  # the bounds at the gate's 0.99, each side 0.5%
    two = (
        "len(result) == 2 && !isNaN(result[0]) && !isInf(result[0]) && !isNaN(result[1]) && !isInf(result[1])"
    )
    assert errors["successCondition"] == f"{two} && result[1] <= 0.001"
    assert errors["failureCondition"] == f"{two} && result[0] > 0.001"
    flagger = next(
        d
        for d in to_flagger(config, prometheus=PrometheusAccess("http://p"))
        if "error-rate" in d["metadata"]["name"]
    )
    assert "clamp_min(" not in flagger["spec"]["query"] and "sort(" not in flagger["spec"]["query"]


def test_flagger_export_uses_flagger_placeholders(tmp_path, capsys):
    config = load_gate_file(None, profile="kubernetes")
    docs = to_flagger(config, prometheus=PrometheusAccess("http://prom:9090"), namespace="flagger")
    assert all(d["kind"] == "MetricTemplate" and d["apiVersion"] == "flagger.app/v1beta1" for d in docs)
    cpu = next(d for d in docs if d["metadata"]["name"] == "canary-gates-cpu-utilisation-canary-max")
    query = cpu["spec"]["query"]
    assert 'namespace="{{ namespace }}"' in query and "[{{ interval }}]" in query
    # the canary is <target>, the baseline <target>-primary; several series read as NaN (no value)
    assert 'pod=~"{{ target }}-[a-z0-9]+-[a-z0-9]+"' in query and query.startswith("vector(scalar(")
    ratio = next(d for d in docs if d["metadata"]["name"].endswith("latency-e2e-p99-ratio"))["spec"]["query"]
    assert (
        'pod=~"{{ target }}-primary-[a-z0-9]+-[a-z0-9]+"' in ratio
        and 'pod=~"{{ target }}-[a-z0-9]+-[a-z0-9]+"' in ratio
    )
    assert (
        main(["export", "--format", "flagger", "--profile", "kubernetes", "-o", str(tmp_path / "f.yaml")])
        == 0
    )
    assert len(list(yaml.safe_load_all((tmp_path / "f.yaml").read_text()))) == len(docs)
    assert "not exported (see docs/gates.md): throughput" in capsys.readouterr().err


def test_flagger_analysis_block_carries_bounds_windows_and_variables(tmp_path):
    config = load_gate_file(None, profile="kubernetes")
    block = flagger_analysis(config, template_namespace="flagger", interval="30s", window="5m")["analysis"]
    assert (block["interval"], block["threshold"], block["stepWeights"]) == ("30s", 2, [10, 50])
    metrics = {m["name"]: m for m in block["metrics"]}
    assert len(metrics) == len(to_flagger(config, prometheus=PrometheusAccess("http://p")))
    cpu = metrics["cpu-utilisation-canary-max"]
    assert cpu["templateRef"] == {"name": "canary-gates-cpu-utilisation-canary-max", "namespace": "flagger"}
    assert cpu["thresholdRange"] == {"max": 0.6} and cpu["interval"] == "5m"
    assert "templateVariables" not in cpu  # namespace and the arms come from the Canary itself
    # a variable of the user's own must reach Flagger, which renders with missingkey=error
    path = tmp_path / "g.yaml"
    path.write_text(
        "version: 1\nvariables: {kubernetes: {job: {baseline: a, canary: b}, limit: 4}}\ngates:\n"
        "  - {name: up, kind: threshold, min: 1, queries: {value: 'up{job=\"${job}\"} * ${limit}'}}\n"
    )
    custom = load_gate_file(path, profile="kubernetes")
    (metric,) = flagger_analysis(custom)["analysis"]["metrics"]
    assert metric["templateVariables"] == {"job_baseline": "a", "job_canary": "b", "limit": "4"}
    assert metric["thresholdRange"] == {"min": 1.0}
    (template,) = to_flagger(custom, prometheus=PrometheusAccess("http://p"))
    assert (
        "{{ variables.job_canary }}" in template["spec"]["query"]
        and "{{ variables.limit }}" in template["spec"]["query"]
    )
    out = tmp_path / "analysis.yaml"
    assert (
        main(
            [
                "export",
                "--format",
                "flagger-analysis",
                "--gate-file",
                str(path),
                "--profile",
                "kubernetes",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    assert yaml.safe_load(out.read_text())["analysis"]["metrics"][0]["name"] == "up-canary-min"


def test_export_rejects_bad_durations_and_missing_flagger_variables(tmp_path, capsys):
    assert main(["export", "--format", "argo", "--window", "five minutes"]) == 3
    path = tmp_path / "g.yaml"
    path.write_text(
        "version: 1\ngates:\n  - {name: up, kind: threshold, max: 1, queries: {value: 'up{job=\"${job}\"}'}}\n"
    )
    assert main(["export", "--format", "flagger-analysis", "--gate-file", str(path)]) == 3
    assert "--var job=" in capsys.readouterr().err
    assert main(["export", "--format", "flagger-analysis", "--gate-file", str(path), "--var", "job=x"]) == 0


def test_module_entry_point_exit_code():
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "gates", "--bogus"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 3 and "error:" in proc.stderr


def test_dry_run_gates_are_argo_dry_run_metrics_and_left_out_of_flagger_analysis(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text(
        "version: 1\ngates:\n"
        "  - {name: up, kind: threshold, min: 1, queries: {value: 'up'}}\n"
        "  - {name: trial, kind: threshold, max: 2, dry_run: true, consecutive_failures: 1,"
        " queries: {value: 'errors'}}\n"
        "  - {name: pretrial, kind: threshold, max: 2, queries: {value: 'errors'}}\n"
    )
    config = load_gate_file(path, profile="kubernetes")
    step, background = to_argo(config, prometheus=PrometheusAccess("http://p"))
    assert step["spec"]["dryRun"] == background["spec"]["dryRun"] == [{"metricName": "^trial-canary-max$"}]
    names = {m["name"] for m in step["spec"]["metrics"]}
    assert names == {"up-canary-min", "trial-canary-max", "pretrial-canary-max"}
    # Argo matches metricName as a regular expression: only the dry-run gate's own check is dry-run
    assert [n for n in sorted(names) if re.search(step["spec"]["dryRun"][0]["metricName"], n)] == [
        "trial-canary-max"
    ]
    templates = {
        t["metadata"]["name"]: t for t in to_flagger(config, prometheus=PrometheusAccess("http://p"))
    }
    assert (
        templates["canary-gates-trial-canary-max"]["metadata"]["annotations"]["canary-gates/dry-run"]
        == "true"
    )
    block = flagger_analysis(config)["analysis"]
    assert [m["name"] for m in block["metrics"]] == ["up-canary-min", "pretrial-canary-max"]
    assert block["threshold"] == 2  # the deciding gates' count, not the dry-run gate's 1


def test_rate_sizes_the_timing_by_the_binding_gate_at_the_hardest_step():
    from scipy.stats import poisson

    from gates.export import SCRAPE_ALLOWANCE_S, sized_timing

    config = load_gate_file(None, profile="kubernetes")
    # 16 req/s, 10% to the canary: 1.6 req/s must bring 300 latency samples in all but ~2 in 1,000 windows
    timing = sized_timing(config, rate_rps=16.0, step_weights=[10, 50])
    assert timing.window == timing.interval == "250s"
    assert "latency_e2e_p99 at 10%" in timing.basis
    traffic_s = 250 - SCRAPE_ALLOWANCE_S
    assert poisson.cdf(299, 1.6 * traffic_s) < 0.0025  # the window really holds the samples
    assert poisson.cdf(299, 1.6 * (traffic_s - 30)) > 0.01  # and is not much longer than needed
    # twice the rate halves the latency need; the leak gate's 20 points at 10 s then bind
    faster = sized_timing(config, rate_rps=32.0, step_weights=[10, 50])
    assert faster.window == "230s" and "memory_leak" in faster.basis
    # at 90% the baseline is the scarce arm
    assert sized_timing(config, rate_rps=16.0, step_weights=[90]).window == "250s"


def test_rate_refuses_steps_without_traffic_on_both_arms_and_conflicting_timing(capsys):
    assert main(["export", "--format", "flagger-analysis", "--rate", "16", "--step-weights", "10,100"]) == 3
    assert "1 to 99" in capsys.readouterr().err
    assert main(["export", "--format", "argo", "--rate", "16", "--window", "5m"]) == 3
    assert "give one or the other" in capsys.readouterr().err
    assert main(["export", "--format", "flagger-analysis", "--interval", "1h"]) == 3
    assert "Flagger takes no hours" in capsys.readouterr().err


def test_sized_timing_reaches_both_exports(tmp_path, capsys):
    out = tmp_path / "analysis.yaml"
    assert main(["export", "--format", "flagger-analysis", "--rate", "16", "-o", str(out)]) == 0
    block = yaml.safe_load(out.read_text())["analysis"]
    # the query window as sized; the interval the 590 s the leak check must read of the step's traffic and
    # the pods' life (60 s warm-up, 300 s envelope, 20 points at 10 s, 30 s of scrape delay): Flagger checks
    # one interval after each weight change
    assert block["interval"] == "590s" and {m["interval"] for m in block["metrics"]} == {"250s"}
    err = capsys.readouterr().err
    assert "sized for 16 req/s" in err and "interval 590s: Flagger checks one interval" in err
    out = tmp_path / "argo.yaml"
    assert main(["export", "--format", "argo", "--rate", "16", "-o", str(out)]) == 0
    assert "history-delay 590s: memory-leak-slope-vs-baseline must read" in capsys.readouterr().err
    step, background = yaml.safe_load_all(out.read_text())
    assert {a["value"] for a in step["spec"]["args"] if a["name"] == "window"} == {"250s"}
    # both variants wait a window before measuring (an earlier measurement would be Inconclusive), the
    # leak check until the pods started with the step have lived 590 s: an arg a later step can shorten
    for template in (step, background):
        args = {a["name"]: a.get("value") for a in template["spec"]["args"]}
        assert args["history-delay"] == "590s"
        delays = {m["name"]: (m["initialDelay"], m["interval"]) for m in template["spec"]["metrics"]}
        assert delays.pop("memory-leak-slope-vs-baseline") == ("{{args.history-delay}}", "250s")
        assert set(delays.values()) == {("250s", "250s")}


def test_timing_given_by_hand_is_kept_for_every_check(tmp_path, capsys):
    out = tmp_path / "analysis.yaml"
    assert main(["export", "--format", "flagger-analysis", "--interval", "1m", "-o", str(out)]) == 0
    assert yaml.safe_load(out.read_text())["analysis"]["interval"] == "1m"
    assert "Flagger checks one interval" not in capsys.readouterr().err
    # the defaults (5m window, 1m interval) are not given: Flagger's interval still covers the history
    assert main(["export", "--format", "flagger-analysis", "-o", str(out)]) == 0
    assert yaml.safe_load(out.read_text())["analysis"]["interval"] == "590s"
    out = tmp_path / "argo.yaml"
    assert main(["export", "--format", "argo", "--initial-delay", "1s", "-o", str(out)]) == 0
    assert "history-delay" not in capsys.readouterr().err
    for template in yaml.safe_load_all(out.read_text()):
        assert {m["initialDelay"] for m in template["spec"]["metrics"]} == {"1s"}
        assert "history-delay" not in {a["name"] for a in template["spec"]["args"]}
    assert main(["export", "--format", "argo", "-o", str(out)]) == 0
    step, _ = yaml.safe_load_all(out.read_text())
    assert {a["name"]: a.get("value") for a in step["spec"]["args"]}["history-delay"] == "590s"
    delays = {m["name"]: m["initialDelay"] for m in step["spec"]["metrics"]}
    assert delays.pop("memory-leak-slope-vs-baseline") == "{{args.history-delay}}"
    assert set(delays.values()) == {"5m"}


ACCESS = [
    "--prometheus-header",
    "X-Scope-OrgID: team-a",
    "--prometheus-secret",
    "prom-auth",
    "--prometheus-insecure",
]


def _exported(tmp_path, fmt, *options):
    out = tmp_path / f"{fmt}.yaml"
    assert main(["export", "--format", fmt, "--profile", "kubernetes", *options, "-o", str(out)]) == 0
    return [d for d in yaml.safe_load_all(out.read_text()) if d]


def test_prometheus_access_reaches_each_providers_own_fields(tmp_path):
    step, background = _exported(tmp_path, "argo", *ACCESS, "--prometheus-timeout", "20", "--cluster-scope")
    assert step["kind"] == background["kind"] == "ClusterAnalysisTemplate"
    args = {a["name"]: a for a in step["spec"]["args"]}
    assert args["prometheus-address"]["value"] == "http://prometheus.monitoring:9090"
    assert args["prometheus-token"]["valueFrom"] == {"secretKeyRef": {"name": "prom-auth", "key": "token"}}
    for metric in step["spec"]["metrics"] + background["spec"]["metrics"]:
        provider = metric["provider"]["prometheus"]
        assert provider["address"] == "{{args.prometheus-address}}" and provider["query"]
        assert provider["headers"] == [
            {"key": "X-Scope-OrgID", "value": "team-a"},
            {"key": "Authorization", "value": "Bearer {{args.prometheus-token}}"},
        ]
        assert provider["insecure"] is True and provider["timeout"] == 20
    # the address left to Argo's controller (ARGO_ROLLOUTS_PROMETHEUS_ADDRESS): neither arg nor field
    bare, _ = _exported(tmp_path, "argo", "--prometheus-address-from-controller")
    assert "prometheus-address" not in {a["name"] for a in bare["spec"]["args"]}
    assert all(set(m["provider"]["prometheus"]) == {"query"} for m in bare["spec"]["metrics"])
    assert bare["kind"] == "AnalysisTemplate"

    docs = _exported(tmp_path, "flagger", *ACCESS, "--prometheus-header", "X-Scope-OrgID: team-b")
    assert all(
        d["spec"]["provider"]
        == {
            "type": "prometheus",
            "address": "http://prometheus.monitoring:9090",
            "headers": {"X-Scope-OrgID": ["team-a", "team-b"]},
            "secretRef": {"name": "prom-auth"},
            "insecureSkipVerify": True,
        }
        for d in docs
    )


def test_prometheus_access_options_a_provider_cannot_take_are_refused(capsys):
    refused = {
        ("flagger", "--prometheus-timeout", "20"): "fixed 5 s query timeout",
        ("flagger", "--prometheus-address-from-controller"): "Argo only",
        ("flagger", "--cluster-scope"): "Argo only",
        ("argo", "--prometheus-address-from-controller", "--prometheus-address", "http://p"): "not both",
        ("argo", "--prometheus-header", "no colon"): "give 'Name: value'",
        ("argo", "--prometheus-header", "Bad Name: v"): "give 'Name: value'",
        ("argo", "--prometheus-timeout", "0"): "positive number of seconds",
    }
    for (fmt, *options), message in refused.items():
        assert main(["export", "--format", fmt, "--profile", "kubernetes", *options]) == 3, options
        assert message in capsys.readouterr().err, options

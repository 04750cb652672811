"""Assertions on the objects `helm template` renders for every ci/ scenario."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from helm_chart_render import CHART, KUBE_VERSION, NAMESPACE, RELEASE, SCENARIOS

ARMS = ("baseline", "canary")
FULLNAME = f"{RELEASE}-sglang-vlm-canary"


def scenario_values(scenario: str) -> dict[str, Any]:
    """The chart defaults overlaid with a scenario file (maps merge, everything else replaces)."""

    def merge(base: Any, over: Any) -> Any:
        if isinstance(base, dict) and isinstance(over, dict):
            return {k: merge(base[k], over[k]) if k in base else over[k] for k in over} | {
                k: v for k, v in base.items() if k not in over
            }
        return over

    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    return merge(defaults, yaml.safe_load((CHART / "ci" / scenario).read_text()) or {})


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def container(obj: dict[str, Any], name: str) -> dict[str, Any]:
    found = [c for c in obj["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    assert len(found) == 1, f"{obj['metadata']['name']} has no single container {name}"
    return found[0]


def env_of(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def deployed_arms(values: dict[str, Any]) -> tuple[str, ...]:
    return ARMS if values["arms"]["canary"]["enabled"] else ("baseline",)


def fullname(values: dict[str, Any]) -> str:
    return values["fullnameOverride"] or FULLNAME


@pytest.fixture(params=SCENARIOS)
def scenario(request: pytest.FixtureRequest, render):
    name = request.param
    if scenario_values(name)["loadtest"]["enabled"] and not (CHART / "files/loadtest/vlm.py").exists():
        pytest.fail("the chart holds no files/loadtest/vlm.py (files/loadtest links to loadtest/)")
    return name, scenario_values(name), render(name)


def test_every_object_carries_the_common_labels(scenario):
    _, _, out = scenario
    assert out.objects
    for obj in out.objects:
        labels = obj["metadata"].get("labels", {})
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "helm.sh/chart"):
            assert key in labels, f"{obj['kind']}/{obj['metadata']['name']} lacks label {key}"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert "namespace" not in obj["metadata"] or obj["metadata"]["namespace"] == NAMESPACE


def test_one_deployment_per_arm_with_gpu_shm_probes_and_limits(scenario):
    _, values, out = scenario
    server = values["server"]
    arms = deployed_arms(values)
    assert sorted(d["metadata"]["name"] for d in out.of_kind("Deployment")) == sorted(
        f"{fullname(values)}-{arm}" for arm in arms
    )
    for arm in arms:
        dep = out.get("Deployment", f"{fullname(values)}-{arm}")
        pod = dep["spec"]["template"]
        assert selects(dep["spec"]["selector"]["matchLabels"], pod["metadata"]["labels"])
        assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == arm
        assert pod["metadata"]["labels"]["arm"] == arm
        assert dep["spec"]["replicas"] == values["arms"][arm]["replicas"]
        c = container(dep, "sglang")
        tp = server["tpSize"]
        assert c["resources"]["limits"]["nvidia.com/gpu"] == tp
        assert c["resources"]["requests"]["nvidia.com/gpu"] == tp
        for kind in ("requests", "limits"):
            assert str(c["resources"][kind]["cpu"]) == str(server["resources"][kind]["cpu"])
            assert c["resources"][kind]["memory"] == server["resources"][kind]["memory"]
        args = c["args"]
        assert args[args.index("--tp-size") + 1] == str(tp)
        assert args[args.index("--model-path") + 1] == server["modelPath"]
        assert args[args.index("--port") + 1] == str(server["port"])
        assert args[args.index("--host") + 1] == "0.0.0.0"
        assert "--enable-metrics" in args
        for extra in server["extraArgs"] + values["arms"][arm]["extraArgs"]:
            assert extra in args
        assert c["command"] == (values["arms"][arm]["command"] or server["command"])
        mode = values["arms"][arm]["mmInputMode"]
        assert env_of(c).get(server["mmInputModeEnv"]) == (mode or None)
        # sglang's own keep-alive (5 s) is shorter than a gateway's idle timeout; the chart's is longer
        assert env_of(c)["SGLANG_TIMEOUT_KEEP_ALIVE"] == str(server["keepAliveSeconds"])
        assert server["keepAliveSeconds"] > 90  # Traefik's idle timeout toward the pods
        assert c["ports"] == [{"name": "http", "containerPort": server["port"], "protocol": "TCP"}]

        spec = pod["spec"]
        shm = [v for v in spec["volumes"] if v["name"] == "dshm"]
        assert shm == [
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": server["shmSizeLimit"]}}
        ]
        assert {"name": "dshm", "mountPath": "/dev/shm"} in c["volumeMounts"]
        for vol in server["extraVolumes"]:
            assert vol in spec["volumes"]
        startup = c["startupProbe"]
        assert startup["httpGet"] == {"path": "/health_generate", "port": "http"}
        # A model load may take many minutes; the probe must allow it, and time out above sglang's 20 s.
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 600
        assert startup["timeoutSeconds"] > 20
        assert c["readinessProbe"]["httpGet"]["path"] in ("/ready", "/health_generate")
        assert c["livenessProbe"]["httpGet"]["path"] == "/health"
        assert spec["terminationGracePeriodSeconds"] >= 60
        assert spec["automountServiceAccountToken"] is False
        assert spec["nodeSelector"] == server["nodeSelector"]
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
        assert spec.get("affinity", {}) == server["affinity"]


def test_scrape_annotations_follow_the_switch(scenario):
    _, values, out = scenario
    for dep in out.of_kind("Deployment"):
        annotations = dep["spec"]["template"]["metadata"].get("annotations", {})
        if values["monitoring"]["scrapeAnnotations"]:
            assert annotations["prometheus.io/scrape"] == "true"
            assert annotations["prometheus.io/port"] == str(values["server"]["port"])
            assert annotations["prometheus.io/path"] == "/metrics"
        else:
            assert "prometheus.io/scrape" not in annotations


def test_services_select_exactly_their_arm(scenario):
    _, values, out = scenario
    pods = {
        d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]: d["spec"]["template"]
        for d in out.of_kind("Deployment")
    }
    for arm in deployed_arms(values):
        svc = out.get("Service", f"{fullname(values)}-{arm}")
        chosen = [a for a, pod in pods.items() if selects(svc["spec"]["selector"], pod["metadata"]["labels"])]
        assert chosen == [arm]
        assert svc["spec"]["ports"][0]["targetPort"] == "http"
    stable = out.get("Service", fullname(values))
    chosen = [a for a, pod in pods.items() if selects(stable["spec"]["selector"], pod["metadata"]["labels"])]
    assert chosen == ["baseline"]


def test_httproute_splits_by_weight_and_names_the_arm(scenario):
    _, values, out = scenario
    route = out.get("HTTPRoute", fullname(values))
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["spec"]["parentRefs"] == values["route"]["parentRefs"]
    (rule,) = route["spec"]["rules"]
    refs = rule["backendRefs"]
    assert [r["name"] for r in refs] == [f"{fullname(values)}-{arm}" for arm in deployed_arms(values)]
    assert sum(r["weight"] for r in refs) == 100
    for ref, arm in zip(refs, deployed_arms(values), strict=True):
        assert ref["weight"] == values["route"]["weights"][arm]
        assert ref["port"] == out.get("Service", ref["name"])["spec"]["ports"][0]["port"]
        assert ref["filters"] == [
            {
                "type": "ResponseHeaderModifier",
                "responseHeaderModifier": {"set": [{"name": "x-canary-arm", "value": arm}]},
            }
        ]
    ((builds,),) = [f["responseHeaderModifier"]["set"] for f in rule["filters"]]
    assert builds["name"] == "x-canary-builds" and len(builds["value"]) == 12
    if values["route"]["timeouts"]:
        assert rule["timeouts"] == values["route"]["timeouts"]
    assert route["spec"].get("hostnames", []) == values["route"]["hostnames"]


def test_pod_disruption_budget_per_arm(scenario):
    _, values, out = scenario
    pdbs = out.of_kind("PodDisruptionBudget")
    if not values["server"]["podDisruptionBudget"]["enabled"]:
        assert pdbs == []
        return
    assert len(pdbs) == len(deployed_arms(values))
    for arm in deployed_arms(values):
        pdb = out.get("PodDisruptionBudget", f"{fullname(values)}-{arm}")
        pod = out.get("Deployment", f"{fullname(values)}-{arm}")["spec"]["template"]
        assert selects(pdb["spec"]["selector"]["matchLabels"], pod["metadata"]["labels"])
        assert pdb["spec"]["maxUnavailable"] == values["server"]["podDisruptionBudget"]["maxUnavailable"]


def test_monitors_relabel_the_arm(scenario):
    _, values, out = scenario
    mon = values["monitoring"]
    for kind, key, endpoints in (
        ("ServiceMonitor", "serviceMonitor", "endpoints"),
        ("PodMonitor", "podMonitor", "podMetricsEndpoints"),
    ):
        found = out.of_kind(kind)
        if not mon[key]["enabled"]:
            assert found == []
            continue
        (m,) = found
        assert selects(mon[key]["labels"], m["metadata"]["labels"])
        sel = m["spec"]["selector"]
        assert sel["matchExpressions"] == [
            {"key": "app.kubernetes.io/component", "operator": "In", "values": list(deployed_arms(values))}
        ]
        (ep,) = m["spec"][endpoints]
        assert ep["port"] == "http" and ep["path"] == "/metrics" and ep["interval"] == mon[key]["interval"]
        assert {
            "sourceLabels": ["__meta_kubernetes_pod_label_app_kubernetes_io_component"],
            "targetLabel": "arm",
        } in ep["relabelings"]
        # The selector must pick the arms' Services (or pods) and nothing else.
        targets = (
            out.of_kind("Service")
            if kind == "ServiceMonitor"
            else [{"metadata": d["spec"]["template"]["metadata"]} for d in out.of_kind("Deployment")]
        )
        picked = [
            t["metadata"]["labels"]["app.kubernetes.io/component"]
            for t in targets
            if selects(sel["matchLabels"], t["metadata"]["labels"])
            and t["metadata"]["labels"].get("app.kubernetes.io/component") in deployed_arms(values)
        ]
        assert sorted(picked) == sorted(deployed_arms(values))
        if kind == "PodMonitor":
            # Flagger's `-primary` copy of a Deployment renames the selector label app.kubernetes.io/name
            # to `<name>-primary` on its pods: they must still be scraped.
            primaries = [
                t["metadata"]["labels"]
                | {"app.kubernetes.io/name": t["metadata"]["labels"]["app.kubernetes.io/name"] + "-primary"}
                for t in targets
            ]
            assert all(selects(sel["matchLabels"], labels) for labels in primaries)


def test_orchestrator_role_is_least_privilege(scenario):
    _, values, out = scenario
    if not values["orchestrator"]["enabled"]:
        assert (
            out.of_kind("Role") == []
            and out.of_kind("Job") == []
            or all("rollout" not in j["metadata"]["name"] for j in out.of_kind("Job"))
        )
        assert out.of_kind("Role") == []
        return
    name = fullname(values)
    role = out.get("Role", f"{name}-orchestrator")
    rules = {
        (tuple(r["apiGroups"]), tuple(r["resources"]), tuple(r.get("resourceNames", ()))): sorted(r["verbs"])
        for r in role["rules"]
    }
    assert rules == {
        (("",), ("pods",), ()): ["get", "list", "watch"],
        (("apps",), ("deployments",), ()): ["get", "list", "watch"],
        (("apps",), ("deployments",), (f"{name}-canary",)): ["patch"],
        (("apps",), ("deployments/scale",), (f"{name}-canary",)): ["get", "patch", "update"],
        (("gateway.networking.k8s.io",), ("httproutes",), (name,)): ["get", "patch"],
        (("",), ("configmaps",), (f"{name}-rollout-state",)): ["get", "update"],
    }
    # Every resourceName the Role grants names an object this release renders.
    out.get("Deployment", f"{name}-canary")
    out.get("HTTPRoute", name)
    out.get("ConfigMap", f"{name}-rollout-state")
    assert out.of_kind("ClusterRole") == [] and out.of_kind("ClusterRoleBinding") == []

    sa_name = values["orchestrator"]["serviceAccount"]["name"] or f"{name}-orchestrator"
    sa = out.get("ServiceAccount", sa_name)
    assert sa["metadata"].get("annotations", {}) == values["orchestrator"]["serviceAccount"]["annotations"]
    binding = out.get("RoleBinding", f"{name}-orchestrator")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa_name, "namespace": NAMESPACE}]


def test_orchestrator_job_runs_with_its_account_and_names_its_objects(scenario):
    _, values, out = scenario
    if not values["orchestrator"]["enabled"]:
        assert out.of_kind("Job") == []
        return
    name = fullname(values)
    o = values["orchestrator"]
    job = out.get("Job", f"{name}-rollout-r1")
    spec = job["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == (o["serviceAccount"]["name"] or f"{name}-orchestrator")
    assert spec["restartPolicy"] == "Never"
    assert spec["securityContext"]["runAsNonRoot"] is True
    c = container(job, "orchestrator")
    assert c["command"] == o["command"]
    assert not any("{{" in a for a in c["args"]), c["args"]
    args = c["args"]
    assert args[0] == "run"
    assert args[args.index("--kube-namespace") + 1] == NAMESPACE
    assert args[args.index("--release") + 1] == RELEASE
    assert args[args.index("--profile") + 1] == o["profile"]
    env = env_of(c)
    assert env["ROLLOUT_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}  # the lease's holder
    out.get("HTTPRoute", env["ROLLOUT_HTTPROUTE"])
    out.get("Deployment", env["ROLLOUT_BASELINE_DEPLOYMENT"])
    out.get("Deployment", env["ROLLOUT_CANARY_DEPLOYMENT"])
    out.get("ConfigMap", env["ROLLOUT_STATE_CONFIGMAP"])
    route_backends = [
        r["name"] for r in out.get("HTTPRoute", env["ROLLOUT_HTTPROUTE"])["spec"]["rules"][0]["backendRefs"]
    ]
    assert route_backends == [env["ROLLOUT_BASELINE_SERVICE"], env["ROLLOUT_CANARY_SERVICE"]]
    out.get("Service", env["ROLLOUT_BASELINE_SERVICE"])
    assert env["ROLLOUT_PROMETHEUS_URL"] == o["prometheusUrl"]
    assert env["ROLLOUT_ARM_HEADER"] == "x-canary-arm"
    volumes = {v["name"]: v for v in spec["volumes"]}
    if o["reportsClaim"]:
        assert volumes["reports"]["persistentVolumeClaim"] == {"claimName": o["reportsClaim"]}
    else:
        assert volumes["reports"] == {"name": "reports", "emptyDir": {}}
    if o["gatesConfig"]:
        gates = out.get("ConfigMap", f"{name}-gates")
        assert yaml.safe_load(gates["data"]["gates.yaml"]) == yaml.safe_load(o["gatesConfig"])
        assert env["ROLLOUT_GATES_CONFIG"] == "/etc/sglang-vlm-canary/gates.yaml"
        assert volumes["gates"]["configMap"]["name"] == f"{name}-gates"
    else:
        assert "ROLLOUT_GATES_CONFIG" not in env


def test_state_configmap_renders_no_data(scenario):
    # Rendering data would let every `helm upgrade` overwrite the orchestrator's state.
    _, values, out = scenario
    if values["orchestrator"]["enabled"]:
        assert "data" not in out.get("ConfigMap", f"{fullname(values)}-rollout-state")


def flag(args: list[str], name: str) -> str:
    assert args.count(name) == 1, f"{name} appears {args.count(name)} times in {args}"
    return args[args.index(name) + 1]


def test_loadtest_jobs(scenario):
    _, values, out = scenario
    lt = values["loadtest"]
    name = fullname(values)
    jobs = [
        j
        for j in out.of_kind("Job")
        if j["metadata"]["labels"]["app.kubernetes.io/component"].startswith("loadtest")
    ]
    if not lt["enabled"]:
        assert jobs == []
        assert not [c for c in out.of_kind("ConfigMap") if c["metadata"]["name"].endswith("-locustfile")]
        return
    assert "vlm.py" in out.get("ConfigMap", f"{name}-locustfile")["data"]
    if lt["workers"] == 0:
        (driver,) = jobs
        assert driver["metadata"]["name"] == f"{name}-loadtest-r1"
        workers = []
    else:
        assert len(jobs) == 2
        driver = out.get("Job", f"{name}-loadtest-master-r1")
        worker = out.get("Job", f"{name}-loadtest-worker-r1")
        workers = [worker]
        dargs = container(driver, "locust")["args"]
        assert "--master" in dargs and flag(dargs, "--expect-workers") == str(lt["workers"])
        wargs = container(worker, "locust")["args"]
        assert "--worker" in wargs
        # Workers get the load options from the master at spawn; giving them a rate too would be ignored.
        assert "--rate" not in wargs and "--host" not in wargs
        svc = out.get("Service", flag(wargs, "--master-host"))
        assert selects(svc["spec"]["selector"], driver["spec"]["template"]["metadata"]["labels"])
        assert not selects(svc["spec"]["selector"], worker["spec"]["template"]["metadata"]["labels"])
        assert worker["spec"]["parallelism"] == worker["spec"]["completions"] == lt["workers"]
    dargs = container(driver, "locust")["args"]
    assert "--headless" in dargs
    assert flag(dargs, "--host") == lt["host"]
    assert float(flag(dargs, "--rate")) == lt["rate"]
    assert flag(dargs, "--run-time") == lt["runTime"]
    assert flag(dargs, "--model") == values["server"]["servedModelName"]
    assert flag(dargs, "--arm-header") == "x-canary-arm"
    if lt["extraArgs"]:
        assert dargs[-len(lt["extraArgs"]) :] == lt["extraArgs"]
    results = flag(dargs, "--summary-json").rsplit("/", 1)[0]
    assert flag(dargs, "--requests-jsonl").rsplit("/", 1)[0] == results
    assert {"name": "results", "mountPath": results} in container(driver, "locust")["volumeMounts"]
    results_volume = next(v for v in driver["spec"]["template"]["spec"]["volumes"] if v["name"] == "results")
    if lt["resultsClaim"]:
        assert results_volume["persistentVolumeClaim"] == {"claimName": lt["resultsClaim"]}
    for job in [driver, *workers]:
        c = container(job, "locust")
        assert c["command"] == ["locust"]
        assert c["args"][:2] == ["-f", "/opt/locust/loadtest/vlm.py"]
        assert {"name": "locustfile", "mountPath": "/opt/locust/loadtest", "readOnly": True} in c[
            "volumeMounts"
        ]
        assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
        for e in lt["env"]:
            assert env_of(c)[e["name"]] == e["value"]


def test_helm_test_pod_checks_every_service(scenario):
    _, values, out = scenario
    (pod,) = [p for p in out.of_kind("Pod") if p["metadata"]["annotations"].get("helm.sh/hook") == "test"]
    args = pod["spec"]["containers"][0]["args"]
    assert args[2:] == [f"{fullname(values)}-{arm}" for arm in deployed_arms(values)] + [fullname(values)]
    assert values["server"]["servedModelName"] in args[0]


# Scenario-specific facts, so a scenario that silently stopped exercising its feature fails.


def builds_header(out) -> str:
    return out.get("HTTPRoute", FULLNAME)["spec"]["rules"][0]["filters"][0]["responseHeaderModifier"]["set"][
        0
    ]["value"]


def test_builds_header_changes_with_a_build_and_only_then(render):
    # A changed value replaces the route's rules on upgrade (weights back to the chart's); see httproute.yaml.
    base = builds_header(render("default-values.yaml"))
    for build_change in (
        "arms.canary.image.tag=0.5.24",
        "arms.canary.mmInputMode=batched",
        "server.tpSize=8",
    ):
        assert builds_header(render("default-values.yaml", sets=(build_change,))) != base, build_change
    for other in (
        "orchestrator.profile=quick",
        "route.weights.canary=10,route.weights.baseline=90",
        "loadtest.rate=3",
    ):
        assert builds_header(render("default-values.yaml", sets=(other,))) == base, other


def test_default_sends_all_traffic_to_baseline(render):
    route = render("default-values.yaml").get("HTTPRoute", FULLNAME)
    assert [r["weight"] for r in route["spec"]["rules"][0]["backendRefs"]] == [100, 0]


def test_tp8_scenario(render):
    out = render("tp8-podmonitor-values.yaml")
    canary = container(out.get("Deployment", f"{FULLNAME}-canary"), "sglang")
    assert canary["resources"]["limits"]["nvidia.com/gpu"] == 8
    assert canary["image"] == "registry.example:5000/sglang-batched-broadcast:0.5.23-bb1"
    assert (
        container(out.get("Deployment", f"{FULLNAME}-baseline"), "sglang")["image"]
        == "lmsysorg/sglang:v0.5.23"
    )
    assert env_of(canary)["SGLANG_MM_INPUT_MODE"] == "sharded"
    assert "--enable-broadcast-mm-inputs-process" in canary["args"]
    assert {"name": "models", "mountPath": "/models", "readOnly": True} in canary["volumeMounts"]
    assert len(out.of_kind("PodMonitor")) == 1 and out.of_kind("ServiceMonitor") == []


def test_default_image_tag_follows_app_version(render):
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    dep = render("default-values.yaml").get("Deployment", f"{FULLNAME}-baseline")
    assert container(dep, "sglang")["image"] == f"localhost/sglang-vlm-canary/baseline:{chart['appVersion']}"
    # The baseline runs sglang as upstream ships it: no mode variable, no broadcast flag.
    assert "SGLANG_MM_INPUT_MODE" not in env_of(container(dep, "sglang"))
    assert "--enable-broadcast-mm-inputs-process" not in container(dep, "sglang")["args"]


def test_baseline_only_renders_no_canary_objects(render):
    out = render("baseline-only-values.yaml")
    assert out.names() == sorted(
        [
            f"Deployment/{FULLNAME}-baseline",
            f"HTTPRoute/{FULLNAME}",
            f"Pod/{FULLNAME}-test",
            f"Service/{FULLNAME}",
            f"Service/{FULLNAME}-baseline",
        ]
    )
    refs = out.get("HTTPRoute", FULLNAME)["spec"]["rules"][0]["backendRefs"]
    assert [(r["name"], r["weight"]) for r in refs] == [(f"{FULLNAME}-baseline", 100)]


def test_mesh_scenario_attaches_the_route_to_the_stable_service(render):
    out = render("loadtest-mesh-values.yaml")
    (parent,) = out.get("HTTPRoute", "vlm")["spec"]["parentRefs"]
    assert parent["kind"] == "Service"
    assert out.get("Service", parent["name"])["spec"]["ports"][0]["port"] == parent["port"]


def test_names_fit_their_limits_for_long_release_names(run_helm):
    release = "a-very-long-release-name-that-keeps-going-and-going"
    values = CHART / "ci" / "loadtest-distributed-values.yaml"
    result = run_helm(
        "template", release, str(CHART), "-n", NAMESPACE, "--kube-version", KUBE_VERSION, "-f", str(values)
    )
    assert result.returncode == 0, result.stderr
    objects = [o for o in yaml.safe_load_all(result.stdout) if o]
    assert {o["kind"] for o in objects} >= {"Job", "Service", "Deployment"}
    for obj in objects:
        name = obj["metadata"]["name"]
        # Service names are DNS labels; a Job's name becomes a pod label value. Room is left for
        # the release revision in Job names to grow from "r1" to "r99999".
        room = 4 if obj["kind"] == "Job" else 0
        assert len(name) + room <= 63, f"{obj['kind']} {name} is too long"

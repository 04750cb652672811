"""`rollout/kube.py` with the real kubernetes client against a loopback HTTP stand-in for the API server:
the requests it sends (paths, patch content types, resourceVersion) and how API errors come back."""

import http.server
import json
import threading

import pytest
from kubernetes import client

import rollout.kube as kube


@pytest.fixture
def api(monkeypatch):
    requests, answers = [], {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            requests.append((self.command, self.path, self.headers.get("Content-Type"), body))
            status, payload = answers.get((self.command, self.path), (200, {}))
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(json.dumps(payload).encode())

        do_GET = do_PATCH = do_PUT = _answer  # noqa: N815 (http.server's naming)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = client.Configuration()
    config.host = f"http://127.0.0.1:{server.server_port}"
    monkeypatch.setattr(kube, "_client", lambda context: client.ApiClient(config))
    try:
        yield requests, answers
    finally:
        server.shutdown()


ROUTE = "/apis/gateway.networking.k8s.io/v1/namespaces/ml/httproutes/demo"
HTTPROUTE = kube.CustomResource("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute")


def test_custom_object_weights_go_as_a_json_patch(api):
    requests, _ = api
    ops = [{"op": "test", "path": "/spec/rules/0/backendRefs/0/name", "value": "b"}]
    kube.json_patch_custom_object(
        context=None, resource=HTTPROUTE, namespace="ml", name="demo", operations=ops
    )
    method, path, content_type, body = requests[-1]
    assert (method, path, content_type) == ("PATCH", ROUTE, "application/json-patch+json")
    assert json.loads(body) == ops


def test_scale_is_a_merge_patch_of_the_scale_subresource(api):
    requests, _ = api
    kube.scale_deployment(context=None, namespace="ml", name="demo-canary", replicas=0)
    method, path, content_type, body = requests[-1]
    assert (method, path) == ("PATCH", "/apis/apps/v1/namespaces/ml/deployments/demo-canary/scale")
    assert content_type == "application/merge-patch+json" and json.loads(body) == {"spec": {"replicas": 0}}


def test_configmap_update_carries_the_resource_version_and_a_409_is_a_conflict(api):
    requests, answers = api
    cm_path = "/api/v1/namespaces/ml/configmaps/state"
    answers[("GET", cm_path)] = (
        200,
        {"metadata": {"name": "state", "resourceVersion": "7"}, "data": {"k": "v"}},
    )
    assert kube.get_configmap(context=None, namespace="ml", name="state") == ({"k": "v"}, "7")
    answers[("PUT", cm_path)] = (200, {"metadata": {"name": "state", "resourceVersion": "8"}})
    assert (
        kube.replace_configmap_data(
            context=None, namespace="ml", name="state", data={"k": "w"}, resource_version="7"
        )
        == "8"
    )
    sent = json.loads(requests[-1][3])
    assert sent["metadata"]["resourceVersion"] == "7" and sent["data"] == {"k": "w"}
    answers[("PUT", cm_path)] = (409, {"kind": "Status", "reason": "Conflict"})
    with pytest.raises(kube.KubeConflict, match="ml/state"):
        kube.replace_configmap_data(context=None, namespace="ml", name="state", data={}, resource_version="7")


def test_api_errors_name_the_object(api):
    _, answers = api
    answers[("GET", ROUTE)] = (404, {"kind": "Status", "reason": "NotFound"})
    with pytest.raises(kube.KubeNotFound, match="get HTTPRoute ml/demo: HTTP 404"):
        kube.get_custom_object(context=None, resource=HTTPROUTE, namespace="ml", name="demo")

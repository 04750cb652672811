"""Every Kubernetes API call the rollout makes, as a few keyword-only wrappers (the only module that
imports the kubernetes client). Generic API access: a custom resource is named by its `CustomResource`,
which the router that owns it defines. Routers and state stores take an object with these functions, so
their tests substitute this layer and never the HTTP client.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CustomResource:
    """A namespaced custom resource type as the API serves it; `kind` names it in messages."""

    group: str
    version: str
    plural: str
    kind: str


class KubeError(RuntimeError):
    """An API call failed; the message names the object and the API's reason."""


class KubeConflict(KubeError):
    """The object changed since it was read (resourceVersion mismatch)."""


class KubeNotFound(KubeError):
    """The object (or its type: a CRD not installed) does not exist."""


def _client(context: str | None) -> Any:
    from kubernetes import client, config

    try:
        if context is None:
            try:
                config.load_incluster_config()
                return client.ApiClient()
            except config.ConfigException:
                pass
        # KUBECONFIG as it is now: the client reads its default location only once, when first imported.
        return config.new_client_from_config(config_file=os.environ.get("KUBECONFIG"), context=context)
    except Exception as exc:  # the client raises several kinds for missing or bad kubeconfig
        raise KubeError(f"cannot load Kubernetes config (context {context!r}): {exc}") from exc


def _call(what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    from kubernetes.client.exceptions import ApiException

    try:
        return fn(*args, **kwargs)
    except ApiException as exc:
        if exc.status == 409:
            raise KubeConflict(f"{what}: conflict (changed since read)") from exc
        if exc.status == 404:
            raise KubeNotFound(f"{what}: HTTP 404 {exc.reason}: {str(exc.body)[:300]}") from exc
        raise KubeError(f"{what}: HTTP {exc.status} {exc.reason}: {str(exc.body)[:300]}") from exc
    except OSError as exc:
        raise KubeError(f"{what}: API server unreachable: {exc}") from exc


def get_custom_object(
    *, context: str | None, resource: CustomResource, namespace: str, name: str
) -> dict[str, Any]:
    from kubernetes import client

    api = client.CustomObjectsApi(_client(context))
    return _call(
        f"get {resource.kind} {namespace}/{name}",
        api.get_namespaced_custom_object,
        resource.group,
        resource.version,
        namespace,
        resource.plural,
        name,
    )


def json_patch_custom_object(
    *,
    context: str | None,
    resource: CustomResource,
    namespace: str,
    name: str,
    operations: list[dict[str, Any]],
) -> dict[str, Any]:
    """RFC 6902 JSON patch; its `test` ops make the API server refuse it if the guarded paths changed."""
    from kubernetes import client

    api = client.CustomObjectsApi(_client(context))
    return _call(
        f"patch {resource.kind} {namespace}/{name}",
        api.patch_namespaced_custom_object,
        resource.group,
        resource.version,
        namespace,
        resource.plural,
        name,
        operations,
        _content_type="application/json-patch+json",  # the client's default for custom objects is merge-patch
    )


def get_configmap(*, context: str | None, namespace: str, name: str) -> tuple[dict[str, str], str]:
    """(data, resourceVersion)."""
    from kubernetes import client

    api = client.CoreV1Api(_client(context))
    cm = _call(f"get ConfigMap {namespace}/{name}", api.read_namespaced_config_map, name, namespace)
    return dict(cm.data or {}), str(cm.metadata.resource_version)


def replace_configmap_data(
    *, context: str | None, namespace: str, name: str, data: dict[str, str], resource_version: str
) -> str:
    """Write `data` if the ConfigMap is still at `resource_version`; returns the new version."""
    from kubernetes import client

    api = client.CoreV1Api(_client(context))
    cm = _call(f"get ConfigMap {namespace}/{name}", api.read_namespaced_config_map, name, namespace)
    cm.data = data
    cm.metadata.resource_version = resource_version
    done = _call(
        f"update ConfigMap {namespace}/{name}", api.replace_namespaced_config_map, name, namespace, cm
    )
    return str(done.metadata.resource_version)


def scale_deployment(*, context: str | None, namespace: str, name: str, replicas: int) -> None:
    from kubernetes import client

    api = client.AppsV1Api(_client(context))
    _call(
        f"scale Deployment {namespace}/{name}",
        api.patch_namespaced_deployment_scale,
        name,
        namespace,
        {"spec": {"replicas": replicas}},
        _content_type="application/merge-patch+json",
    )

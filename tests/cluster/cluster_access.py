"""What the cluster tests share: the cluster under test, waiting with diagnostics, raw reads.

Objects are read back as raw JSON (``_preload_content=False``), so a test
compares what the API server stored, not what the client's models make of it.
The official client's errors are read through :func:`agent_kit.kube.api_errors`,
as the agents read them: by class (NotFoundError, ConflictError), never by status.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from agent_kit.kube import ApiError, ConflictError, NotFoundError, api_errors
from dra_driver.discovery.model import NodeInventory
from e2e.cluster import BUSYBOX_IMAGE, LocalCluster
from kubelet_plugin.publisher import SlicePublisher

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
#: The chart rendered with its defaults (scripts/render_manifests.sh).
MANIFESTS = DEPLOY / "manifests" / "dra-driver.yaml"


def admission_policies(name_matches: Callable[[str], bool]) -> list[dict[str, Any]]:
    """The ValidatingAdmissionPolicies and bindings of the rendered chart whose name matches."""
    return [
        doc
        for doc in yaml.safe_load_all(MANIFESTS.read_text())
        if doc
        and doc["kind"].startswith("ValidatingAdmissionPolicy")
        and name_matches(doc["metadata"]["name"])
    ]


@dataclass(frozen=True)
class PublishedPool:
    """The node's pool as SlicePublisher published it (mock GPUs, through the real API)."""

    publisher: SlicePublisher
    inventory: NodeInventory
    node_uid: str


@dataclass(frozen=True)
class ClusterUnderTest:
    """The cluster the tests talk to: the local one, or one named by a kubeconfig."""

    kubeconfig: Path
    node_name: str
    api_client: Any
    """A ``kubernetes.client.ApiClient`` with admin rights."""
    local: LocalCluster | None = None
    """The local cluster, with its node's directories; None for an external cluster."""
    driver_image: str = ""
    """The image the node's kubelet plugin runs from, imported into the local node's
    containerd (e2e/cluster/driver_image.py); empty: it runs from the source tree."""

    def diagnostics(self) -> str:
        """The tails of the local components' logs (nothing for an external cluster)."""
        if self.local is None:
            return ""
        return "component logs:\n" + self.local.log_tails(lines=25)


def new_api_client(kubeconfig: str) -> Any:
    """A ``kubernetes.client.ApiClient`` for the kubeconfig's current context."""
    from kubernetes import config

    return config.new_client_from_config(kubeconfig)  # type: ignore[no-untyped-call]


def core_api(api_client: Any) -> Any:
    """``CoreV1Api``, typed Any: tests pass manifests as plain dicts, which the client takes."""
    from kubernetes import client

    return client.CoreV1Api(api_client)


def resource_api(api_client: Any) -> Any:
    """``ResourceV1Api``, typed Any (see core_api)."""
    from kubernetes import client

    return client.ResourceV1Api(api_client)


def wait_for(
    what: str,
    condition: Callable[[], Any],
    *,
    cluster: ClusterUnderTest,
    timeout_s: float = 60.0,
    interval_s: float = 0.5,
    context: Callable[[], str] | None = None,
) -> Any:
    """Poll ``condition`` until it returns something truthy, and return that.

    On timeout the AssertionError says what was awaited, what ``context``
    reports (the pod's status and events, say) and the components' log tails.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            details = [f"timed out after {timeout_s:.0f} s waiting for {what}"]
            if context is not None:
                details.append(context())
            details.append(cluster.diagnostics())
            raise AssertionError("\n".join(d for d in details if d))
        time.sleep(interval_s)


#: How long after a driver's last kubelet plugin deregistered the kubelet deletes that
#: driver's ResourceSlices on its node (``defaultWipingDelay``, spec/kubelet-plugin.md).
KUBELET_WIPING_DELAY_S: Final = 30.0


def wait_out_slice_wipe(cluster: ClusterUnderTest, driver: str, stopped_at: float) -> None:
    """After a kubelet plugin stopped (``time.monotonic()`` then): wait until the kubelet's
    delayed wipe of ``driver``'s slices on the node is over, then remove what is left.

    The wipe fires once, 30 s after the deregistration, and deletes whatever slices of
    that driver and node exist then: without this wait it deletes the slices a later test
    module publishes for the same driver.
    """
    api = resource_api(cluster.api_client)
    selector = f"spec.nodeName={cluster.node_name},spec.driver={driver}"
    wait_for(
        f"the kubelet to wipe the slices of the stopped {driver} plugin",
        lambda: not read_json(api.list_resource_slice, field_selector=selector)["items"],
        cluster=cluster,
        timeout_s=KUBELET_WIPING_DELAY_S + 60,
    )
    time.sleep(max(0.0, stopped_at + KUBELET_WIPING_DELAY_S + 5 - time.monotonic()))
    api.delete_collection_resource_slice(field_selector=selector)


def read_json(call: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Call a ``kubernetes`` API method and return the server's JSON as it came."""
    response = call(*args, _preload_content=False, **kwargs)
    data: dict[str, Any] = json.loads(response.data)
    return data


def pod_report(api_client: Any, namespace: str, name: str) -> str:
    """A pod's phase, conditions, container states and events, for failure messages."""
    core = core_api(api_client)
    try:
        with api_errors(f"get pod {namespace}/{name}"):
            pod = read_json(core.read_namespaced_pod, name, namespace)
    except ApiError as err:
        return str(err)
    status = pod.get("status", {})
    lines = [
        f"pod {namespace}/{name}: phase {status.get('phase')}, node "
        f"{pod.get('spec', {}).get('nodeName')}",
        f"  conditions: {json.dumps(status.get('conditions'))}",
        f"  containers: {json.dumps(status.get('containerStatuses'))}",
        f"  resourceClaimStatuses: {json.dumps(status.get('resourceClaimStatuses'))}",
    ]
    events = core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
    lines += [f"  event {e.reason}: {e.message}" for e in events.items]
    return "\n".join(lines)


def pod_phase(api_client: Any, namespace: str, name: str) -> str:
    pod = read_json(core_api(api_client).read_namespaced_pod, name, namespace)
    return str(pod.get("status", {}).get("phase", ""))


def is_gone(read: Callable[[], Any]) -> bool:
    """Whether ``read()`` (a call of the official client) finds nothing; other errors raise."""
    try:
        with api_errors("read"):
            read()
    except NotFoundError:
        return True
    return False


def deploy_device_classes() -> dict[str, tuple[Path, dict[str, Any]]]:
    """Every ``kind: DeviceClass`` document under deploy/, by name, with its file.

    Two files defining one class differently is an AssertionError.
    """
    found: dict[str, tuple[Path, dict[str, Any]]] = {}
    for path in sorted(DEPLOY.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "DeviceClass":
                name = doc["metadata"]["name"]
                if name in found:
                    assert found[name][1] == doc, f"{path} and {found[name][0]} differ on {name}"
                found[name] = (path, doc)
    return found


def apply_device_class(api: Any, doc: dict[str, Any]) -> dict[str, Any]:
    """Create, or replace when it exists; return what the server stored.

    ``api`` is a ``kubernetes.client.ResourceV1Api``.
    """
    name = doc["metadata"]["name"]
    try:
        with api_errors(f"create deviceclass {name}"):
            api.create_device_class(doc)
    except ConflictError:
        current = read_json(api.read_device_class, name)
        version = current["metadata"]["resourceVersion"]
        api.replace_device_class(
            name, dict(doc, metadata={**doc["metadata"], "resourceVersion": version})
        )
    return read_json(api.read_device_class, name)


def claim_spec(selector: str) -> dict[str, Any]:
    """A claim spec with one request ``gpu``: one device of class gpu.dra-driver.io."""
    request = {
        "name": "gpu",
        "exactly": {
            "deviceClassName": "gpu.dra-driver.io",
            "selectors": [{"cel": {"expression": selector}}],
        },
    }
    return {"devices": {"requests": [request]}}


def claim_template(name: str, selector: str) -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": name},
        "spec": {"spec": claim_spec(selector)},
    }


def resource_claim(name: str, selector: str) -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name},
        "spec": claim_spec(selector),
    }


def pod_with_claim(
    name: str, command: list[str], *, template: str = "", claim: str = ""
) -> dict[str, Any]:
    """A busybox pod whose one container uses pod claim ``gpu``: from a template, or a claim."""
    source = {"resourceClaimTemplateName": template} if template else {"resourceClaimName": claim}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "resourceClaims": [{"name": "gpu", **source}],
            "containers": [
                {
                    "name": "main",
                    "image": BUSYBOX_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": command,
                    "resources": {"claims": [{"name": "gpu"}]},
                }
            ],
        },
    }


def generated_claim_name(api_client: Any, namespace: str, pod: str) -> str | None:
    """The claim the resourceclaim controller made for the pod's ``gpu`` entry, once it did."""

    stored = read_json(core_api(api_client).read_namespaced_pod, pod, namespace)
    for status in stored.get("status", {}).get("resourceClaimStatuses") or []:
        if status.get("name") == "gpu" and status.get("resourceClaimName"):
            return str(status["resourceClaimName"])
    return None


def render_chart(helm: str, values: dict[str, Any], directory: Path) -> list[dict[str, Any]]:
    """deploy/helm/dra-driver rendered by ``helm template`` with ``values`` (release
    dra-driver, namespace dra-driver); its objects. The values file goes to ``directory``.
    """
    import subprocess

    values_file = directory / "chart-values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    argv = [helm, "template", "dra-driver", str(DEPLOY / "helm" / "dra-driver")]
    argv += ["--namespace", "dra-driver", "--values", str(values_file)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"helm template failed: {result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def helm_binary() -> str:
    """The helm of e2e/tools/helm.sh (built from its Go module once, then cached)."""
    import subprocess

    script = DEPLOY.parent / "e2e" / "tools" / "helm.sh"
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{script} failed: {result.stderr[-2000:]}"
    return result.stdout.strip()


def create_objects(api_client: Any, objects: list[dict[str, Any]]) -> None:
    """Create each object, in order, in its own namespace (``metadata.namespace``)."""
    from kubernetes import dynamic

    client = dynamic.DynamicClient(api_client)  # type: ignore[no-untyped-call]
    for obj in objects:
        resource = client.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        namespace = obj["metadata"].get("namespace") if resource.namespaced else None
        resource.create(body=obj, namespace=namespace)


def delete_objects(api_client: Any, objects: list[dict[str, Any]]) -> list[str]:
    """Delete each object (in reverse order, in the foreground); those that failed, with why.

    An object that is already gone counts as deleted.
    """
    from kubernetes import dynamic

    client = dynamic.DynamicClient(api_client)  # type: ignore[no-untyped-call]
    failed = []
    for obj in reversed(objects):
        resource = client.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        namespace = obj["metadata"].get("namespace") if resource.namespaced else None
        what = f"delete {obj['kind']}/{obj['metadata']['name']}"
        try:
            with api_errors(what):
                resource.delete(
                    name=obj["metadata"]["name"],
                    namespace=namespace,
                    body={"propagationPolicy": "Foreground"},
                )
        except NotFoundError:
            continue  # already gone: deleted
        except ApiError as err:
            failed.append(str(err))
    return failed

"""The whole node path: `dra-driver kubelet-plugin` with mock GPUs under the real kubelet.

One module on purpose (about 1,850 lines): its tests share the module-scoped plugin (the
chart's DaemonSet or a process, started and registered once); a second module would start another.

The plugin registers through the kubelet's plugin registry, publishes the
node's slices; the scheduler allocates a GPU; the kubelet calls
NodePrepareResources, the plugin writes a CDI spec into containerd's CDI
directory, and containerd injects the device node, the environment and the
claim's device metadata file (KEP-5304, read by the container at its upstream path)
into the container. Deleting the pod makes the kubelet call
NodeUnprepareResources: the CDI spec goes, and the claim's allocation with it.

Where the session built the driver's image (see conftest), the plugin is the
chart's DaemonSet running that image, installed from ``helm template`` with
values for this node (its kubelet's and containerd's directories, the API
server on the host's loopback through host networking); a restart deletes its
pod and the DaemonSet brings a new one. Otherwise it is ``dra-driver
kubelet-plugin`` from the source tree as a process, restarted by SIGTERM.

GPU health, end to end: an XID dropped into the mock backend's fault spool (on the
host, under the mock dev root the pod mounts at its host path) taints the GPU in the
slice, turns the pod's ``allocatedResourcesStatus`` and the claim's Healthy condition
unhealthy, survives a plugin restart in taints.json and goes with ``dra-driver taints
clear`` run on the node; a NoExecute DeviceTaintRule makes the controller-manager evict
the pod using the device, and the project's controller places a gated pod around it; under
a short quiet window, a taint whose recovery action reads GPU_RESET stays until the mock GPU
is reset, then the plugin lifts it by itself. Each of these tests clears every taint it
leaves, pass or fail.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import grpc
import pytest
from cluster_access import (
    ClusterUnderTest,
    claim_template,
    core_api,
    create_objects,
    delete_objects,
    generated_claim_name,
    helm_binary,
    is_gone,
    pod_phase,
    pod_report,
    pod_with_claim,
    read_json,
    render_chart,
    resource_api,
    resource_claim,
    wait_for,
    wait_out_slice_wipe,
)

from dra_driver.discovery.mock import MockBackend
from dra_driver.discovery.model import Gpu
from e2e.cluster import BUSYBOX_IMAGE
from e2e.cluster.processes import free_port
from e2e.demo_support import dra_driver_argv
from kubelet_plugin.health.classification import xid_outcome
from kubelet_plugin.health.faults import write_fault
from kubelet_plugin.health.taints import DEFAULT_IGNORED_XIDS
from kubelet_plugin.proto_gen.dra.v1 import api_pb2, api_pb2_grpc
from kubelet_plugin.proto_gen.podresources.v1 import api_pb2 as podresources_pb2
from kubelet_plugin.proto_gen.podresources.v1 import api_pb2_grpc as podresources_grpc
from kubelet_plugin.socket_paths import dra_socket_path, registration_socket_path

DRIVER = "gpu.dra-driver.io"
PROFILE = "1xH100-80GB,1xL4"
# Prints the container's view between markers, then stays up until deleted.
SHOW_DEVICES = [
    "sh",
    "-c",
    "echo '--- dev'; ls /dev; echo '--- env'; env; echo '--- end'; sleep 3600",
]


#: Where a container finds its device metadata files (KEP-5304).
METADATA_DIR = "/var/run/kubernetes.io/dra-device-attributes"

REGISTERED = "kubelet registered DRA driver"
HEALTH_STREAM_V1 = "kubelet opened a device health stream (v1)"
NAMESPACE = "dra-driver"
POD_LABEL = "app.kubernetes.io/name=dra-driver-kubelet-plugin"
DAEMON_SET = "dra-driver-kubelet-plugin"
SUSPENDED = "dra-driver.test/suspended"
WAITING = "another plugin instance on this node holds"
TOOK_OVER = "took over publishing the node's ResourceSlices"
#: Longer than any test: a taint stays while a test looks at it, and the health tests
#: clear the taints themselves (``dra-driver taints clear``), never by waiting.
HEALTH_RECOVERY_S = 900


class Plugin(Protocol):
    """The node's kubelet plugin, however it runs."""

    gpus: tuple[Gpu, ...]

    @property
    def instance(self) -> str:
        """The pod UID it runs as (``--pod-uid``), which names its sockets."""

    def log_tail(self, lines: int = 30) -> str: ...

    def start(self, cluster: ClusterUnderTest) -> None:
        """Until the kubelet has registered a plugin that was not registered before."""

    def stop(self) -> int:
        """Stop it the way the kubelet stops a pod (SIGTERM, grace period); its exit status."""

    def suspend(self) -> int:
        """Stop it with nothing to take its place (a DaemonSet makes no new pod) until
        :meth:`resume`; its exit status."""

    def resume(self, cluster: ClusterUnderTest) -> None:
        """Bring it back after :meth:`suspend`, until the kubelet has registered it."""

    def restart_with_recovery_window(self, cluster: ClusterUnderTest, seconds: float) -> None:
        """Stop it and start it again with ``--health-recovery-seconds`` (its env twin for
        the chart's pod) set to ``seconds``, until the kubelet has registered it."""


class RunningPlugin:
    """``dra-driver kubelet-plugin`` as a process; stopped with SIGTERM, as the kubelet's
    pod would be."""

    def __init__(self, argv: list[str], log: Path, gpus: tuple[Gpu, ...]) -> None:
        # A pod UID of its own, as the chart's pod gets from the downward API.
        self.instance = str(uuid.uuid4())
        self.argv = [*argv, f"--pod-uid={self.instance}"]
        self.log = log
        self.gpus = gpus
        self.process: subprocess.Popen[bytes] | None = None
        self._registrations = 0

    def log_tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace").splitlines()[-lines:]
        return "kubelet plugin log:\n" + "\n".join(f"    {line}" for line in text)

    def _registered(self) -> int:
        return self.log.read_text(errors="replace").count(REGISTERED)

    def start(self, cluster: ClusterUnderTest) -> None:
        """Start it and wait until the kubelet has registered it."""
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        process, before = self.process, self._registrations
        wait_for(
            "the kubelet to register the plugin",
            lambda: process.poll() is not None or self._registered() > before,
            cluster=cluster,
            context=self.log_tail,
        )
        assert process.poll() is None, self.log_tail()
        self._registrations = self._registered()

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after 30 s; the exit status."""
        process = self.process
        if process is None:
            return 0
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        try:
            return process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            return process.wait()

    def suspend(self) -> int:
        return self.stop()

    def resume(self, cluster: ClusterUnderTest) -> None:
        self.start(cluster)

    def restart_with_recovery_window(self, cluster: ClusterUnderTest, seconds: float) -> None:
        code = self.stop()
        assert code == 0, f"the plugin exited {code} on SIGTERM\n{self.log_tail()}"
        flag = "--health-recovery-seconds="
        self.argv = [a for a in self.argv if not a.startswith(flag)] + [f"{flag}{seconds}"]
        self.start(cluster)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


class PluginPod:
    """The chart's kubelet-plugin DaemonSet's pod on the node, running the driver's image.

    ``stop`` deletes the pod (the kubelet sends SIGTERM and waits out the grace
    period) and returns its container's exit status; ``start`` waits for the
    pod the DaemonSet makes next to run and register. The container's log is
    read from the kubelet's pod log directory on this machine, so that the log
    of a pod that is gone can still be shown.
    """

    def __init__(self, api_client: Any, pod_logs: Path, gpus: tuple[Gpu, ...]) -> None:
        self.api_client = api_client
        self.pod_logs = pod_logs
        self.gpus = gpus
        self.pod: dict[str, Any] | None = None
        self._last_log = ""
        self._log_uid: str | None = None
        self._stopped: set[str] = set()

    @property
    def instance(self) -> str:
        assert self.pod is not None, "no plugin pod yet"
        return str(self.pod["metadata"]["uid"])

    def _log_file(self) -> Path | None:
        if self.pod is None:
            return None
        meta = self.pod["metadata"]
        return self.pod_logs / f"{NAMESPACE}_{meta['name']}_{meta['uid']}" / "plugin" / "0.log"

    def _log(self) -> str:
        path = self._log_file()
        uid = None if self.pod is None else self.pod["metadata"]["uid"]
        if uid != self._log_uid:
            # Another pod: the text kept from the last one is not its log.
            self._log_uid, self._last_log = uid, ""
        if path is not None:
            # Gone with its pod: the last text read stays.
            with contextlib.suppress(OSError):
                self._last_log = path.read_text(errors="replace")
        return self._last_log

    def log_tail(self, lines: int = 30) -> str:
        name = "none yet" if self.pod is None else self.pod["metadata"]["name"]
        text = self._log().splitlines()[-lines:]
        return f"kubelet plugin pod {name} log:\n" + "\n".join(f"    {line}" for line in text)

    def _current_pod(self) -> dict[str, Any] | None:
        listing = read_json(
            core_api(self.api_client).list_namespaced_pod, NAMESPACE, label_selector=POD_LABEL
        )
        fresh = [
            pod
            for pod in listing["items"]
            if pod["metadata"]["uid"] not in self._stopped
            and not pod["metadata"].get("deletionTimestamp")
        ]
        return fresh[0] if fresh else None

    def start(self, cluster: ClusterUnderTest) -> None:
        def registered() -> bool:
            self.pod = self._current_pod() or self.pod
            if self.pod is None or self.pod["metadata"]["uid"] in self._stopped:
                return False
            return REGISTERED in self._log()

        def report() -> str:
            name = "" if self.pod is None else self.pod["metadata"]["name"]
            pod = pod_report(self.api_client, NAMESPACE, name) if name else "no pod yet"
            return pod + "\n" + self.log_tail()

        wait_for(
            "the DaemonSet's plugin pod to run and the kubelet to register it",
            registered,
            cluster=cluster,
            timeout_s=180,
            context=report,
        )

    def stop(self) -> int:

        # The pod that runs now: after a stop without a start, the DaemonSet's next one.
        current = self._current_pod()
        if current is None:
            return 0
        return self._stop_pod(current)

    def _stop_pod(self, current: dict[str, Any]) -> int:
        from kubernetes import watch

        self.pod = current
        core = core_api(self.api_client)
        meta = current["metadata"]
        self._stopped.add(meta["uid"])
        exit_code = -1
        stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
            core.list_namespaced_pod,
            NAMESPACE,
            field_selector=f"metadata.name={meta['name']}",
            resource_version=current["metadata"]["resourceVersion"],
            timeout_seconds=90,
        )
        core.delete_namespaced_pod(meta["name"], NAMESPACE)
        # The kubelet reports the container's end before the pod is removed.
        for event in stream:
            self._log()
            status_now = event["object"].status
            for status in (status_now and status_now.container_statuses) or []:
                if status.state.terminated is not None:
                    exit_code = status.state.terminated.exit_code
            if event["type"] == "DELETED":
                break
        return exit_code

    def suspend(self) -> int:
        current = self._current_pod()
        apps_api(self.api_client).patch_namespaced_daemon_set(
            DAEMON_SET, NAMESPACE, _suspend_patch(True)
        )
        if current is None:
            return 0
        # The DaemonSet deletes the pod too; deleting a terminating pod again is harmless.
        return self._stop_pod(current)

    def resume(self, cluster: ClusterUnderTest) -> None:
        apps_api(self.api_client).patch_namespaced_daemon_set(
            DAEMON_SET, NAMESPACE, _suspend_patch(False)
        )
        self.start(cluster)

    def restart_with_recovery_window(self, cluster: ClusterUnderTest, seconds: float) -> None:
        code = self.suspend()
        assert code == 0, f"the plugin pod exited {code} on deletion\n{self.log_tail()}"
        env = {"name": "DRA_DRIVER_HEALTH_RECOVERY_SECONDS", "value": str(seconds)}
        apps_api(self.api_client).patch_namespaced_daemon_set(
            DAEMON_SET,
            NAMESPACE,
            {"spec": {"template": {"spec": {"containers": [{"name": "plugin", "env": [env]}]}}}},
        )
        self.resume(cluster)


def _suspend_patch(on: bool) -> dict[str, Any]:
    # A node selector no node matches: the DaemonSet removes its pod and makes none.
    return {"spec": {"template": {"spec": {"nodeSelector": {SUSPENDED: "true" if on else None}}}}}


def _source_argv(cluster: ClusterUnderTest) -> list[str]:
    """``dra-driver kubelet-plugin`` from the source tree, on the node's directories and the
    chart's (see _chart_values), with the mock GPUs of this module."""
    local = cluster.local
    assert local is not None
    return [
        *dra_driver_argv(),
        "kubelet-plugin",
        f"--node-name={local.node_name}",
        f"--kubeconfig={local.kubeconfig}",
        f"--registry-dir={local.plugins_registry_dir}",
        f"--plugins-dir={local.plugins_dir}",
        f"--cdi-root={local.cdi_dir}",
        f"--dev-root={local.directory / 'mock-dev'}",
        f"--driver-root={local.directory / 'driver-root'}",
        "--gpu-backend=mock",
        f"--mock-profile={PROFILE}",
        f"--health-recovery-seconds={HEALTH_RECOVERY_S}",
    ]


def _chart_values(cluster: ClusterUnderTest) -> dict[str, Any]:
    """The chart's values for the local node: its image, its directories, its API server."""
    local = cluster.local
    assert local is not None and cluster.driver_image
    repository, _, tag = cluster.driver_image.rpartition(":")
    api_server = urlsplit(local.apiserver_url)
    return {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "logFormat": "text",
        "controller": {"enabled": False},
        # The session applies deploy/'s classes itself (the device_classes fixture).
        "deviceClasses": {"create": False},
        "kubeletPlugin": {
            "gpuBackend": "mock",
            "mockProfile": PROFILE,
            "mockDevRoot": str(local.directory / "mock-dev"),
            "healthRecoverySeconds": HEALTH_RECOVERY_S,
            "driverRoot": str(local.directory / "driver-root"),
            "kubeletDir": str(local.node_paths.kubelet_root),
            "cdiRoot": str(local.cdi_dir),
            # The API server listens on the host's loopback only.
            "hostNetwork": True,
            "env": [
                {"name": "KUBERNETES_SERVICE_HOST", "value": api_server.hostname},
                {"name": "KUBERNETES_SERVICE_PORT", "value": str(api_server.port)},
            ],
            # On the host's network: ports no other cluster on this machine uses.
            "livenessPort": free_port(),
        },
        "metrics": {"enabled": True, "kubeletPluginPort": free_port()},
    }


@pytest.fixture(scope="module")
def kubelet_plugin(local_cluster: ClusterUnderTest, device_classes: list[str]) -> Iterator[Plugin]:
    """The node's kubelet plugin, until the end of the module: the chart's DaemonSet from
    the session's image, or ``dra-driver kubelet-plugin`` from the source tree."""
    cluster = local_cluster.local
    if cluster is None:
        pytest.skip("runs the kubelet plugin next to the local cluster's kubelet")
    if local_cluster.driver_image:
        yield from _plugin_pod(local_cluster)
        return
    dev_root = cluster.directory / "mock-dev"
    plugin = RunningPlugin(
        _source_argv(local_cluster),
        cluster.logs_dir / "kubelet-plugin.log",
        MockBackend(cluster.node_name, PROFILE).discover().gpus,
    )
    try:
        plugin.start(local_cluster)
        yield plugin
    finally:
        code = plugin.stop()
        wait_out_slice_wipe(local_cluster, DRIVER, time.monotonic())
        shutil.rmtree(dev_root, ignore_errors=True)
    assert code == 0, f"the plugin exited {code} on SIGTERM\n{plugin.log_tail()}"
    left = sorted(cluster.plugins_registry_dir.glob(f"{DRIVER}*-reg.sock"))
    assert not left, f"the plugin left registration sockets behind: {left}"


def apps_api(api_client: Any) -> Any:
    """``AppsV1Api``, typed Any (see cluster_access.core_api)."""
    from kubernetes import client

    return client.AppsV1Api(api_client)


def _plugin_pod(local_cluster: ClusterUnderTest) -> Iterator[Plugin]:
    cluster = local_cluster.local
    assert cluster is not None
    api_client = local_cluster.api_client
    core = core_api(api_client)
    objects = render_chart(helm_binary(), _chart_values(local_cluster), cluster.directory)
    assert {o["kind"] for o in objects} >= {"DaemonSet", "ServiceAccount", "ClusterRole"}
    plugin = PluginPod(
        api_client,
        cluster.node_paths.pod_logs,
        MockBackend(cluster.node_name, PROFILE).discover().gpus,
    )
    core.create_namespace({"metadata": {"name": NAMESPACE}})
    code = 0
    try:
        create_objects(api_client, objects)
        plugin.start(local_cluster)
        yield plugin
    finally:
        # The DaemonSet goes first, leaving its pod (so that it makes no new one), then
        # the pod is stopped as the kubelet stops it, with its exit status.
        daemon_set = next(o for o in objects if o["kind"] == "DaemonSet")
        apps_api(api_client).delete_namespaced_daemon_set(
            daemon_set["metadata"]["name"], NAMESPACE, propagation_policy="Orphan"
        )
        code = plugin.stop()
        stopped_at = time.monotonic()
        not_deleted = delete_objects(api_client, objects)
        core.delete_namespace(NAMESPACE)
        wait_for(
            f"namespace {NAMESPACE} and the plugin's pods to be gone",
            lambda: is_gone(lambda: core.read_namespace(NAMESPACE)),
            cluster=local_cluster,
            timeout_s=120,
        )
        wait_out_slice_wipe(local_cluster, DRIVER, stopped_at)
        shutil.rmtree(cluster.directory / "mock-dev", ignore_errors=True)
    assert not not_deleted, f"chart objects not deleted: {not_deleted}"
    assert code == 0, f"the plugin pod's container exited {code} on deletion\n{plugin.log_tail()}"
    left = sorted(cluster.plugins_registry_dir.glob(f"{DRIVER}*-reg.sock"))
    assert not left, f"the plugin left registration sockets behind: {left}"


def _cdi_specs(cdi_dir: Path, claim_uid: str) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(cdi_dir.glob(f"*{claim_uid}*"))]


def log_sections(log: str) -> dict[str, list[str]]:
    """A container log cut at its ``--- <name>`` lines: each name's lines."""
    sections: dict[str, list[str]] = {}
    current = None
    for line in log.splitlines():
        if line.startswith("--- "):
            current = line[4:]
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    return sections


def _check_container_sees_the_gpu(log: str, specs: list[dict[str, Any]], gpu: Gpu) -> None:
    """The container shows the GPU's node and every env entry of the claim's CDI devices."""
    seen = log_sections(log)
    assert "end" in seen, f"the container's output is incomplete:\n{log}"
    dev_entries = set(seen["dev"])
    env_entries = set(seen["env"])
    assert Path(gpu.device_node).name in dev_entries, log
    wanted_env: list[str] = []
    wanted_nodes: list[str] = []
    for spec in specs:
        edits = [spec.get("containerEdits") or {}]
        edits += [d.get("containerEdits") or {} for d in spec.get("devices") or []]
        for edit in edits:
            wanted_env += edit.get("env") or []
            wanted_nodes += [n["path"] for n in edit.get("deviceNodes") or []]
    assert wanted_env, f"the CDI specs set no environment: {specs}"
    assert set(wanted_env) <= env_entries, (
        f"missing in the container: {sorted(set(wanted_env) - env_entries)}"
    )
    assert gpu.device_node in wanted_nodes
    assert {Path(n).name for n in wanted_nodes} <= dev_entries
    assert any(gpu.uuid in entry for entry in wanted_env)


def _show_devices_and_metadata(owner: str) -> list[str]:
    """SHOW_DEVICES, and the request ``gpu``'s device metadata file of the pod's claim
    (``owner``: ``resourceclaims/<claim>`` or ``resourceclaimtemplates/<pod claim name>``)."""
    path = f"{METADATA_DIR}/{owner}/gpu/{DRIVER}-metadata.json"
    return [
        "sh",
        "-c",
        f"echo '--- dev'; ls /dev; echo '--- env'; env; echo '--- metadata'; cat {path}; "
        "echo '--- end'; sleep 3600",
    ]


def _check_container_reads_the_metadata(
    log: str, claim: dict[str, Any], gpu: Gpu, pod_claim_name: str | None
) -> None:
    """The metadata file the container read through containerd's CDI mount: the claim,
    the pod's name for it, and the GPU with its published attributes."""
    text = "\n".join(log_sections(log).get("metadata") or [])
    assert text.strip(), f"the container read no device metadata file:\n{log}"
    decoder = json.JSONDecoder()
    first, end = decoder.raw_decode(text)
    second = decoder.raw_decode(text, end + 1)[0]
    assert [first["apiVersion"], second["apiVersion"]] == [
        "metadata.resource.k8s.io/v1beta1",
        "metadata.resource.k8s.io/v1alpha1",
    ]
    assert first["kind"] == "DeviceMetadata"
    meta = claim["metadata"]
    assert first["metadata"] == {
        "name": meta["name"],
        "namespace": meta["namespace"],
        "uid": meta["uid"],
        "generation": 1,
    }
    assert first.get("podClaimName") == pod_claim_name
    (request,) = first["requests"]
    (device,) = request["devices"]
    assert (request["name"], device["driver"], device["name"]) == ("gpu", DRIVER, gpu.device_name)
    assert device["attributes"]["uuid"] == {"string": gpu.uuid}
    assert device["attributes"]["resource.kubernetes.io/pciBusID"] == {"string": gpu.pci_bus_id}


def _metadata_on_host(cluster: ClusterUnderTest, claim_uid: str) -> Path:
    """The claim's device metadata directory on the host, under the plugin's directory."""
    return _state_dir(cluster) / "dra-device-metadata" / claim_uid


def _l4(plugin: Plugin) -> Gpu:
    return next(g for g in plugin.gpus if "L4" in g.product_name)


def _run_until_running(
    api_client: Any, cluster: ClusterUnderTest, plugin: Plugin, namespace: str, pod: str
) -> str:
    def report() -> str:
        return pod_report(api_client, namespace, pod) + "\n" + plugin.log_tail()

    wait_for(
        f"pod {pod} to run",
        lambda: pod_phase(api_client, namespace, pod) != "Pending",
        cluster=cluster,
        timeout_s=120,
        context=report,
    )
    assert pod_phase(api_client, namespace, pod) == "Running", report()
    core = core_api(api_client)
    log: str = wait_for(
        f"pod {pod} to print what it sees",
        lambda: (
            (text := core.read_namespaced_pod_log(pod, namespace)) and "--- end" in text and text
        ),
        cluster=cluster,
        context=report,
    )
    return log


def test_pod_with_claim_template_gets_the_gpu_and_deleting_it_unprepares(
    api_client: Any, local_cluster: ClusterUnderTest, kubelet_plugin: Plugin, namespace: str
) -> None:
    assert local_cluster.local is not None
    cdi_dir = local_cluster.local.cdi_dir
    gpu = _l4(kubelet_plugin)
    selector = f'device.attributes["{DRIVER}"].productName == "{gpu.product_name}"'
    resources = resource_api(api_client)
    core = core_api(api_client)
    template = claim_template("one-l4", selector)
    # An opaque GpuConfig travels into status.allocation: the API server compares its raw
    # bytes on every status write, so the plugin's status.devices write must leave them be.
    parameters = {"apiVersion": "gpu.dra-driver.io/v1alpha1", "kind": "GpuConfig"}
    template["spec"]["spec"]["devices"]["config"] = [
        {"opaque": {"driver": DRIVER, "parameters": parameters}}
    ]
    resources.create_namespaced_resource_claim_template(namespace, template)
    core.create_namespaced_pod(
        namespace,
        pod_with_claim(
            "sees-gpu", _show_devices_and_metadata("resourceclaimtemplates/gpu"), template="one-l4"
        ),
    )

    log = _run_until_running(api_client, local_cluster, kubelet_plugin, namespace, "sees-gpu")
    claim_name = generated_claim_name(api_client, namespace, "sees-gpu")
    assert claim_name
    claim = read_json(resources.read_namespaced_resource_claim, claim_name, namespace)
    (result,) = claim["status"]["allocation"]["devices"]["results"]
    assert result["device"] == f"gpu-{gpu.index}"
    (config,) = claim["status"]["allocation"]["devices"]["config"]
    assert config["opaque"]["parameters"] == parameters
    specs = _cdi_specs(cdi_dir, claim["metadata"]["uid"])
    assert specs, f"no CDI spec for claim {claim_name} in {cdi_dir}: {os.listdir(cdi_dir)}"
    _check_container_sees_the_gpu(log, specs, gpu)
    # KEP-5304: the claim came from a template, so the file is under the pod's name for it.
    _check_container_reads_the_metadata(log, claim, gpu, "gpu")
    assert _metadata_on_host(local_cluster, claim["metadata"]["uid"]).is_dir()
    # The plugin's word in the claim (status.devices), allowed by the chart's RBAC on the
    # synthetic resourceclaims/driver subresource.
    (entry,) = wait_for(
        f"the plugin to write status.devices of claim {claim_name}",
        lambda: read_json(resources.read_namespaced_resource_claim, claim_name, namespace)[
            "status"
        ].get("devices"),
        cluster=local_cluster,
        context=kubelet_plugin.log_tail,
    )
    assert (entry["driver"], entry["device"]) == (DRIVER, f"gpu-{gpu.index}")
    assert {c["type"]: c["status"] for c in entry["conditions"]} == {
        "Ready": "True",
        "Healthy": "True",
    }
    assert entry["data"]["uuid"] == gpu.uuid

    core.delete_namespaced_pod("sees-gpu", namespace, grace_period_seconds=0)
    wait_for(
        "the pod, its claim, the claim's CDI spec and metadata files to be gone",
        lambda: (
            is_gone(lambda: core.read_namespaced_pod("sees-gpu", namespace))
            and is_gone(lambda: resources.read_namespaced_resource_claim(claim_name, namespace))
            and not _cdi_specs(cdi_dir, claim["metadata"]["uid"])
            and not _metadata_on_host(local_cluster, claim["metadata"]["uid"]).exists()
        ),
        cluster=local_cluster,
        timeout_s=90,
        context=kubelet_plugin.log_tail,
    )


def test_pod_resources_list_and_get_report_the_claims_devices(
    api_client: Any, local_cluster: ClusterUnderTest, kubelet_plugin: Plugin, namespace: str
) -> None:
    """The kubelet's PodResources API (its pod-resources socket), which monitoring agents
    such as NVIDIA's DCGM exporter read to put pods on GPU metrics, names the running pod's
    claim with this driver's pool, device and the CDI IDs the plugin answered."""
    assert local_cluster.local is not None
    gpu = _l4(kubelet_plugin)
    selector = f'device.attributes["{DRIVER}"].productName == "{gpu.product_name}"'
    resource_api(api_client).create_namespaced_resource_claim_template(
        namespace, claim_template("one-l4", selector)
    )
    core_api(api_client).create_namespaced_pod(
        namespace, pod_with_claim("reported", SHOW_DEVICES, template="one-l4")
    )
    _run_until_running(api_client, local_cluster, kubelet_plugin, namespace, "reported")
    claim_name = generated_claim_name(api_client, namespace, "reported")
    assert claim_name
    claim = read_json(
        resource_api(api_client).read_namespaced_resource_claim, claim_name, namespace
    )
    cdi_ids = {
        f"{spec['kind']}={device['name']}"
        for spec in _cdi_specs(local_cluster.local.cdi_dir, claim["metadata"]["uid"])
        for device in spec["devices"]
    }

    socket = local_cluster.local.node_paths.kubelet_root / "pod-resources" / "kubelet.sock"
    with grpc.insecure_channel(f"unix://{socket}") as channel:
        lister = podresources_grpc.PodResourcesListerStub(channel)
        listed = lister.List(podresources_pb2.ListPodResourcesRequest(), timeout=10)
        got = lister.Get(
            podresources_pb2.GetPodResourcesRequest(pod_name="reported", pod_namespace=namespace),
            timeout=10,
        )
    (pod,) = [p for p in listed.pod_resources if (p.name, p.namespace) == ("reported", namespace)]
    assert got.pod_resources == pod
    (container,) = pod.containers
    (dynamic,) = container.dynamic_resources
    assert (dynamic.claim_name, dynamic.claim_namespace) == (claim_name, namespace)
    (resource,) = dynamic.claim_resources
    assert (resource.driver_name, resource.pool_name, resource.device_name) == (
        DRIVER,
        local_cluster.node_name,
        f"gpu-{gpu.index}",
    )
    assert {d.name for d in resource.cdi_devices} == cdi_ids
    assert not resource.HasField("share_id")


def test_the_kubelet_streams_health_over_v1_and_shows_it_in_the_pods_status(
    api_client: Any, local_cluster: ClusterUnderTest, kubelet_plugin: Plugin, namespace: str
) -> None:
    # ResourceHealthStatus is on by default from 1.36: the kubelet picks v1.DRAResourceHealth
    # (before v1alpha1) from the registration's supported_versions and opens the stream.
    wait_for(
        "the kubelet to open the v1 health stream",
        lambda: HEALTH_STREAM_V1 in kubelet_plugin.log_tail(100_000),
        cluster=local_cluster,
        context=kubelet_plugin.log_tail,
    )
    gpu = _l4(kubelet_plugin)
    selector = f'device.attributes["{DRIVER}"].productName == "{gpu.product_name}"'
    core = core_api(api_client)
    resource_api(api_client).create_namespaced_resource_claim_template(
        namespace, claim_template("health-l4", selector)
    )
    core.create_namespaced_pod(
        namespace, pod_with_claim("shows-health", SHOW_DEVICES, template="health-l4")
    )
    _run_until_running(api_client, local_cluster, kubelet_plugin, namespace, "shows-health")

    def statuses() -> list[dict[str, Any]]:
        pod = read_json(core.read_namespaced_pod, "shows-health", namespace)
        return [
            entry
            for container in pod["status"].get("containerStatuses") or []
            for entry in container.get("allocatedResourcesStatus") or []
        ]

    found: list[dict[str, Any]] = wait_for(
        "the pod's status to show its GPU's health",
        statuses,
        cluster=local_cluster,
        timeout_s=90,
        context=lambda: pod_report(api_client, namespace, "shows-health"),
    )
    (entry,) = found
    assert entry["name"].startswith("claim:"), entry
    assert [r["health"] for r in entry["resources"]] == ["Healthy"], entry
    core.delete_namespaced_pod("shows-health", namespace, grace_period_seconds=0)


def test_standalone_claim_is_deallocated_after_its_pod_is_deleted(
    api_client: Any, local_cluster: ClusterUnderTest, kubelet_plugin: Plugin, namespace: str
) -> None:
    assert local_cluster.local is not None
    cdi_dir = local_cluster.local.cdi_dir
    gpu = _l4(kubelet_plugin)
    resources = resource_api(api_client)
    core = core_api(api_client)
    selector = f'device.attributes["{DRIVER}"].uuid == "{gpu.uuid}"'
    resources.create_namespaced_resource_claim(namespace, resource_claim("shared-l4", selector))
    core.create_namespaced_pod(
        namespace,
        pod_with_claim(
            "uses-claim", _show_devices_and_metadata("resourceclaims/shared-l4"), claim="shared-l4"
        ),
    )

    log = _run_until_running(api_client, local_cluster, kubelet_plugin, namespace, "uses-claim")
    claim = read_json(resources.read_namespaced_resource_claim, "shared-l4", namespace)
    uid = claim["metadata"]["uid"]
    _check_container_sees_the_gpu(log, _cdi_specs(cdi_dir, uid), gpu)
    # KEP-5304: a claim the pod names has its file under the claim's own name.
    _check_container_reads_the_metadata(log, claim, gpu, None)

    core.delete_namespaced_pod("uses-claim", namespace, grace_period_seconds=0)
    wait_for(
        "pod uses-claim to be gone",
        lambda: is_gone(lambda: core.read_namespaced_pod("uses-claim", namespace)),
        cluster=local_cluster,
    )
    _wait_released(api_client, local_cluster, kubelet_plugin, namespace, "shared-l4")


def _claim_uid(api_client: Any, namespace: str, name: str) -> str:
    claim = read_json(resource_api(api_client).read_namespaced_resource_claim, name, namespace)
    return str(claim["metadata"]["uid"])


def _wait_released(
    api_client: Any, cluster: ClusterUnderTest, plugin: Plugin, namespace: str, claim: str
) -> None:
    """Until the claim is unreserved, deallocated and its CDI spec gone."""
    assert cluster.local is not None
    cdi_dir = cluster.local.cdi_dir
    resources = resource_api(api_client)
    uid = _claim_uid(api_client, namespace, claim)

    def released() -> bool:
        current = read_json(resources.read_namespaced_resource_claim, claim, namespace)
        status = current.get("status", {})
        return (
            not status.get("reservedFor")
            and "allocation" not in status
            and not _cdi_specs(cdi_dir, uid)
        )

    wait_for(
        f"claim {claim} to be unprepared, unreserved and deallocated",
        released,
        cluster=cluster,
        timeout_s=90,
        context=plugin.log_tail,
    )


def test_two_pods_share_one_claim_until_the_last_one_goes(
    api_client: Any, local_cluster: ClusterUnderTest, kubelet_plugin: Plugin, namespace: str
) -> None:
    assert local_cluster.local is not None
    cdi_dir = local_cluster.local.cdi_dir
    gpu = _l4(kubelet_plugin)
    resources = resource_api(api_client)
    core = core_api(api_client)
    selector = f'device.attributes["{DRIVER}"].uuid == "{gpu.uuid}"'
    resources.create_namespaced_resource_claim(namespace, resource_claim("shared", selector))
    for pod in ("first", "second"):
        core.create_namespaced_pod(namespace, pod_with_claim(pod, SHOW_DEVICES, claim="shared"))
    logs = {
        pod: _run_until_running(api_client, local_cluster, kubelet_plugin, namespace, pod)
        for pod in ("first", "second")
    }
    claim = read_json(resources.read_namespaced_resource_claim, "shared", namespace)
    uid = claim["metadata"]["uid"]
    assert sorted(r["name"] for r in claim["status"]["reservedFor"]) == ["first", "second"]
    specs = _cdi_specs(cdi_dir, uid)
    assert len(specs) == 1, f"one CDI spec per claim, found {len(specs)}"
    for log in logs.values():
        _check_container_sees_the_gpu(log, specs, gpu)

    core.delete_namespaced_pod("first", namespace, grace_period_seconds=0)

    def only_second_left() -> bool:
        current = read_json(resources.read_namespaced_resource_claim, "shared", namespace)
        reserved = [r["name"] for r in current.get("status", {}).get("reservedFor") or []]
        return reserved == ["second"] and is_gone(
            lambda: core.read_namespaced_pod("first", namespace)
        )

    wait_for(
        "the claim to be reserved for the second pod only", only_second_left, cluster=local_cluster
    )
    # The claim is still in use on the node: prepared, allocated, its spec in place.
    assert _cdi_specs(cdi_dir, uid) == specs
    assert pod_phase(api_client, namespace, "second") == "Running"
    assert (
        "allocation"
        in read_json(resources.read_namespaced_resource_claim, "shared", namespace)["status"]
    )

    core.delete_namespaced_pod("second", namespace, grace_period_seconds=0)
    _wait_released(api_client, local_cluster, kubelet_plugin, namespace, "shared")


def test_unsatisfiable_claim_stays_pending_without_harming_others(
    api_client: Any, local_cluster: ClusterUnderTest, kubelet_plugin: Plugin, namespace: str
) -> None:
    gpu = _l4(kubelet_plugin)
    resources = resource_api(api_client)
    core = core_api(api_client)
    resources.create_namespaced_resource_claim_template(
        namespace,
        claim_template(
            "no-such-gpu", f'device.attributes["{DRIVER}"].productName == "NVIDIA B200"'
        ),
    )
    resources.create_namespaced_resource_claim_template(
        namespace,
        claim_template("one-l4", f'device.attributes["{DRIVER}"].uuid == "{gpu.uuid}"'),
    )
    core.create_namespaced_pod(
        namespace, pod_with_claim("waits", ["sleep", "3600"], template="no-such-gpu")
    )
    core.create_namespaced_pod(namespace, pod_with_claim("runs", SHOW_DEVICES, template="one-l4"))

    def unschedulable() -> bool:
        pod = read_json(core.read_namespaced_pod, "waits", namespace)
        return any(
            c["type"] == "PodScheduled"
            and c["status"] == "False"
            and c.get("reason") == "Unschedulable"
            for c in pod.get("status", {}).get("conditions") or []
        )

    wait_for(
        "the scheduler to report pod waits unschedulable",
        unschedulable,
        cluster=local_cluster,
        context=lambda: pod_report(api_client, namespace, "waits"),
    )
    log = _run_until_running(api_client, local_cluster, kubelet_plugin, namespace, "runs")
    claim = generated_claim_name(api_client, namespace, "runs")
    assert claim
    uid = _claim_uid(api_client, namespace, claim)
    assert local_cluster.local is not None
    _check_container_sees_the_gpu(log, _cdi_specs(local_cluster.local.cdi_dir, uid), gpu)

    waiting = read_json(core.read_namespaced_pod, "waits", namespace)
    assert not waiting["spec"].get("nodeName")
    assert waiting["status"]["phase"] == "Pending"
    pending_claim = generated_claim_name(api_client, namespace, "waits")
    assert pending_claim, "the resourceclaim controller creates the claim before scheduling"
    stored = read_json(resources.read_namespaced_resource_claim, pending_claim, namespace)
    assert "allocation" not in stored.get("status", {})


def _prepare_again(socket: Path, namespace: str, name: str, uid: str) -> list[str]:
    """NodePrepareResources (v1) for one claim, as the kubelet repeats it; its CDI device IDs."""
    with grpc.insecure_channel(f"unix://{socket}") as channel:
        stub = api_pb2_grpc.DRAPluginStub(channel)
        request = api_pb2.NodePrepareResourcesRequest(
            claims=[api_pb2.Claim(namespace=namespace, name=name, uid=uid)]
        )
        answer = stub.NodePrepareResources(request, timeout=30).claims[uid]
    assert not answer.error, answer.error
    return [cdi_id for device in answer.devices for cdi_id in device.cdi_device_ids]


def test_plugin_restart_keeps_the_running_pods_devices_and_answers_prepare_again(
    api_client: Any, local_cluster: ClusterUnderTest, kubelet_plugin: Plugin, namespace: str
) -> None:
    cluster = local_cluster.local
    assert cluster is not None
    gpu = _l4(kubelet_plugin)
    resources = resource_api(api_client)
    core = core_api(api_client)
    resources.create_namespaced_resource_claim_template(
        namespace, claim_template("one-l4", f'device.attributes["{DRIVER}"].uuid == "{gpu.uuid}"')
    )
    core.create_namespaced_pod(
        namespace, pod_with_claim("survivor", SHOW_DEVICES, template="one-l4")
    )
    _run_until_running(api_client, local_cluster, kubelet_plugin, namespace, "survivor")
    claim = generated_claim_name(api_client, namespace, "survivor")
    assert claim
    uid = _claim_uid(api_client, namespace, claim)
    spec_files = sorted(cluster.cdi_dir.glob(f"*{uid}*"))
    assert spec_files
    before = {f: f.read_bytes() for f in spec_files}
    container = read_json(core.read_namespaced_pod, "survivor", namespace)["status"][
        "containerStatuses"
    ][0]
    socket = dra_socket_path(cluster.plugins_dir, DRIVER, kubelet_plugin.instance)
    # The kubelet's retry: the same NodePrepareResources again returns the same IDs.
    ids = _prepare_again(socket, namespace, claim, uid)
    spec_devices = {
        f"{spec['kind']}={device['name']}"
        for spec in _cdi_specs(cluster.cdi_dir, uid)
        for device in spec["devices"]
    }
    assert ids and set(ids) <= spec_devices

    assert kubelet_plugin.stop() == 0, kubelet_plugin.log_tail()
    kubelet_plugin.start(local_cluster)
    # ... and the restarted plugin answers it identically, from its checkpoint.
    socket = dra_socket_path(cluster.plugins_dir, DRIVER, kubelet_plugin.instance)
    assert _prepare_again(socket, namespace, claim, uid) == ids

    # The new process recovered the claim from its checkpoint: the spec the running
    # container was created from is untouched, and the container was not restarted.
    assert {f: f.read_bytes() for f in sorted(cluster.cdi_dir.glob(f"*{uid}*"))} == before
    checkpoint = cluster.plugins_dir / DRIVER / "checkpoint.json"
    assert uid in checkpoint.read_text()
    now = read_json(core.read_namespaced_pod, "survivor", namespace)["status"]
    assert now["phase"] == "Running"
    assert now["containerStatuses"][0]["containerID"] == container["containerID"]
    assert now["containerStatuses"][0]["restartCount"] == 0

    # ... and unprepares, on deletion, what its predecessor prepared. A forced deletion
    # lets the garbage collector remove the claim while the kubelet still unprepares, and
    # the plugin removes the spec before it saves the checkpoint without the claim (a
    # crash between the two leaves an entry start-up cleans up, never a spec nobody
    # owns): wait for all three.
    core.delete_namespaced_pod("survivor", namespace, grace_period_seconds=0)
    wait_for(
        "the claim, its CDI spec and its checkpoint entry to be gone after the restart",
        lambda: (
            is_gone(lambda: resources.read_namespaced_resource_claim(claim, namespace))
            and not _cdi_specs(cluster.cdi_dir, uid)
            and uid not in checkpoint.read_text()
        ),
        cluster=local_cluster,
        timeout_s=90,
        context=kubelet_plugin.log_tail,
    )


def test_a_surge_instance_serves_beside_the_plugin_and_takes_over_when_it_stops(
    api_client: Any, local_cluster: ClusterUnderTest, kubelet_plugin: Plugin, namespace: str
) -> None:
    """A rolling update with max surge: the new instance (its own pod UID) registers beside
    the running one, the kubelet calls the newest, and once the old one is gone the new one
    publishes the node's slices and unprepares what was prepared."""
    cluster = local_cluster.local
    assert cluster is not None
    (cluster.directory / "driver-root").mkdir(exist_ok=True)
    surge = RunningPlugin(
        _source_argv(local_cluster),
        cluster.logs_dir / "kubelet-plugin-surge.log",
        kubelet_plugin.gpus,
    )
    resources = resource_api(api_client)
    core = core_api(api_client)
    suspended = False
    try:
        surge.start(local_cluster)
        wait_for(
            "the surge instance to leave publishing to the running one",
            lambda: WAITING in surge.log_text(),
            cluster=local_cluster,
            context=surge.log_tail,
        )
        assert registration_socket_path(
            cluster.plugins_registry_dir, DRIVER, surge.instance
        ).is_socket()
        assert dra_socket_path(cluster.plugins_dir, DRIVER, kubelet_plugin.instance).is_socket()

        gpu = _l4(kubelet_plugin)
        resources.create_namespaced_resource_claim_template(
            namespace,
            claim_template("surge-l4", f'device.attributes["{DRIVER}"].uuid == "{gpu.uuid}"'),
        )
        core.create_namespaced_pod(
            namespace, pod_with_claim("surged", SHOW_DEVICES, template="surge-l4")
        )
        _run_until_running(api_client, local_cluster, surge, namespace, "surged")
        claim = generated_claim_name(api_client, namespace, "surged")
        assert claim
        uid = _claim_uid(api_client, namespace, claim)
        # The kubelet called the newest registration.
        assert f"prepared claim {namespace}/{claim} (UID {uid})" in surge.log_text()

        # The old instance goes; the new one takes over publishing the node's slices.
        assert kubelet_plugin.suspend() == 0, kubelet_plugin.log_tail()
        suspended = True
        wait_for(
            "the surge instance to take over publishing",
            lambda: TOOK_OVER in surge.log_text(),
            cluster=local_cluster,
            context=surge.log_tail,
        )
        slices = resources.list_resource_slice(
            field_selector=f"spec.nodeName={cluster.node_name},spec.driver={DRIVER}"
        ).items
        assert slices
        wiped = slices[0].metadata.name
        resources.delete_resource_slice(wiped)
        wait_for(
            "the surge instance to publish the deleted slice again",
            lambda: any(
                s.metadata.name == wiped
                for s in resources.list_resource_slice(
                    field_selector=f"spec.nodeName={cluster.node_name},spec.driver={DRIVER}"
                ).items
            ),
            cluster=local_cluster,
            context=surge.log_tail,
        )

        # It unprepares the claim the pod held, from the checkpoint both instances share.
        core.delete_namespaced_pod("surged", namespace, grace_period_seconds=0)
        wait_for(
            "the claim and its CDI spec to be gone",
            lambda: (
                is_gone(lambda: resources.read_namespaced_resource_claim(claim, namespace))
                and not _cdi_specs(cluster.cdi_dir, uid)
            ),
            cluster=local_cluster,
            timeout_s=90,
            context=surge.log_tail,
        )
        assert f"unprepared claim {namespace}/{claim} (UID {uid})" in surge.log_text()
        checkpoint = cluster.plugins_dir / DRIVER / "checkpoint.json"
        assert uid not in checkpoint.read_text()
    finally:
        code = surge.stop()
        if suspended:
            kubelet_plugin.resume(local_cluster)
    assert code == 0, surge.log_tail()
    assert not registration_socket_path(
        cluster.plugins_registry_dir, DRIVER, surge.instance
    ).exists()


# --- pods written for the device plugin: nvidia.com/gpu served through DRA ----------------

EXTENDED = "nvidia.com/gpu"
#: Prints the container's view between markers, then exits (an init container's command).
SHOW_DEVICES_ONCE = ["sh", "-c", "echo '--- dev'; ls /dev; echo '--- env'; env; echo '--- end'"]


def _container(name: str, gpus: int, command: list[str] = SHOW_DEVICES) -> dict[str, Any]:
    resources = {"limits": {EXTENDED: str(gpus)}} if gpus else {}
    return {
        "name": name,
        "image": BUSYBOX_IMAGE,
        "imagePullPolicy": "Never",
        "command": command,
        "resources": resources,
    }


def _device_plugin_pod(
    name: str,
    containers: list[dict[str, Any]],
    init_containers: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """A pod as written for the device plugin: GPUs in its containers' limits, no claim."""
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 1,
        "containers": containers,
    }
    if init_containers:
        spec["initContainers"] = list(init_containers)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def _extended_claim(api_client: Any, namespace: str, pod: str) -> tuple[dict[str, Any], Any]:
    """The claim the scheduler made for the pod's extended resources, and the pod's record
    of it (status.extendedResourceClaimStatus)."""
    stored = read_json(core_api(api_client).read_namespaced_pod, pod, namespace)
    status = stored["status"].get("extendedResourceClaimStatus")
    assert status, f"pod {pod} has no extendedResourceClaimStatus: {stored['status']}"
    claim = read_json(
        resource_api(api_client).read_namespaced_resource_claim,
        status["resourceClaimName"],
        namespace,
    )
    return claim, status


def _check_made_for(claim: dict[str, Any], pod: dict[str, Any]) -> None:
    """The claim is the scheduler's special claim of ``pod``, as KEP-5004 makes it."""
    meta = claim["metadata"]
    assert meta["annotations"]["resource.kubernetes.io/extended-resource-claim"] == "true"
    assert meta["generateName"] == f"{pod['metadata']['name']}-extended-resources-"
    (owner,) = meta["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "Pod",
        pod["metadata"]["name"],
        pod["metadata"]["uid"],
        True,
    )


def _container_log(api_client: Any, namespace: str, pod: str, container: str) -> str:
    text: str = core_api(api_client).read_namespaced_pod_log(pod, namespace, container=container)
    return text


def _wait_claim_gone(
    api_client: Any, cluster: ClusterUnderTest, plugin: Plugin, *, pod: str, claim: dict[str, Any]
) -> None:
    """Delete the pod; wait until it, its special claim and the claim's CDI spec are gone."""
    assert cluster.local is not None
    cdi_dir = cluster.local.cdi_dir
    core = core_api(api_client)
    resources = resource_api(api_client)
    name, uid = claim["metadata"]["name"], claim["metadata"]["uid"]
    namespace = claim["metadata"]["namespace"]
    core.delete_namespaced_pod(pod, namespace, grace_period_seconds=0)
    wait_for(
        f"pod {pod}, its claim {name} and the claim's CDI spec to be gone",
        lambda: (
            is_gone(lambda: core.read_namespaced_pod(pod, namespace))
            and is_gone(lambda: resources.read_namespaced_resource_claim(name, namespace))
            and not _cdi_specs(cdi_dir, uid)
        ),
        cluster=cluster,
        timeout_s=90,
        context=plugin.log_tail,
    )


def test_a_device_plugin_pod_gets_its_gpus_through_dra_unchanged(
    api_client: Any, local_cluster: ClusterUnderTest, kubelet_plugin: Plugin, namespace: str
) -> None:
    assert local_cluster.local is not None
    core = core_api(api_client)
    core.create_namespaced_pod(namespace, _device_plugin_pod("two-gpus", [_container("main", 2)]))

    log = _run_until_running(api_client, local_cluster, kubelet_plugin, namespace, "two-gpus")
    claim, status = _extended_claim(api_client, namespace, "two-gpus")
    _check_made_for(claim, read_json(core.read_namespaced_pod, "two-gpus", namespace))
    (request,) = claim["spec"]["devices"]["requests"]
    assert request["name"] == "container-0-request-0"
    assert request["exactly"]["deviceClassName"] == DRIVER
    assert request["exactly"]["count"] == 2
    assert status["requestMappings"] == [
        {"containerName": "main", "resourceName": EXTENDED, "requestName": request["name"]}
    ]
    results = claim["status"]["allocation"]["devices"]["results"]
    assert sorted(r["device"] for r in results) == sorted(
        f"gpu-{g.index}" for g in kubelet_plugin.gpus
    )
    assert {r["driver"] for r in results} == {DRIVER}
    specs = _cdi_specs(local_cluster.local.cdi_dir, claim["metadata"]["uid"])
    for gpu in kubelet_plugin.gpus:
        _check_container_sees_the_gpu(log, specs, gpu)

    _wait_claim_gone(api_client, local_cluster, kubelet_plugin, pod="two-gpus", claim=claim)


def test_a_device_plugin_pod_asking_more_than_the_node_has_stays_pending(
    api_client: Any, local_cluster: ClusterUnderTest, kubelet_plugin: Plugin, namespace: str
) -> None:
    core = core_api(api_client)
    too_many = len(kubelet_plugin.gpus) + 1
    core.create_namespaced_pod(
        namespace, _device_plugin_pod("too-many", [_container("main", too_many)])
    )

    def unschedulable() -> dict[str, Any] | None:
        stored = read_json(core.read_namespaced_pod, "too-many", namespace)
        conditions = stored["status"].get("conditions") or []
        return next(
            (c for c in conditions if c["type"] == "PodScheduled" and c["status"] == "False"),
            None,
        )

    condition = wait_for(
        "the scheduler to report pod too-many unschedulable",
        unschedulable,
        cluster=local_cluster,
        context=lambda: pod_report(api_client, namespace, "too-many"),
    )
    assert condition["reason"] == "Unschedulable"
    assert "cannot allocate all claims" in condition["message"], condition
    assert pod_phase(api_client, namespace, "too-many") == "Pending"
    stored = read_json(core.read_namespaced_pod, "too-many", namespace)
    assert not stored["status"].get("extendedResourceClaimStatus")


def test_an_extended_resource_and_a_claim_in_one_pod_get_both(
    api_client: Any, local_cluster: ClusterUnderTest, kubelet_plugin: Plugin, namespace: str
) -> None:
    assert local_cluster.local is not None
    cdi_dir = local_cluster.local.cdi_dir
    l4 = _l4(kubelet_plugin)
    (other,) = [g for g in kubelet_plugin.gpus if g is not l4]
    selector = f'device.attributes["{DRIVER}"].productName == "{l4.product_name}"'
    resources = resource_api(api_client)
    resources.create_namespaced_resource_claim_template(
        namespace, claim_template("one-l4", selector)
    )
    pod = pod_with_claim("both", SHOW_DEVICES, template="one-l4")
    pod["spec"]["containers"][0]["resources"]["limits"] = {EXTENDED: "1"}
    core_api(api_client).create_namespaced_pod(namespace, pod)

    log = _run_until_running(api_client, local_cluster, kubelet_plugin, namespace, "both")
    extended, _ = _extended_claim(api_client, namespace, "both")
    (result,) = extended["status"]["allocation"]["devices"]["results"]
    assert result["device"] == f"gpu-{other.index}"  # the L4 is the template claim's
    template_claim = generated_claim_name(api_client, namespace, "both")
    assert template_claim
    uid = _claim_uid(api_client, namespace, template_claim)
    _check_container_sees_the_gpu(log, _cdi_specs(cdi_dir, uid), l4)
    _check_container_sees_the_gpu(log, _cdi_specs(cdi_dir, extended["metadata"]["uid"]), other)

    _wait_claim_gone(api_client, local_cluster, kubelet_plugin, pod="both", claim=extended)


def test_each_container_gets_its_own_gpu_and_an_init_container_reuses_one(
    api_client: Any, local_cluster: ClusterUnderTest, kubelet_plugin: Plugin, namespace: str
) -> None:
    assert local_cluster.local is not None
    core = core_api(api_client)
    pod = _device_plugin_pod(
        "per-container",
        [_container("a", 1), _container("b", 1), _container("no-gpu", 0)],
        init_containers=[_container("setup", 1, SHOW_DEVICES_ONCE)],
    )
    core.create_namespaced_pod(namespace, pod)

    wait_for(
        "pod per-container to run",
        lambda: pod_phase(api_client, namespace, "per-container") != "Pending",
        cluster=local_cluster,
        timeout_s=120,
        context=lambda: (
            pod_report(api_client, namespace, "per-container") + "\n" + kubelet_plugin.log_tail()
        ),
    )
    assert pod_phase(api_client, namespace, "per-container") == "Running"
    claim, status = _extended_claim(api_client, namespace, "per-container")
    requests = {r["name"]: r["exactly"] for r in claim["spec"]["devices"]["requests"]}
    # The pod's effective request is max(init, sum of the others) = 2: one request per
    # long-lived container; the init container reuses one of theirs (index 0 is "setup").
    assert sorted(requests) == ["container-1-request-0", "container-2-request-0"]
    assert all(r["count"] == 1 for r in requests.values())
    mapped = {(m["containerName"], m["requestName"]) for m in status["requestMappings"]}
    assert ("a", "container-1-request-0") in mapped
    assert ("b", "container-2-request-0") in mapped
    (setup_request,) = [r for c, r in mapped if c == "setup"]
    assert not [c for c, _ in mapped if c == "no-gpu"]
    by_request = {
        r["request"]: next(g for g in kubelet_plugin.gpus if f"gpu-{g.index}" == r["device"])
        for r in claim["status"]["allocation"]["devices"]["results"]
    }

    def printed(container: str) -> dict[str, list[str]]:
        log: str = wait_for(
            f"container {container} to print what it sees",
            lambda: (
                (text := _container_log(api_client, namespace, "per-container", container))
                and "--- end" in text
                and text
            ),
            cluster=local_cluster,
        )
        return log_sections(log)

    def uuids_in(env: list[str]) -> set[str]:
        return {line.split("=", 1)[1] for line in env if re.match(r"DRA_GPU_\d+_UUID=", line)}

    for container, request in [
        ("a", "container-1-request-0"),
        ("b", "container-2-request-0"),
        ("setup", setup_request),
    ]:
        seen = printed(container)
        mine = by_request[request]
        others = {Path(g.device_node).name for g in kubelet_plugin.gpus if g is not mine}
        assert Path(mine.device_node).name in seen["dev"], (container, seen)
        assert not others & set(seen["dev"]), (container, seen)
        assert uuids_in(seen["env"]) == {mine.uuid}, (container, seen["env"])
    nothing = printed("no-gpu")
    assert not {Path(g.device_node).name for g in kubelet_plugin.gpus} & set(nothing["dev"])
    assert not uuids_in(nothing["env"])

    _wait_claim_gone(api_client, local_cluster, kubelet_plugin, pod="per-container", claim=claim)


# --- GPU health end to end: taints, the pod's and the claim's status, DeviceTaintRules ------

XID_TAINT = f"{DRIVER}/xid"
#: Selects any full GPU of the node (the class also asks for type "gpu").
ANY_GPU = f'device.attributes["{DRIVER}"].type == "gpu"'
GATE = "gpu.dra-driver.io/placement"
#: An XID NVIDIA's table leaves to the health policy (``xid=NoSchedule`` by default).
POLICY_XID = 74
#: The quiet window of the recovery test: shorter than the test's own waits, so that only
#: the hardware's recovery action keeps the taint.
RECOVERY_WINDOW_S = 2
#: "GPU has fallen off the bus": NoExecute, kept until a reboot or an admin's clear.
OFF_THE_BUS = 79


def _h100(plugin: Plugin) -> Gpu:
    """The node's first GPU (gpu-0): the one a first fit picks when it is free."""
    return next(g for g in plugin.gpus if "H100" in g.product_name)


def _the_gpu(gpu: Gpu) -> str:
    return f'device.attributes["{DRIVER}"].uuid == "{gpu.uuid}"'


def _faults_dir(cluster: ClusterUnderTest) -> Path:
    """The mock backend's fault spool, seen from the host: ``<mockDevRoot>/run/dra-driver/faults``
    (the chart mounts the mock dev root at its host path)."""
    assert cluster.local is not None
    return cluster.local.directory / "mock-dev" / "run" / "dra-driver" / "faults"


def _state_dir(cluster: ClusterUnderTest) -> Path:
    """The plugin's directory on the host (mounted at the same path): taints.json and the
    admins' clear requests."""
    assert cluster.local is not None
    return cluster.local.plugins_dir / DRIVER


def _node_devices(api_client: Any, cluster: ClusterUnderTest) -> dict[str, dict[str, Any]]:
    """Every device the node's slices publish now, by name, with ``pool`` added."""
    listing = read_json(
        resource_api(api_client).list_resource_slice,
        field_selector=f"spec.nodeName={cluster.node_name},spec.driver={DRIVER}",
    )
    return {
        device["name"]: {**device, "pool": s["spec"]["pool"]["name"]}
        for s in listing["items"]
        for device in s["spec"].get("devices") or []
    }


def _health_taints(api_client: Any, cluster: ClusterUnderTest) -> dict[str, list[dict[str, Any]]]:
    """The published devices that carry taints, with them."""
    return {
        name: device["taints"]
        for name, device in _node_devices(api_client, cluster).items()
        if device.get("taints")
    }


def _clear_taints(cluster: ClusterUnderTest, *device: str) -> subprocess.CompletedProcess[str]:
    """``dra-driver taints clear`` on the node, as an admin runs it: DEVICE, or ``--all``."""
    argv = [*dra_driver_argv(), "taints", "clear", "--node-state-dir", str(_state_dir(cluster))]
    argv += [*device] if device else ["--all"]
    return subprocess.run(
        [*argv, "--wait", "30"], capture_output=True, text=True, timeout=60, check=False
    )


@contextlib.contextmanager
def _no_taints_left(api_client: Any, cluster: ClusterUnderTest, plugin: Plugin) -> Iterator[None]:
    """Whatever the test did: every health taint cleared after it, and the slices clean, so
    the next test finds every GPU usable."""
    try:
        yield
    finally:
        # Faults the plugin has not taken yet would taint again after the clear.
        for path in _faults_dir(cluster).glob("*.json"):
            path.unlink(missing_ok=True)
        result = _clear_taints(cluster)
        assert result.returncode == 0, result.stderr
        wait_for(
            "the plugin to publish every device untainted",
            lambda: not _health_taints(api_client, cluster),
            cluster=cluster,
            context=plugin.log_tail,
        )


def _resource_health(api_client: Any, namespace: str, pod: str) -> list[str]:
    """The health the kubelet shows for each device of the pod's containers
    (``status.containerStatuses[].allocatedResourcesStatus[].resources[].health``)."""
    stored = read_json(core_api(api_client).read_namespaced_pod, pod, namespace)
    return [
        resource.get("health", "")
        for container in stored["status"].get("containerStatuses") or []
        for entry in container.get("allocatedResourcesStatus") or []
        for resource in entry.get("resources") or []
    ]


def _claim_health(api_client: Any, namespace: str, claim: str) -> dict[str, Any] | None:
    """The Healthy condition the plugin wrote for the claim's one device, once written."""
    stored = read_json(resource_api(api_client).read_namespaced_resource_claim, claim, namespace)
    for entry in stored.get("status", {}).get("devices") or []:
        for condition in entry.get("conditions") or []:
            if condition["type"] == "Healthy":
                return dict(condition)
    return None


def _allocated_device(api_client: Any, namespace: str, pod: str) -> str:
    claim = generated_claim_name(api_client, namespace, pod)
    assert claim
    stored = read_json(resource_api(api_client).read_namespaced_resource_claim, claim, namespace)
    (result,) = stored["status"]["allocation"]["devices"]["results"]
    return str(result["device"])


def _wait_unschedulable(
    api_client: Any, cluster: ClusterUnderTest, namespace: str, pod: str
) -> dict[str, Any]:
    """Until the scheduler reports ``pod`` unschedulable; its PodScheduled condition."""

    def condition() -> dict[str, Any] | None:
        stored = read_json(core_api(api_client).read_namespaced_pod, pod, namespace)
        return next(
            (
                c
                for c in stored["status"].get("conditions") or []
                if c["type"] == "PodScheduled" and c.get("reason") == "Unschedulable"
            ),
            None,
        )

    found: dict[str, Any] = wait_for(
        f"the scheduler to report pod {pod} unschedulable",
        condition,
        cluster=cluster,
        context=lambda: pod_report(api_client, namespace, pod),
    )
    return found


def _wait_tainted(
    api_client: Any, cluster: ClusterUnderTest, plugin: Plugin, device: str
) -> dict[str, Any]:
    """Until the node's slices publish ``device`` with the XID taint; that taint."""

    def taint() -> dict[str, Any] | None:
        taints = _health_taints(api_client, cluster).get(device) or []
        return next((t for t in taints if t["key"] == XID_TAINT), None)

    found: dict[str, Any] = wait_for(
        f"the slice to publish {device} with the XID taint",
        taint,
        cluster=cluster,
        context=plugin.log_tail,
    )
    return found


def _wait_evicted(api_client: Any, cluster: ClusterUnderTest, namespace: str, pod: str) -> None:
    """Until the device taint eviction controller has evicted ``pod`` (gone)."""
    core = core_api(api_client)
    wait_for(
        f"the device taint eviction controller to evict pod {pod}",
        lambda: is_gone(lambda: core.read_namespaced_pod(pod, namespace)),
        cluster=cluster,
        timeout_s=90,
        context=lambda: pod_report(api_client, namespace, pod),
    )


def _events(api_client: Any, namespace: str, name: str, reason: str) -> list[str]:
    listing = core_api(api_client).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name},reason={reason}"
    )
    return [str(e.message) for e in listing.items]


def _pod_holding_the_h100(
    api_client: Any, cluster: ClusterUnderTest, plugin: Plugin, namespace: str
) -> Gpu:
    """The health tests' start: claim templates ``the-h100`` (that very GPU) and ``any-gpu``,
    and pod ``holds`` running with the H100; the H100."""
    h100 = _h100(plugin)
    resources = resource_api(api_client)
    resources.create_namespaced_resource_claim_template(
        namespace, claim_template("the-h100", _the_gpu(h100))
    )
    resources.create_namespaced_resource_claim_template(
        namespace, claim_template("any-gpu", ANY_GPU)
    )
    core_api(api_client).create_namespaced_pod(
        namespace, pod_with_claim("holds", SHOW_DEVICES, template="the-h100")
    )
    _run_until_running(api_client, cluster, plugin, namespace, "holds")
    return h100


def test_an_xid_on_a_running_pods_gpu_shows_in_the_slice_the_pod_and_the_claim(
    api_client: Any, local_cluster: ClusterUnderTest, kubelet_plugin: Plugin, namespace: str
) -> None:
    """An XID the health policy decides (NoSchedule) on the GPU a running pod holds: the
    slice taints it (and its MIG devices), the kubelet shows it Unhealthy in the pod's
    status, the plugin's Healthy condition in the claim turns False; the pod keeps running,
    and once it is gone a pod asking for that very GPU stays pending while one asking for
    any GPU gets the other."""
    assert xid_outcome(POLICY_XID, ignored=DEFAULT_IGNORED_XIDS, policy_effect="NoSchedule") == (
        "no-schedule"
    )
    l4 = _l4(kubelet_plugin)
    resources = resource_api(api_client)
    core = core_api(api_client)
    with _no_taints_left(api_client, local_cluster, kubelet_plugin):
        h100 = _pod_holding_the_h100(api_client, local_cluster, kubelet_plugin, namespace)
        claim = generated_claim_name(api_client, namespace, "holds")
        assert claim
        wait_for(
            "the pod's status and the claim to show the GPU healthy",
            lambda: (
                _resource_health(api_client, namespace, "holds") == ["Healthy"]
                and (_claim_health(api_client, namespace, claim) or {}).get("status") == "True"
            ),
            cluster=local_cluster,
            timeout_s=90,
            context=lambda: pod_report(api_client, namespace, "holds"),
        )

        write_fault(_faults_dir(local_cluster), "xid", gpu=h100.device_name, xid=POLICY_XID)

        taint = _wait_tainted(api_client, local_cluster, kubelet_plugin, h100.device_name)
        assert (taint["value"], taint["effect"]) == (str(POLICY_XID), "NoSchedule"), taint
        tainted = _health_taints(api_client, local_cluster)
        # The GPU's MIG devices share its fault; the other GPU does not.
        assert h100.device_name in tainted and l4.device_name not in tainted, tainted
        assert all(
            name == h100.device_name or name.startswith(h100.device_name + "-") for name in tainted
        ), tainted
        wait_for(
            "the kubelet to show the pod's GPU Unhealthy",
            lambda: _resource_health(api_client, namespace, "holds") == ["Unhealthy"],
            cluster=local_cluster,
            timeout_s=90,
            context=lambda: pod_report(api_client, namespace, "holds"),
        )
        condition = wait_for(
            "the plugin to mark the claim's device unhealthy",
            lambda: (
                (c := _claim_health(api_client, namespace, claim)) and c["status"] == "False" and c
            ),
            cluster=local_cluster,
            context=kubelet_plugin.log_tail,
        )
        assert condition["reason"] == "Tainted", condition
        assert f"{XID_TAINT}={POLICY_XID}:NoSchedule" in condition["message"], condition
        # And an Event on the claim, for whoever runs `kubectl describe resourceclaim`.
        (message,) = wait_for(
            "the plugin's DeviceTainted Event on the claim",
            lambda: _events(api_client, namespace, claim, "DeviceTainted"),
            cluster=local_cluster,
            context=kubelet_plugin.log_tail,
        )
        assert f"{XID_TAINT}={POLICY_XID}:NoSchedule" in message, message
        # NoSchedule: what runs there stays.
        assert pod_phase(api_client, namespace, "holds") == "Running"

        core.delete_namespaced_pod("holds", namespace, grace_period_seconds=0)
        wait_for(
            "pod holds and its claim to be gone",
            lambda: (
                is_gone(lambda: core.read_namespaced_pod("holds", namespace))
                and is_gone(lambda: resources.read_namespaced_resource_claim(claim, namespace))
            ),
            cluster=local_cluster,
            timeout_s=90,
            context=kubelet_plugin.log_tail,
        )
        # The GPU is free now, but tainted: no new pod gets it. A first fit would take it
        # (gpu-0); the pod asking for any GPU gets the other one.
        core.create_namespaced_pod(
            namespace, pod_with_claim("wants-h100", SHOW_DEVICES, template="the-h100")
        )
        core.create_namespaced_pod(
            namespace, pod_with_claim("any", SHOW_DEVICES, template="any-gpu")
        )
        _run_until_running(api_client, local_cluster, kubelet_plugin, namespace, "any")
        assert _allocated_device(api_client, namespace, "any") == l4.device_name
        _wait_unschedulable(api_client, local_cluster, namespace, "wants-h100")
        core.delete_collection_namespaced_pod(namespace, grace_period_seconds=0)


def test_a_gpu_off_the_bus_drains_its_pod_and_stays_tainted_across_a_restart_until_cleared(
    api_client: Any, local_cluster: ClusterUnderTest, kubelet_plugin: Plugin, namespace: str
) -> None:
    """XID 79 on the GPU a running pod holds: the plugin taints it NoExecute, and the
    controller-manager's device taint eviction controller evicts the pod. The taint is kept
    in taints.json: a restarted plugin publishes the GPU tainted again (its slices deleted
    and republished: the same taint, the same timeAdded), and a pod waiting for that GPU
    stays pending; ``dra-driver taints clear`` on the node lifts the taint, and the waiting
    pod gets the GPU."""
    resources = resource_api(api_client)
    core = core_api(api_client)
    with _no_taints_left(api_client, local_cluster, kubelet_plugin):
        h100 = _pod_holding_the_h100(api_client, local_cluster, kubelet_plugin, namespace)
        write_fault(_faults_dir(local_cluster), "xid", gpu=h100.uuid, xid=OFF_THE_BUS)
        before = _wait_tainted(api_client, local_cluster, kubelet_plugin, h100.device_name)
        assert (before["value"], before["effect"]) == (str(OFF_THE_BUS), "NoExecute"), before
        _wait_evicted(api_client, local_cluster, namespace, "holds")
        assert _events(api_client, namespace, "holds", "DeviceTaintManagerEviction")
        core.create_namespaced_pod(
            namespace, pod_with_claim("waits", SHOW_DEVICES, template="the-h100")
        )
        _wait_unschedulable(api_client, local_cluster, namespace, "waits")

        assert kubelet_plugin.stop() == 0, kubelet_plugin.log_tail()
        saved = (_state_dir(local_cluster) / "taints.json").read_text()
        assert XID_TAINT in saved and h100.uuid in saved, saved
        kubelet_plugin.start(local_cluster)
        # Slices gone: the restarted plugin publishes them again, from what it restored.
        resources.delete_collection_resource_slice(
            field_selector=f"spec.nodeName={local_cluster.node_name},spec.driver={DRIVER}"
        )
        after = _wait_tainted(api_client, local_cluster, kubelet_plugin, h100.device_name)
        assert after == before, (before, after)
        assert pod_phase(api_client, namespace, "waits") == "Pending"

        result = _clear_taints(local_cluster, h100.device_name)
        assert result.returncode == 0, result.stderr
        assert "cleared by the plugin and saved" in result.stdout, result.stdout
        wait_for(
            "the plugin to publish the GPU untainted",
            lambda: not _health_taints(api_client, local_cluster),
            cluster=local_cluster,
            context=kubelet_plugin.log_tail,
        )
        _run_until_running(api_client, local_cluster, kubelet_plugin, namespace, "waits")
        assert _allocated_device(api_client, namespace, "waits") == h100.device_name
        core.delete_collection_namespaced_pod(namespace, grace_period_seconds=0)


@contextlib.contextmanager
def _placement_controller(cluster: ClusterUnderTest, log: Path) -> Iterator[None]:
    """``dra-driver controller`` as a process (first fit, no leader election), until the end."""
    argv = [
        *dra_driver_argv(), "controller", "--kubeconfig", str(cluster.kubeconfig),
        "--identity", "health-test", "--no-leader-elect", "--no-manage-device-classes",
        "--policy", "first-fit", "--settle-delay", "0.5",
        "--health-address", f"127.0.0.1:{free_port()}",
        "--metrics-address", f"127.0.0.1:{free_port()}",
    ]  # fmt: skip
    with log.open("ab") as out:
        controller = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield
    finally:
        controller.terminate()
        code = controller.wait(timeout=30)
        assert code == 0, f"the controller exited {code}:\n{log.read_text()[-3000:]}"


def _gated(pod: dict[str, Any]) -> dict[str, Any]:
    pod["spec"]["schedulingGates"] = [{"name": GATE}]
    return pod


def test_a_no_execute_device_taint_rule_evicts_the_pod_and_the_controller_places_around_it(
    api_client: Any, local_cluster: ClusterUnderTest, kubelet_plugin: Plugin, namespace: str
) -> None:
    """An admin's DeviceTaintRule (NoExecute) on the GPU a running pod holds: the
    controller-manager's device-taint-eviction controller evicts the pod, which tolerates
    nothing; this project's controller places a gated pod on the other GPU, though its
    first fit would take the tainted one, and reports a gated pod that wants the tainted
    GPU unplaceable, naming the rule."""
    assert local_cluster.local is not None
    l4 = _l4(kubelet_plugin)
    resources = resource_api(api_client)
    core = core_api(api_client)
    h100 = _pod_holding_the_h100(api_client, local_cluster, kubelet_plugin, namespace)
    pool = _node_devices(api_client, local_cluster)[h100.device_name]["pool"]
    rule = f"{namespace}-maintenance"
    resources.create_device_taint_rule(
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "DeviceTaintRule",
            "metadata": {"name": rule},
            "spec": {
                "deviceSelector": {"driver": DRIVER, "pool": pool, "device": h100.device_name},
                "taint": {"key": "example.com/maintenance", "value": "psu", "effect": "NoExecute"},
            },
        }
    )
    try:
        _wait_evicted(api_client, local_cluster, namespace, "holds")
        assert _events(api_client, namespace, "holds", "DeviceTaintManagerEviction")
        wait_for(
            f"DeviceTaintRule {rule} to report the eviction completed",
            lambda: any(
                c["type"] == "EvictionInProgress" and c["reason"] == "Completed"
                for c in read_json(resources.read_device_taint_rule, rule)
                .get("status", {})
                .get("conditions", [])
            ),
            cluster=local_cluster,
        )

        with _placement_controller(local_cluster, local_cluster.local.logs_dir / "controller.log"):
            core.create_namespaced_pod(
                namespace, _gated(pod_with_claim("placed", SHOW_DEVICES, template="any-gpu"))
            )
            core.create_namespaced_pod(
                namespace, _gated(pod_with_claim("wants-h100", SHOW_DEVICES, template="the-h100"))
            )
            _run_until_running(api_client, local_cluster, kubelet_plugin, namespace, "placed")
            assert _allocated_device(api_client, namespace, "placed") == l4.device_name
            wait_for(
                f"the controller to report pod wants-h100 unplaceable for DeviceTaintRule {rule}",
                lambda: any(
                    f"DeviceTaintRule {rule}" in message
                    for message in _events(api_client, namespace, "wants-h100", "Unplaceable")
                ),
                cluster=local_cluster,
                context=lambda: "\n".join(
                    _events(api_client, namespace, "wants-h100", "Unplaceable")
                ),
            )
            stored = read_json(core.read_namespaced_pod, "wants-h100", namespace)
            assert stored["spec"].get("schedulingGates") == [{"name": GATE}]
            core.delete_collection_namespaced_pod(namespace, grace_period_seconds=0)
    finally:
        resources.delete_device_taint_rule(rule)


def test_a_taint_waits_for_the_gpu_reset_the_hardware_confirms_then_lifts(
    api_client: Any, local_cluster: ClusterUnderTest, kubelet_plugin: Plugin, namespace: str
) -> None:
    """An XID whose recovery action (NVML field 230, the mock's) reads GPU_RESET, under a
    quiet window of two seconds: the taint is raised to NoExecute (a reset wants the GPU
    idle) and the controller-manager evicts the pod; past the window the taint stays, the
    hardware has not confirmed, and a pod waiting for that GPU stays pending. Once the GPU
    is reset (field 230 reads NONE, the GPU validates) the plugin lifts the taint by itself,
    no admin involved, and the waiting pod gets the GPU."""
    core = core_api(api_client)
    kubelet_plugin.restart_with_recovery_window(local_cluster, RECOVERY_WINDOW_S)
    try:
        with _no_taints_left(api_client, local_cluster, kubelet_plugin):
            h100 = _pod_holding_the_h100(api_client, local_cluster, kubelet_plugin, namespace)
            write_fault(
                _faults_dir(local_cluster),
                "xid",
                gpu=h100.device_name,
                xid=POLICY_XID,
                recoveryAction="GPU_RESET",
            )

            def no_execute() -> dict[str, Any] | None:
                taints = _health_taints(api_client, local_cluster).get(h100.device_name) or []
                return next(
                    (t for t in taints if t["key"] == XID_TAINT and t["effect"] == "NoExecute"),
                    None,
                )

            before = wait_for(
                "the XID taint raised to NoExecute for the GPU reset",
                no_execute,
                cluster=local_cluster,
                context=kubelet_plugin.log_tail,
            )
            _wait_evicted(api_client, local_cluster, namespace, "holds")
            core.create_namespaced_pod(
                namespace, pod_with_claim("waits", SHOW_DEVICES, template="the-h100")
            )
            _wait_unschedulable(api_client, local_cluster, namespace, "waits")
            # Well past the quiet window: only the recovery action keeps the taint now.
            time.sleep(3 * RECOVERY_WINDOW_S)
            assert no_execute() == before, _health_taints(api_client, local_cluster)
            assert pod_phase(api_client, namespace, "waits") == "Pending"

            write_fault(_faults_dir(local_cluster), "reset", gpu=h100.device_name)
            wait_for(
                "the plugin to lift the taint once the GPU reads NONE and validates",
                lambda: not _health_taints(api_client, local_cluster),
                cluster=local_cluster,
                context=kubelet_plugin.log_tail,
            )
            assert "recovery action NONE and the GPU validates" in kubelet_plugin.log_tail(400)
            _run_until_running(api_client, local_cluster, kubelet_plugin, namespace, "waits")
            assert _allocated_device(api_client, namespace, "waits") == h100.device_name
            core.delete_collection_namespaced_pod(namespace, grace_period_seconds=0)
    finally:
        kubelet_plugin.restart_with_recovery_window(local_cluster, HEALTH_RECOVERY_S)

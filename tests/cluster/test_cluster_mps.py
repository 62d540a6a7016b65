"""Two pods sharing one mock GPU through MPS, on the real kubelet and containerd.

``dra-driver kubelet-plugin`` runs with ``--shared-gpus`` and the fake
``nvidia-cuda-mps-control`` (tests/fakes/mps_control.py) in a driver root of this
module's own: the plugin finds the binary there as it finds the real one under the
host's driver root, and runs it. Two pods, each with a share of the H100
(``consumedCapacity``), get one daemon for the GPU: one process, one pipe directory,
whose control pipe both containers see; each container gets its own limits in its
``CUDA_MPS_*`` env and the daemon the ceiling over both; the containers share the
daemon's shared memory directory at ``/dev/shm``. A plugin restart adopts the daemon
(same pid, same start time); a third pod whose container runs as another UID than the
GPU serves (recorded before the restart) stays Pending with the plugin's prepare error
as its Event, and adds nothing to the daemon; the first pod's deletion lowers the
ceiling; the last one's stops the daemon and removes its directory. A share whose
GpuConfig asks for more than the share holds is refused at prepare, naming the field,
with no daemon.

The plugin runs from the source tree as a process here, even where the session built
the driver's image: the daemon outlives a plugin process restarted in place, which is
what adoption is for; in a container it would go with the container
(docs/sharing.md). The module's plugin is stopped, and the kubelet's wipe of its
slices waited out, before the next module runs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_access import (
    ClusterUnderTest,
    core_api,
    generated_claim_name,
    is_gone,
    pod_phase,
    pod_report,
    read_json,
    resource_api,
    wait_for,
    wait_out_slice_wipe,
)
from test_cluster_kubelet_plugin import (
    DRIVER,
    PROFILE,
    RunningPlugin,
    _source_argv,
    log_sections,
)

from dra_driver.discovery.mock import MockBackend
from dra_driver.discovery.model import Gpu
from e2e.cluster import BUSYBOX_IMAGE
from kubelet_plugin.mps.daemon import process_start_time
from tests.fakes.mps_control import install_fake_mps_control, logged_commands, logged_starts

GPU_CONFIG: dict[str, Any] = {"apiVersion": "gpu.dra-driver.io/v1alpha1", "kind": "GpuConfig"}
MIB = 1024 * 1024
# Touches a file in /dev/shm, prints what the container sees between markers, then stays.
SHOW_MPS = [
    "sh",
    "-c",
    'touch "/dev/shm/from-$HOSTNAME"; '
    "echo '--- env'; env; "
    "echo '--- pipe'; ls -i \"$CUDA_MPS_PIPE_DIRECTORY\"; "
    "echo '--- log'; touch \"$CUDA_MPS_LOG_DIRECTORY/x\" 2>/dev/null && echo writable "
    "|| echo read-only; "
    "echo '--- shm'; ls /dev/shm; "
    "echo '--- end'; sleep 3600",
]


class MpsNode:
    """The module's plugin, its driver root (with the fake) and its MPS directory."""

    def __init__(self, plugin: RunningPlugin, driver_root: Path, mps_root: Path) -> None:
        self.plugin = plugin
        self.driver_root = driver_root
        self.mps_root = mps_root

    @property
    def h100(self) -> Gpu:
        return next(g for g in self.plugin.gpus if "H100" in g.product_name)

    def starts(self) -> list[str]:
        return logged_starts(self.driver_root, self.h100.uuid)

    def commands(self) -> list[str]:
        return logged_commands(self.driver_root, self.h100.uuid)

    def daemons(self) -> dict[int, str]:
        """Every running process started with a pipe directory under the MPS root: pid to
        its ``CUDA_MPS_PIPE_DIRECTORY``."""
        found: dict[int, str] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            for item in environ:
                name, _, value = item.decode(errors="replace").partition("=")
                ours = name == "CUDA_MPS_PIPE_DIRECTORY" and value.startswith(f"{self.mps_root}/")
                if ours and process_start_time(int(entry.name)) is not None:
                    found[int(entry.name)] = value
        return found


@pytest.fixture(scope="module")
def mps_node(local_cluster: ClusterUnderTest, device_classes: list[str]) -> Iterator[MpsNode]:
    cluster = local_cluster.local
    if cluster is None:
        pytest.skip("runs the kubelet plugin next to the local cluster's kubelet")
    driver_root = cluster.directory / "mps-driver-root"
    shutil.rmtree(driver_root, ignore_errors=True)
    install_fake_mps_control(driver_root)
    argv = [
        f"--driver-root={driver_root}" if arg.startswith("--driver-root=") else arg
        for arg in _source_argv(local_cluster)
    ]
    plugin = RunningPlugin(
        [*argv, "--shared-gpus"],
        cluster.logs_dir / "kubelet-plugin-mps.log",
        MockBackend(cluster.node_name, PROFILE).discover().gpus,
    )
    node = MpsNode(plugin, driver_root, cluster.plugins_dir / DRIVER / "mps")
    try:
        plugin.start(local_cluster)
        yield node
    finally:
        code = plugin.stop()
        stopped_at = time.monotonic()
        # A test that failed half-way may leave a daemon: none outlives the module.
        for pid in node.daemons():
            os.kill(pid, signal.SIGKILL)
        wait_out_slice_wipe(local_cluster, DRIVER, stopped_at)
        shutil.rmtree(cluster.directory / "mock-dev", ignore_errors=True)
        shutil.rmtree(driver_root, ignore_errors=True)
    assert code == 0, f"the plugin exited {code} on SIGTERM\n{plugin.log_tail()}"


def _share_template(
    name: str, gpu: Gpu, *, compute: int, memory: str, config: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A claim template with one request for a share of ``gpu``, and a GpuConfig if given."""
    request = {
        "name": "gpu",
        "exactly": {
            "deviceClassName": "gpu.dra-driver.io",
            "selectors": [
                {"cel": {"expression": f'device.attributes["{DRIVER}"].uuid == "{gpu.uuid}"'}}
            ],
            "capacity": {"requests": {"compute": str(compute), "memory": memory}},
        },
    }
    spec: dict[str, Any] = {"devices": {"requests": [request]}}
    if config is not None:
        spec["devices"]["config"] = [
            {"requests": ["gpu"], "opaque": {"driver": DRIVER, "parameters": config}}
        ]
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": name},
        "spec": {"spec": spec},
    }


def _pod(name: str, template: str, *, run_as: int | None = None) -> dict[str, Any]:
    """The pod runs as UID 0 (``spec.securityContext``); ``run_as``: its container's own."""
    container_context = {} if run_as is None else {"securityContext": {"runAsUser": run_as}}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            # MPS runs one server per UID at a time: clients that share a GPU run as one.
            "securityContext": {"runAsUser": 0},
            "resourceClaims": [{"name": "gpu", "resourceClaimTemplateName": template}],
            "containers": [
                {
                    "name": "main",
                    "image": BUSYBOX_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": SHOW_MPS,
                    "resources": {"claims": [{"name": "gpu"}]},
                    **container_context,
                }
            ],
        },
    }


def _run(
    local_cluster: ClusterUnderTest, node: MpsNode, namespace: str, name: str
) -> dict[str, list[str]]:
    """Create the pod, wait until it runs and has printed what it sees; its sections."""
    api_client = local_cluster.api_client
    core = core_api(api_client)
    core.create_namespaced_pod(namespace, _pod(name, name))

    def report() -> str:
        return pod_report(api_client, namespace, name) + "\n" + node.plugin.log_tail()

    wait_for(
        f"pod {name} to run",
        lambda: pod_phase(api_client, namespace, name) != "Pending",
        cluster=local_cluster,
        timeout_s=120,
        context=report,
    )
    assert pod_phase(api_client, namespace, name) == "Running", report()
    log: str = wait_for(
        f"pod {name} to print what it sees",
        lambda: (
            (text := core.read_namespaced_pod_log(name, namespace)) and "--- end" in text and text
        ),
        cluster=local_cluster,
        context=report,
    )
    return log_sections(log)


def _env(seen: dict[str, list[str]]) -> dict[str, str]:
    return dict(line.partition("=")[::2] for line in seen["env"] if "=" in line)


def _claim(local_cluster: ClusterUnderTest, namespace: str, pod: str) -> tuple[str, str]:
    """The pod's generated claim: its name and UID."""
    api_client = local_cluster.api_client
    name = wait_for(
        f"the claim of pod {pod}",
        lambda: generated_claim_name(api_client, namespace, pod),
        cluster=local_cluster,
    )
    claim = read_json(resource_api(api_client).read_namespaced_resource_claim, name, namespace)
    return str(name), str(claim["metadata"]["uid"])


def _delete_and_wait_unprepared(
    local_cluster: ClusterUnderTest, node: MpsNode, namespace: str, pod: str, claim: tuple[str, str]
) -> None:
    """Delete the pod; wait until its claim (name, UID) is gone and the plugin has
    unprepared it."""
    name, uid = claim
    api_client = local_cluster.api_client
    core_api(api_client).delete_namespaced_pod(pod, namespace, grace_period_seconds=0)
    resources = resource_api(api_client)
    wait_for(
        f"pod {pod}'s claim to be unprepared and deleted",
        lambda: (
            is_gone(lambda: resources.read_namespaced_resource_claim(name, namespace))
            and f"unprepared claim {namespace}/{name} (UID {uid})" in node.plugin.log_text()
        ),
        cluster=local_cluster,
        timeout_s=90,
        context=node.plugin.log_tail,
    )


def _event_message(local_cluster: ClusterUnderTest, namespace: str, pod: str, text: str) -> str:
    """Wait for an Event on ``pod`` whose message holds ``text``; its message."""
    api_client = local_cluster.api_client
    core = core_api(api_client)

    def found() -> str:
        events = core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={pod}")
        return next((e.message for e in events.items if text in (e.message or "")), "")

    message: str = wait_for(
        f"the kubelet to report the plugin's prepare error on pod {pod}",
        found,
        cluster=local_cluster,
        timeout_s=90,
        context=lambda: pod_report(api_client, namespace, pod),
    )
    return message


def _ceiling(percentage: int, mebibytes: int) -> list[str]:
    """The commands that set a ceiling, with no MPS server running (mock GPUs)."""
    return [
        f"set_default_active_thread_percentage {percentage}",
        f"set_default_device_pinned_mem_limit 0 {mebibytes}M",
        "get_server_list",
    ]


def test_two_shares_use_one_daemon_that_survives_a_plugin_restart_and_stops_with_the_last(
    local_cluster: ClusterUnderTest, mps_node: MpsNode, namespace: str
) -> None:
    assert local_cluster.local is not None
    cdi_dir = local_cluster.local.cdi_dir
    gpu = mps_node.h100
    resources = resource_api(local_cluster.api_client)
    # "a": its share's limits. "b": a GpuConfig stricter than its share's compute wins.
    resources.create_namespaced_resource_claim_template(
        namespace, _share_template("a", gpu, compute=30, memory="10Gi")
    )
    config = {
        **GPU_CONFIG,
        "sharing": {"strategy": "MPS", "mpsConfig": {"defaultActiveThreadPercentage": 40}},
    }
    resources.create_namespaced_resource_claim_template(
        namespace, _share_template("b", gpu, compute=50, memory="20Gi", config=config)
    )
    seen = {"a": _run(local_cluster, mps_node, namespace, "a")}
    seen["b"] = _run(local_cluster, mps_node, namespace, "b")
    claims = {pod: _claim(local_cluster, namespace, pod) for pod in ("a", "b")}
    for pod, (claim, _) in claims.items():
        stored = read_json(resources.read_namespaced_resource_claim, claim, namespace)
        (result,) = stored["status"]["allocation"]["devices"]["results"]
        assert result["device"] == gpu.device_name and result.get("shareID"), (pod, result)

    # One daemon for the GPU: one process, one pipe directory, started once.
    base = mps_node.mps_root / gpu.uuid
    daemons = mps_node.daemons()
    assert list(daemons.values()) == [str(base / "pipe")], daemons
    (pid,) = daemons
    started = process_start_time(pid)
    (start,) = mps_node.starts()
    assert start.startswith(f"pid={pid} visible={gpu.uuid} pipe={base / 'pipe'} ")
    # The daemon-wide defaults: the ceiling over both claims (b's config: 40, b's 20Gi).
    assert mps_node.commands() == [*_ceiling(30, 10 * 1024), *_ceiling(40, 20 * 1024)]

    control = os.stat(base / "pipe" / "control")
    for pod, wanted_percentage, wanted_memory in (("a", 30, 10 * 1024), ("b", 40, 20 * 1024)):
        env = _env(seen[pod])
        # Each container's own limits, in its env.
        assert env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == str(wanted_percentage), env
        assert env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] == f"{gpu.uuid}={wanted_memory}M", env
        # The daemon's directories, mounted where the env says.
        assert env["CUDA_MPS_PIPE_DIRECTORY"] == f"/run/dra-driver/mps/{gpu.uuid}/pipe", env
        assert env["CUDA_MPS_LOG_DIRECTORY"] == f"/run/dra-driver/mps/{gpu.uuid}/log", env
        # The very control pipe the daemon listens on (same inode), and a log it cannot fill.
        assert f"{control.st_ino} control" in [line.strip() for line in seen[pod]["pipe"]], seen
        assert seen[pod]["log"] == ["read-only"], seen[pod]
        spec = json.loads((cdi_dir / f"{DRIVER}-{claims[pod][1]}.json").read_text())
        mounts = {m["containerPath"]: m["hostPath"] for m in spec["containerEdits"]["mounts"]}
        assert mounts["/dev/shm"] == str(base / "shm"), mounts
    # One /dev/shm for both: b sees what a wrote there, and so does the host directory.
    assert "from-a" in seen["b"]["shm"], seen["b"]
    assert {"from-a", "from-b"} <= {p.name for p in (base / "shm").iterdir()}

    # A plugin restart adopts the daemon: same process, not started again, pods untouched.
    adopted = "adopted the running MPS control daemon"
    adoptions = mps_node.plugin.log_text().count(adopted)
    assert mps_node.plugin.stop() == 0, mps_node.plugin.log_tail()
    assert process_start_time(pid) == started
    mps_node.plugin.start(local_cluster)
    assert mps_node.plugin.log_text().count(adopted) == adoptions + 1
    assert mps_node.daemons() == daemons
    assert process_start_time(pid) == started
    assert len(mps_node.starts()) == 1
    core = core_api(local_cluster.api_client)
    for pod in ("a", "b"):
        status = read_json(core.read_namespaced_pod, pod, namespace)["status"]
        assert status["phase"] == "Running"
        assert status["containerStatuses"][0]["restartCount"] == 0

    # c's container runs as UID 1000; the GPU serves UID 0 (recorded before the restart):
    # refused at prepare, naming the pod, the container, the field, the UID and the fix.
    commands = mps_node.commands()
    resources.create_namespaced_resource_claim_template(
        namespace, _share_template("c", gpu, compute=10, memory="1Gi")
    )
    core.create_namespaced_pod(namespace, _pod("c", "c", run_as=1000))
    message = _event_message(local_cluster, namespace, "c", "runs as UID 1000")
    assert (
        f"container 'main' of pod {namespace}/c runs as UID 1000 "
        f"(spec.containers[0].securityContext.runAsUser), but MPS GPU {gpu.uuid} serves UID 0 "
        "for 2 other claim(s)" in message
    ), message
    assert "set spec.containers[0].securityContext.runAsUser to 0, or ask for another GPU" in (
        message
    ), message
    assert pod_phase(local_cluster.api_client, namespace, "c") == "Pending"
    c_claim = _claim(local_cluster, namespace, "c")
    assert not (cdi_dir / f"{DRIVER}-{c_claim[1]}.json").exists()
    assert json.loads((base / "user.json").read_text()) == {"version": 1, "runAsUser": 0}
    # Nothing added to the daemon: no new ceiling, not started again.
    assert mps_node.commands() == commands
    assert mps_node.daemons() == daemons and len(mps_node.starts()) == 1
    core.delete_namespaced_pod("c", namespace, grace_period_seconds=0)
    wait_for(
        "pod c's claim to be deleted",
        lambda: is_gone(lambda: resources.read_namespaced_resource_claim(c_claim[0], namespace)),
        cluster=local_cluster,
        timeout_s=90,
    )

    # b goes: the daemon stays for a, with a's limits as the ceiling.
    _delete_and_wait_unprepared(local_cluster, mps_node, namespace, "b", claims["b"])
    assert process_start_time(pid) == started
    assert mps_node.commands()[-3:] == _ceiling(30, 10 * 1024)

    # a goes: the daemon is told to quit, ends, and its directory goes.
    _delete_and_wait_unprepared(local_cluster, mps_node, namespace, "a", claims["a"])
    assert mps_node.commands()[-1] == "quit"
    assert process_start_time(pid) is None
    assert mps_node.daemons() == {}
    assert not base.exists()
    assert len(mps_node.starts()) == 1


def test_a_share_asking_more_than_it_holds_is_refused_at_prepare_without_a_daemon(
    local_cluster: ClusterUnderTest, mps_node: MpsNode, namespace: str
) -> None:
    api_client = local_cluster.api_client
    gpu = mps_node.h100
    before = len(mps_node.starts())
    config = {
        **GPU_CONFIG,
        "sharing": {"strategy": "MPS", "mpsConfig": {"defaultActiveThreadPercentage": 60}},
    }
    resource_api(api_client).create_namespaced_resource_claim_template(
        namespace, _share_template("greedy", gpu, compute=20, memory="1Gi", config=config)
    )
    core_api(api_client).create_namespaced_pod(namespace, _pod("greedy", "greedy"))
    message = _event_message(local_cluster, namespace, "greedy", "defaultActiveThreadPercentage")
    assert (
        ".opaque.parameters.sharing.mpsConfig.defaultActiveThreadPercentage: 60 is more than "
        f"the 20 compute device {gpu.device_name} share " in message
    ), message
    assert pod_phase(api_client, namespace, "greedy") == "Pending"
    assert len(mps_node.starts()) == before
    assert mps_node.daemons() == {}

"""Fixtures of the cluster tests (tier 3): a real Kubernetes cluster for the whole session.

``local_cluster`` builds or reuses the binaries with e2e/cluster/build.sh (a
cold build compiles Kubernetes: minutes, with progress printed), starts a
LocalCluster (etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
containerd and a real kubelet) once per session and tears it down at the end,
whatever the tests did. With ``DRA_DRIVER_E2E_KUBECONFIG`` set, the tests run
against that cluster instead (a user's own or a kind cluster); tests that need
the node's directories (the kubelet plugin's sockets, containerd's CDI
directory) are then skipped. ``DRA_DRIVER_E2E_NODE`` picks its node (default:
the first Ready one). ``DRA_DRIVER_E2E_KEEP=1`` keeps the local cluster's
directory (logs, certificates, state) after the teardown, until the next run.

The node's kubelet plugin runs from the driver's image when the kubelet tier
runs: deploy/Dockerfile built offline by e2e/cluster/driver_image.py (cold: a
few minutes; cached by a hash of its inputs), imported into the node's
containerd, and run as the chart's DaemonSet. It runs from the source tree, as
a process, against an external cluster (whose nodes cannot load this
machine's images), where podman cannot build it, when no test of the session
runs the plugin, or with ``DRA_DRIVER_E2E_DRIVER=source``.

Every test in this directory is marked ``cluster``. The session's first lines
say which tier runs (a real kubelet, or an external cluster) and why, and where
the driver comes from ("driver: image <ref>" or "driver: source tree (<why>)").
"""

from __future__ import annotations

import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

# The harness lives in the repository, not in the installed distribution; `python -m
# pytest` from the root finds it anyway, plain `pytest` does not.
_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from cluster_access import (  # noqa: E402
    ClusterUnderTest,
    PublishedPool,
    apply_device_class,
    core_api,
    deploy_device_classes,
    is_gone,
    new_api_client,
    resource_api,
    wait_for,
)

from agent_kit.kube import KubernetesClient  # noqa: E402
from dra_driver.discovery.mock import MockBackend  # noqa: E402
from e2e.cluster import ClusterError, LocalCluster  # noqa: E402
from e2e.cluster.driver_image import (  # noqa: E402
    DriverImage,
    build_image,
    import_image,
    podman_unavailable,
)
from kubelet_plugin.publisher import SlicePublisher  # noqa: E402
from kubelet_plugin.slice_client import SliceClient  # noqa: E402

EXTERNAL_KUBECONFIG_ENV = "DRA_DRIVER_E2E_KUBECONFIG"
EXTERNAL_NODE_ENV = "DRA_DRIVER_E2E_NODE"
KEEP_ENV = "DRA_DRIVER_E2E_KEEP"
DRIVER_ENV = "DRA_DRIVER_E2E_DRIVER"
POOL_PROFILE = "1xH100-80GB,1xL4"


# The plugin's module runs after every other module here: when the plugin stops, the
# kubelet deletes the driver's slices on the node 30 s later (its wiping delay for a
# plugin that does not come back), which would remove what a later module publishes.
LAST_MODULE = "test_cluster_kubelet_plugin.py"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark this directory's tests ``cluster`` and run them at the end of the session.

    Last, so that the cluster (a session fixture, torn down when the session
    ends) is not left idling while the other tiers run, and so that their
    failures are reported first.
    """
    here = Path(__file__).parent
    ours = [item for item in items if here in item.path.parents]
    for item in ours:
        item.add_marker(pytest.mark.cluster)
    last = [item for item in ours if item.path.name == LAST_MODULE]
    first = [item for item in ours if item.path.name != LAST_MODULE]
    others = [item for item in items if here not in item.path.parents]
    items[:] = others + first + last


def _printer(config: pytest.Config) -> Callable[[str], None]:
    """Print a line live, past pytest's output capture (a cold build takes minutes)."""
    capture = config.pluginmanager.getplugin("capturemanager")
    reporter = config.pluginmanager.getplugin("terminalreporter")

    def say(line: str) -> None:
        if capture is None or reporter is None:
            print(line, file=sys.stderr, flush=True)
            return
        with capture.global_and_fixture_disabled():
            reporter.ensure_newline()
            reporter.write_line(line)

    return say


def _first_ready_node(api_client: Any) -> str:
    for node in core_api(api_client).list_node().items:
        for condition in node.status.conditions or []:
            if condition.type == "Ready" and condition.status == "True":
                return str(node.metadata.name)
    raise ClusterError(f"{EXTERNAL_KUBECONFIG_ENV}: the cluster has no Ready node")


def _external_cluster(kubeconfig: Path, say: Callable[[str], None]) -> ClusterUnderTest:
    api_client = new_api_client(str(kubeconfig))
    node = os.environ.get(EXTERNAL_NODE_ENV) or _first_ready_node(api_client)
    say(
        f"cluster tier: external cluster from {EXTERNAL_KUBECONFIG_ENV}={kubeconfig}, "
        f"node {node}; tests that need the node's directories are skipped"
    )
    return ClusterUnderTest(kubeconfig=kubeconfig, node_name=node, api_client=api_client)


def _driver_image(
    session: pytest.Session, say: Callable[[str], None]
) -> tuple[DriverImage | None, str]:
    """The image the node's kubelet plugin will run from, built or reused; or None and why
    the plugin runs from the source tree instead."""
    choice = os.environ.get(DRIVER_ENV, "image")
    if choice not in ("image", "source"):
        raise pytest.UsageError(f"{DRIVER_ENV}={choice}: use image or source")
    if choice == "source":
        return None, f"{DRIVER_ENV}=source"
    if not any(item.path.name == LAST_MODULE for item in session.items):
        return None, f"no test of this session runs the node's kubelet plugin ({LAST_MODULE})"
    if why := podman_unavailable():
        return None, why
    say("building or reusing the driver image from deploy/Dockerfile (cold: minutes)")
    return build_image(progress=say), ""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    # SIGTERM (a CI job cancelled) unwinds like Ctrl-C, so the cluster is torn down.
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def local_cluster(
    pytestconfig: pytest.Config, request: pytest.FixtureRequest
) -> Iterator[ClusterUnderTest]:
    """The cluster under test, for the whole session (see the module docstring)."""
    say = _printer(pytestconfig)
    external = os.environ.get(EXTERNAL_KUBECONFIG_ENV)
    if external:
        cluster_under_test = _external_cluster(Path(external), say)
        say(
            "driver: source tree (an external cluster's nodes cannot load this machine's "
            "images; the tests that run the node's kubelet plugin are skipped)"
        )
        yield cluster_under_test
        return
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip(
            "the local cluster needs Linux and root (cgroups, mounts, a bridge); set "
            f"{EXTERNAL_KUBECONFIG_ENV} to run these tests against a cluster of your own"
        )
    image, why_not = _driver_image(request.session, say)
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    cluster = LocalCluster(progress=say)
    started = time.monotonic()
    try:
        cluster.up()
        say(
            f"cluster tier: real kubelet ({cluster.bin_dir / 'kubelet'}, node "
            f"{cluster.node_name} Ready): the kubelet runs on this machine with cgroupfs, "
            f"cgroup v1 allowed and containerd 1.7 with CDI; no stand-in needed"
        )
        if image is None:
            say(f"driver: source tree ({why_not})")
        else:
            importing = time.monotonic()
            import_image(
                image,
                bin_dir=cluster.bin_dir,
                containerd_socket=cluster.node_paths.containerd_socket,
            )
            how = "reused from the cache" if image.cached else "built"
            say(
                f"driver: image {image.reference} (deploy/Dockerfile at {image.revision[:12]}, "
                f"{how} in {image.seconds:.2f} s, {image.archive}; imported into the node's "
                f"containerd in {time.monotonic() - importing:.1f} s): the node's kubelet "
                "plugin runs from it as the chart's DaemonSet"
            )
        yield ClusterUnderTest(
            kubeconfig=cluster.kubeconfig,
            node_name=cluster.node_name,
            api_client=new_api_client(str(cluster.kubeconfig)),
            local=cluster,
            driver_image="" if image is None else image.reference,
        )
    finally:
        keep = os.environ.get(KEEP_ENV) == "1"
        try:
            cluster.down(keep_directory=keep)
            if keep:
                say(f"{KEEP_ENV}=1: the cluster's logs and state are kept in {cluster.directory}")
        finally:
            signal.signal(signal.SIGTERM, previous)
            say(f"cluster tests: {time.monotonic() - started:.1f} s with start-up and teardown")


@pytest.fixture(scope="session")
def api_client(local_cluster: ClusterUnderTest) -> Any:
    """A ``kubernetes.client.ApiClient`` with the admin's credentials."""
    return local_cluster.api_client


@pytest.fixture(scope="module")
def published_pool(local_cluster: ClusterUnderTest) -> Iterator[PublishedPool]:
    """One H100 (partitionable: MIG devices on shared counters) and one L4 on the node.

    Published once per module with ``SlicePublisher`` and ``SliceClient``;
    the slices are deleted again at the end of the module, so that a kubelet
    plugin started by a later module owns the pool alone.
    """

    node = core_api(local_cluster.api_client).read_node(local_cluster.node_name)
    inventory = MockBackend(local_cluster.node_name, POOL_PROFILE).discover()
    slice_client = SliceClient(KubernetesClient(local_cluster.api_client))
    publisher = SlicePublisher(
        slice_client, node_name=local_cluster.node_name, node_uid=node.metadata.uid
    )
    publisher.publish(inventory)
    try:
        yield PublishedPool(publisher, inventory, node.metadata.uid)
    finally:
        listing = slice_client.list_slices(
            node_name=local_cluster.node_name, driver_name=publisher.driver_name
        )
        for slice_ in listing.items:
            slice_client.delete_slice(slice_.metadata.name or "")


@pytest.fixture(scope="session")
def device_classes(local_cluster: ClusterUnderTest) -> list[str]:
    """deploy/'s DeviceClasses, applied for the session; their names."""

    api = resource_api(local_cluster.api_client)
    classes = deploy_device_classes()
    for _, doc in classes.values():
        apply_device_class(api, doc)
    return sorted(classes)


@pytest.fixture
def namespace(local_cluster: ClusterUnderTest) -> Iterator[str]:
    """A fresh namespace with its default ServiceAccount; deleted (and waited for) after."""

    core = core_api(local_cluster.api_client)
    name = f"t-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    wait_for(
        f"ServiceAccount {name}/default",
        lambda: any(
            sa.metadata.name == "default" for sa in core.list_namespaced_service_account(name).items
        ),
        cluster=local_cluster,
        timeout_s=60,
    )
    try:
        yield name
    finally:
        core.delete_namespace(name, grace_period_seconds=0)

        wait_for(
            f"namespace {name} deleted",
            lambda: is_gone(lambda: core.read_namespace(name)),
            cluster=local_cluster,
            timeout_s=120,
        )

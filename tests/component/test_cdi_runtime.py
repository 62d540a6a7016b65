"""A real container runtime consumes the CDI specs the driver writes.

The mock backend's GPUs, the GpuDriver preparing a claim for gpu-1 with time
slicing, and a container started with the returned CDI device IDs: it must
see /dev/nvidia1 and the control node, the claim's environment and the driver
files; gpu-0, not allocated, must stay invisible. After unprepare the same ID
no longer resolves. Podman 4.3 (Debian 12) reads specs from /var/run/cdi;
containerd 1.7 is driven through the CRI field the kubelet uses,
``ContainerConfig.CDI_devices``.

Fixtures live in :mod:`runtime_fixtures`: set-up (podman installed on first
use, a busybox image without a registry) and the guarantee that nothing is
left running, mounted or in /var/run/cdi afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from driver_fixtures import validate_cdi_file
from runtime_fixtures import (
    PODMAN_CDI_ROOT,
    ContainerdRuntime,
    ContainerOutput,
    Podman,
    containerd_session,
    owned_cdi_files,
    parse_char_devices,
    parse_env,
    podman_session,
    replace_with_char_devices,
)

from api.semver import Semver
from dra_driver.cdi import MAX_CDI_VERSION, spec_file_name
from dra_driver.discovery.mock import MockBackend
from kubelet_plugin.cdi_writer import CdiWriter, scan_host_files
from kubelet_plugin.checkpoint_store import CheckpointStore
from kubelet_plugin.devnodes import create_device_nodes
from kubelet_plugin.driver import GpuDriver
from kubelet_plugin.node_driver import ClaimRef
from tests.fakes.claim_source import FakeClaimSource

pytestmark = pytest.mark.component

NODE = "node-cdi"
PROFILE = "2xH100-80GB"
#: The newest cdiVersion podman 4.3's CDI library loads (0.6.0 and later are "unresolvable").
PODMAN_MAX_CDI_VERSION = Semver.parse("0.5.0")
NVIDIA_SMI = b"#!/bin/sh\necho fake nvidia-smi\n"
SECTION = "----"
# The listing and env the brief asks for, then proof that the node is usable and the
# driver's binary is mounted.
PROBE = (
    f"ls -l /dev; echo {SECTION}; env; echo {SECTION}; "
    "echo probe > /dev/nvidia1 && echo nvidia1-writable; cat /usr/bin/nvidia-smi"
)


@pytest.fixture(scope="session")
def run_token() -> str:
    """Unique per test run: names the driver, its spec files and the cgroups of its containers."""
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def podman(pytestconfig: pytest.Config, run_token: str) -> Iterator[Podman]:
    with podman_session(pytestconfig, run_token) as runtime:
        yield runtime


@pytest.fixture(scope="session")
def containerd(pytestconfig: pytest.Config, run_token: str) -> Iterator[ContainerdRuntime]:
    with containerd_session(pytestconfig, run_token) as runtime:
        yield runtime


@dataclass
class PreparedClaim:
    driver: GpuDriver
    ref: ClaimRef
    cdi_ids: tuple[str, ...]
    spec_path: Path
    gpu_uuid: str
    null_device: tuple[int, int]


def prepare_gpu1_claim(root: Path, cdi_root: Path, driver_name: str) -> PreparedClaim:
    """Mock node with two H100s, fake device nodes and driver files under ``root``;
    a started GpuDriver writing specs to ``cdi_root``; a time-sliced claim for gpu-1 prepared."""
    inventory = MockBackend(NODE, PROFILE).discover()
    dev_root, driver_root = root / "dev-root", root / "driver-root"
    nodes = create_device_nodes(dev_root, inventory)
    null_device = replace_with_char_devices(nodes)
    smi = driver_root / "usr/bin/nvidia-smi"
    smi.parent.mkdir(parents=True)
    smi.write_bytes(NVIDIA_SMI)
    smi.chmod(0o755)

    uid = str(uuid.uuid4())
    claim: dict[str, Any] = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": "gpu-claim", "namespace": "default", "uid": uid},
        "spec": {"devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": "gpu"}}]}},
        "status": {
            "allocation": {
                "devices": {
                    "results": [
                        {"request": "gpu", "driver": driver_name, "pool": NODE, "device": "gpu-1"}
                    ],
                    "config": [
                        {
                            "source": "FromClaim",
                            "opaque": {
                                "driver": driver_name,
                                "parameters": {
                                    "apiVersion": "gpu.dra-driver.io/v1alpha1",
                                    "kind": "GpuConfig",
                                    "sharing": {
                                        "strategy": "TimeSlicing",
                                        "timeSlicingConfig": {"interval": "Long"},
                                    },
                                },
                            },
                        }
                    ],
                }
            }
        },
    }
    driver = GpuDriver(
        driver_name=driver_name,
        inventory=inventory,
        claim_source=FakeClaimSource([claim]),
        checkpoints=CheckpointStore(root / "state" / "checkpoint.json"),
        cdi=CdiWriter(cdi_root, driver_name),
        host=scan_host_files(dev_root, driver_root, None),
        boot_id="5b1f1d0e-0000-4000-8000-000000000001",
    )
    driver.start()
    ref = ClaimRef(namespace="default", name="gpu-claim", uid=uid)
    result = driver.prepare([ref])[uid]
    assert result.error is None, result.error
    cdi_ids = tuple(i for device in result.devices for i in device.cdi_device_ids)
    return PreparedClaim(
        driver=driver,
        ref=ref,
        cdi_ids=cdi_ids,
        spec_path=cdi_root / spec_file_name(driver_name, uid),
        gpu_uuid=inventory.gpus[1].uuid,
        null_device=null_device,
    )


def assert_container_saw_gpu1(output: ContainerOutput, claim: PreparedClaim) -> None:
    assert output.exit_code == 0, f"container failed ({output.exit_code}): {output.stderr}"
    listing, env_text, rest = output.stdout.split(SECTION + "\n")
    devices = parse_char_devices(listing)
    assert devices.get("nvidia1") == claim.null_device, listing
    assert devices.get("nvidiactl") == claim.null_device, listing
    assert "nvidia0" not in devices, "gpu-0 is not allocated to this claim"
    env = parse_env(env_text)
    assert env.get("NVIDIA_VISIBLE_DEVICES") == "void"
    assert env.get("DRA_GPU_1_UUID") == claim.gpu_uuid
    assert env.get("DRA_GPU_1_SHARING_STRATEGY") == "TimeSlicing"
    assert env.get("DRA_GPU_1_TIME_SLICE_INTERVAL") == "Long"
    assert rest.splitlines() == ["nvidia1-writable", *NVIDIA_SMI.decode().splitlines()]


def test_podman_injects_the_prepared_claims_devices_and_forgets_them_after_unprepare(
    podman: Podman, run_token: str, tmp_path: Path
) -> None:
    driver_name = f"t{run_token}.gpu.dra-driver.io"
    with owned_cdi_files(PODMAN_CDI_ROOT, driver_name) as cdi_root:
        claim = prepare_gpu1_claim(tmp_path, cdi_root, driver_name)
        assert claim.cdi_ids == (f"{driver_name}/gpu={claim.ref.uid}-gpu-1",)
        spec = validate_cdi_file(claim.spec_path)
        assert Semver.parse(spec["cdiVersion"]) <= PODMAN_MAX_CDI_VERSION, spec["cdiVersion"]

        assert_container_saw_gpu1(podman.run_container(PROBE, cdi_devices=claim.cdi_ids), claim)
        without = podman.run_container("ls /dev; env")
        assert without.exit_code == 0, without.stderr
        assert "nvidia" not in without.stdout, "no CDI device asked for, none injected"

        assert claim.driver.unprepare([claim.ref]) == {claim.ref.uid: None}
        assert not claim.spec_path.exists()
        gone = podman.run_container(PROBE, cdi_devices=claim.cdi_ids)
        assert gone.exit_code != 0
        assert f"unresolvable CDI devices {claim.cdi_ids[0]}" in gone.stderr, gone.stderr


def test_containerd_cri_injects_the_cdi_devices_the_kubelet_passes(
    containerd: ContainerdRuntime, run_token: str, tmp_path: Path
) -> None:
    driver_name = f"t{run_token}.gpu.dra-driver.io"
    # containerd started before the spec existed: it must pick the new file up by itself.
    claim = prepare_gpu1_claim(tmp_path, containerd.cdi_root, driver_name)
    spec = validate_cdi_file(claim.spec_path)
    assert spec["kind"] == f"{driver_name}/gpu"
    # containerd 1.7 loads up to 0.8.0 (1.0.0 and later are rejected).
    assert Semver.parse(spec["cdiVersion"]) <= Semver.parse(MAX_CDI_VERSION)

    assert_container_saw_gpu1(
        containerd.run_container("with-gpu", PROBE, cdi_devices=claim.cdi_ids), claim
    )

    assert claim.driver.unprepare([claim.ref]) == {claim.ref.uid: None}
    gone = containerd.run_container("after-unprepare", PROBE, cdi_devices=claim.cdi_ids)
    assert gone.exit_code == -1
    assert f"unresolvable CDI devices {claim.cdi_ids[0]}" in gone.stderr, gone.stderr

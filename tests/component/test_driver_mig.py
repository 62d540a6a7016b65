"""GpuDriver with MIG devices on real files: dynamic MIG created at prepare and destroyed
at unprepare, static MIG prepared as it is, crashes in between undone at start-up."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from api.errors import PrepareError
from dra_driver.discovery.mock import MockBackend, MockMigManager
from dra_driver.discovery.model import Gpu, MigDevice, MigManager, MigProfile
from kubelet_plugin.cdi_writer import CdiWriter, scan_host_files
from kubelet_plugin.checkpoint_store import CheckpointStore
from kubelet_plugin.devnodes import DevNodeMigManager, create_device_nodes
from kubelet_plugin.driver import FaultPoint, GpuDriver
from kubelet_plugin.node_driver import ClaimRef
from tests.component.driver_fixtures import (
    BOOT_ID,
    DRIVER,
    NODE,
    cdi_root,
    checkpoint_path,
    checkpoint_states,
    claim,
    claim_uid,
    gpu_config_entry,
    spec_path,
    validate_cdi_file,
)
from tests.fakes.claim_source import FakeClaimSource

# GPU 0 partitionable (MIG mode off), GPU 1 in MIG mode with a static layout.
PROFILE = "A100-40GB,A100-40GB:mig=3g.20gb/2x2g.10gb"
MIG_1G = "gpu-0-mig-1g5gb-19-0"  # 1g.5gb, profile 19, memory slice 0
MIG_3G = "gpu-0-mig-3g20gb-9-4"  # 3g.20gb, profile 9, memory slices 4-7
OVERLAPS_3G = "gpu-0-mig-2g10gb-14-4"  # 2g.10gb, profile 14, memory slices 4-5
STATIC = "gpu-1-mig-3g20gb-9-4"


class _Crash(BaseException):
    """Stands for the process dying at a fault point."""


def ref(n: int) -> ClaimRef:
    return ClaimRef("default", f"claim-{n}", claim_uid(n))


class Node:
    """One node's driver over a mock backend whose MIG state outlives driver restarts."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.backend = MockBackend(NODE, PROFILE)
        self.migs: MockMigManager = self.backend.mig_manager
        self.claims = FakeClaimSource()
        create_device_nodes(root / "host", self.backend.inventory)

    def driver(
        self,
        *,
        fault_hook: Callable[[FaultPoint], None] | None = None,
        boot_id: str = BOOT_ID,
        start: bool = True,
        mig_manager: MigManager | None = None,
    ) -> GpuDriver:
        driver = GpuDriver(
            driver_name=DRIVER,
            inventory=self.backend.inventory,
            claim_source=self.claims,
            checkpoints=CheckpointStore(checkpoint_path(self.root)),
            cdi=CdiWriter(cdi_root(self.root), DRIVER),
            host=scan_host_files(self.root / "host", self.root / "driver", None),
            boot_id=boot_id,
            fault_hook=fault_hook,
            mig_manager=mig_manager or DevNodeMigManager(self.migs, self.root / "host"),
        )
        if start:
            driver.start()
        return driver

    @property
    def gpu0(self) -> Gpu:
        return self.backend.inventory.gpus[0]

    def created(self) -> list[tuple[str, tuple[int, int]]]:
        return [(m.profile.name, m.placement) for m in self.migs.devices(self.gpu0)]


@pytest.fixture
def node(tmp_path: Path) -> Node:
    return Node(tmp_path / "node")


def _device(document: dict[str, Any], n: int, device: str) -> dict[str, Any]:
    name = f"{claim_uid(n)}-{device}"
    return next(d for d in document["devices"] if d["name"] == name)


def test_dynamic_mig_is_created_at_prepare_and_destroyed_at_unprepare(node: Node) -> None:
    node.claims.put(claim(1, [MIG_1G]))
    driver = node.driver()

    result = driver.prepare([ref(1)])[claim_uid(1)]

    assert result.error is None
    assert [d.cdi_device_ids for d in result.devices] == [
        (f"{DRIVER}/gpu={claim_uid(1)}-{MIG_1G}",)
    ]
    assert node.created() == [("1g.5gb", (0, 1))]
    mig = node.migs.devices(node.gpu0)[0]
    document = validate_cdi_file(spec_path(node.root, 1))
    host = str(node.root / "host")
    nodes = [n["hostPath"] for n in _device(document, 1, MIG_1G)["containerEdits"]["deviceNodes"]]
    assert nodes == [
        f"{host}/dev/nvidia0",
        f"{host}/dev/nvidia-caps/nvidia-cap{mig.gpu_instance_cap}",
        f"{host}/dev/nvidia-caps/nvidia-cap{mig.compute_instance_cap}",
    ]
    # The fake capability nodes exist, so a container runtime accepts the spec.
    assert all(Path(p).exists() for p in nodes)
    device_env = _device(document, 1, MIG_1G)["containerEdits"]["env"]
    assert [e for e in device_env if e.endswith(f"_UUID={mig.uuid}")], device_env
    recorded = driver.prepared()[claim_uid(1)].devices[0]
    assert recorded.uuid == mig.uuid
    assert recorded.mig is not None and recorded.mig.dynamic

    assert driver.unprepare([ref(1)]) == {claim_uid(1): None}
    assert node.created() == []
    assert not spec_path(node.root, 1).exists()


def test_prepare_again_is_idempotent_and_creates_nothing_more(node: Node) -> None:
    node.claims.put(claim(1, [MIG_1G]))
    driver = node.driver()
    first = driver.prepare([ref(1)])[claim_uid(1)]
    again = driver.prepare([ref(1)])[claim_uid(1)]
    assert again == first
    assert node.created() == [("1g.5gb", (0, 1))]


def test_overlapping_placement_fails_retryably_and_leaves_no_trace(node: Node) -> None:
    node.claims.put(claim(1, [MIG_3G]))
    node.claims.put(claim(2, [OVERLAPS_3G]))
    driver = node.driver()
    assert driver.prepare([ref(1)])[claim_uid(1)].error is None

    error = driver.prepare([ref(2)])[claim_uid(2)].error

    assert error is not None
    assert "claim default/claim-2" in error and OVERLAPS_3G in error and "in use" in error
    assert node.created() == [("3g.20gb", (4, 4))]  # claim-1's device untouched
    assert claim_uid(2) not in driver.prepared()
    assert not spec_path(node.root, 2).exists()
    # Once claim-1 is gone the placement is free again.
    driver.unprepare([ref(1)])
    assert driver.prepare([ref(2)])[claim_uid(2)].error is None
    assert node.created() == [("2g.10gb", (4, 2))]


def test_static_mig_device_is_prepared_without_creating_anything(node: Node) -> None:
    node.claims.put(claim(1, [STATIC]))
    driver = node.driver()
    gpu1 = node.backend.inventory.gpus[1]
    static = next(m for m in gpu1.mig_devices if m.placement == (4, 4))

    assert driver.prepare([ref(1)])[claim_uid(1)].error is None

    document = validate_cdi_file(spec_path(node.root, 1))
    paths = [n["path"] for n in _device(document, 1, STATIC)["containerEdits"]["deviceNodes"]]
    assert paths == ["/dev/nvidia1", *static.cap_device_nodes]
    device_env = _device(document, 1, STATIC)["containerEdits"]["env"]
    assert [e for e in device_env if e.endswith(f"_UUID={static.uuid}")], device_env
    assert node.created() == []
    driver.unprepare([ref(1)])
    # Unprepare leaves a static MIG device alone.
    assert static in node.migs.devices(gpu1)


def test_gpu_config_on_a_mig_device_is_an_error_naming_claim_and_request(node: Node) -> None:
    node.claims.put(claim(1, [MIG_1G], configs=[gpu_config_entry({"strategy": "TimeSlicing"})]))
    driver = node.driver()

    error = driver.prepare([ref(1)])[claim_uid(1)].error

    assert error is not None
    assert "claim default/claim-1" in error and "request gpu" in error.replace('"', "")
    assert "status.allocation.devices.config[0]" in error and MIG_1G in error
    assert node.created() == []


@pytest.mark.parametrize("point", ["checkpoint-started", "mig-created", "spec-written"])
def test_crash_during_prepare_is_undone_at_start_up(node: Node, point: FaultPoint) -> None:
    node.claims.put(claim(1, [MIG_1G]))
    frozen: dict[str, Any] = {}

    def crash(at: FaultPoint) -> None:
        # The process dies here: keep the files and MIG devices as they are now,
        # since the in-process rollback that follows would not run.
        if at == point:
            shutil.copytree(node.root, node.root.parent / "frozen", ignore=_skip_frozen)
            frozen["migs"] = node.migs.devices(node.gpu0)
            raise _Crash(at)

    with pytest.raises(_Crash):
        node.driver(fault_hook=crash).prepare([ref(1)])
    for name in ("state", "cdi"):
        shutil.rmtree(node.root / name, ignore_errors=True)
        if (node.root.parent / "frozen" / name).exists():
            shutil.copytree(node.root.parent / "frozen" / name, node.root / name)
    for mig in frozen["migs"]:
        node.migs.create(node.gpu0, mig.profile, mig.placement)
    assert checkpoint_states(node.root) == {claim_uid(1): "PrepareStarted"}
    assert len(node.created()) == (0 if point == "checkpoint-started" else 1)

    node.driver()

    assert node.created() == []
    assert not spec_path(node.root, 1).exists()
    assert checkpoint_states(node.root) == {}


def _skip_frozen(directory: str, names: list[str]) -> list[str]:
    return [n for n in names if n in ("host", "driver")]


def test_reboot_recreates_dynamic_mig_of_prepared_claims(node: Node) -> None:
    node.claims.put(claim(1, [MIG_1G]))
    driver = node.driver()
    assert driver.prepare([ref(1)])[claim_uid(1)].error is None
    node.migs.destroy(node.gpu0, node.gpu0.mig_profiles[0], (0, 1))  # a reboot took it
    spec_path(node.root, 1).unlink()  # and the CDI tmpfs

    report = node.driver(boot_id="another-boot", start=False).start()

    assert claim_uid(1) in report.rewritten
    assert node.created() == [("1g.5gb", (0, 1))]
    validate_cdi_file(spec_path(node.root, 1))


def test_claim_deleted_while_down_has_its_mig_destroyed_at_start_up(node: Node) -> None:
    node.claims.put(claim(1, [MIG_1G]))
    assert node.driver().prepare([ref(1)])[claim_uid(1)].error is None
    node.claims.delete("default", "claim-1")

    report = node.driver(start=False).start()

    assert report.removed == [claim_uid(1)]
    assert node.created() == []


def test_without_mig_manager_a_dynamic_mig_claim_fails_clearly(tmp_path: Path) -> None:
    backend = MockBackend(NODE, PROFILE)
    driver = GpuDriver(
        driver_name=DRIVER,
        inventory=backend.inventory,
        claim_source=FakeClaimSource([claim(1, [MIG_1G])]),
        checkpoints=CheckpointStore(checkpoint_path(tmp_path)),
        cdi=CdiWriter(cdi_root(tmp_path), DRIVER),
        host=scan_host_files(tmp_path / "host", tmp_path / "driver", None),
        boot_id=BOOT_ID,
    )
    driver.start()
    error = driver.prepare([ref(1)])[claim_uid(1)].error
    assert error is not None and "cannot create MIG devices" in error and MIG_1G in error
    assert driver.prepared() == {}


class _FailingDestroy:
    """Wraps a MIG manager; destroy fails while ``failing`` is set (a busy GPU)."""

    def __init__(self, inner: MockMigManager) -> None:
        self.inner = inner
        self.failing = True

    def create(self, gpu: Gpu, profile: MigProfile, placement: tuple[int, int]) -> MigDevice:
        return self.inner.create(gpu, profile, placement)

    def destroy(self, gpu: Gpu, profile: MigProfile, placement: tuple[int, int]) -> bool:
        if self.failing:
            raise PrepareError("GPU instance in use by a process", retryable=True)
        return self.inner.destroy(gpu, profile, placement)


def test_unprepare_keeps_the_claim_while_its_mig_device_cannot_be_destroyed(
    node: Node,
) -> None:
    node.claims.put(claim(1, [MIG_1G]))
    manager = _FailingDestroy(node.migs)
    driver = node.driver(mig_manager=manager)
    assert driver.prepare([ref(1)])[claim_uid(1)].error is None

    error = driver.unprepare([ref(1)])[claim_uid(1)]

    assert error is not None and "in use by a process" in error and "claim default/claim-1" in error
    assert claim_uid(1) in driver.prepared()
    assert node.created() == [("1g.5gb", (0, 1))]
    manager.failing = False
    assert driver.unprepare([ref(1)]) == {claim_uid(1): None}
    assert node.created() == [] and driver.prepared() == {}


def test_unprepare_after_the_parent_gpu_vanished_succeeds(node: Node) -> None:
    node.claims.put(claim(1, [MIG_1G]))
    driver = node.driver()
    assert driver.prepare([ref(1)])[claim_uid(1)].error is None
    inventory = node.backend.inventory
    driver.update_inventory(replace(inventory, gpus=inventory.gpus[1:]))  # GPU 0 fell off the bus

    assert driver.unprepare([ref(1)]) == {claim_uid(1): None}
    assert driver.prepared() == {}

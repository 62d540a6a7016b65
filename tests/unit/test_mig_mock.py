"""The mock backend's MIG manager and the inventory's MIG look-up."""

from __future__ import annotations

import pytest

from api.errors import PrepareError
from dra_driver.discovery.mock import MockBackend, mig_cap_minors, mock_mig_uuid
from dra_driver.discovery.model import Gpu, MigProfile

NODE = "node-a"


def _profile(gpu: Gpu, name: str) -> MigProfile:
    return next(p for p in gpu.mig_profiles if p.name == name)


def test_cap_minors_follow_the_drivers_mig_minors_table() -> None:
    # gpu0/gi0/access 3, gpu0/gi0/ci0/access 4, gpu0/gi1/access 12, gpu1/gi0/access 138.
    assert mig_cap_minors(0, 0, 0) == (3, 4)
    assert mig_cap_minors(0, 1, 0) == (12, 13)
    assert mig_cap_minors(0, 1, 7) == (12, 20)
    assert mig_cap_minors(1, 0, 0) == (138, 139)


def test_create_gives_deterministic_devices_with_lowest_free_instance_ids() -> None:
    backend = MockBackend(NODE, "2xA100-40GB")
    gpu = backend.inventory.gpus[1]
    one = backend.mig_manager.create(gpu, _profile(gpu, "1g.5gb"), (0, 1))
    two = backend.mig_manager.create(gpu, _profile(gpu, "3g.20gb"), (4, 4))

    assert (one.gpu_instance_id, two.gpu_instance_id) == (1, 2)
    assert one.uuid == mock_mig_uuid(NODE, 1, 19, 0)
    assert one.uuid != mock_mig_uuid("node-b", 1, 19, 0)
    assert one.cap_device_nodes == (
        f"/dev/nvidia-caps/nvidia-cap{mig_cap_minors(1, 1, 0)[0]}",
        f"/dev/nvidia-caps/nvidia-cap{mig_cap_minors(1, 1, 0)[1]}",
    )
    # Freed IDs are reused: a destroy and a create give the same device back.
    assert backend.mig_manager.destroy(gpu, _profile(gpu, "1g.5gb"), (0, 1))
    assert backend.mig_manager.create(gpu, _profile(gpu, "1g.5gb"), (0, 1)) == one


def test_create_is_idempotent_and_overlaps_are_refused_retryably() -> None:
    backend = MockBackend(NODE, "A100-40GB")
    gpu = backend.inventory.gpus[0]
    three = _profile(gpu, "3g.20gb")
    made = backend.mig_manager.create(gpu, three, (4, 4))
    assert backend.mig_manager.create(gpu, three, (4, 4)) == made

    with pytest.raises(PrepareError) as caught:
        backend.mig_manager.create(gpu, _profile(gpu, "2g.10gb"), (4, 2))
    assert caught.value.retryable
    assert "[4, 5]" in str(caught.value) and made.uuid in str(caught.value)
    assert backend.mig_manager.devices(gpu) == (made,)


def test_a_placement_the_profile_lacks_is_refused() -> None:
    backend = MockBackend(NODE, "A100-40GB")
    gpu = backend.inventory.gpus[0]
    with pytest.raises(PrepareError, match=r"no placement \(1, 4\)") as caught:
        backend.mig_manager.create(gpu, _profile(gpu, "3g.20gb"), (1, 4))
    assert not caught.value.retryable


def test_destroy_of_nothing_is_false() -> None:
    backend = MockBackend(NODE, "A100-40GB")
    gpu = backend.inventory.gpus[0]
    assert not backend.mig_manager.destroy(gpu, _profile(gpu, "1g.5gb"), (3, 1))


def test_static_mig_devices_block_their_slices_and_carry_cap_nodes() -> None:
    backend = MockBackend(NODE, "A100-40GB:mig=3g.20gb")
    gpu = backend.inventory.gpus[0]
    (static,) = gpu.mig_devices
    assert static.cap_device_nodes == tuple(
        f"/dev/nvidia-caps/nvidia-cap{n}" for n in mig_cap_minors(0, static.gpu_instance_id, 0)
    )
    with pytest.raises(PrepareError, match="in use"):
        backend.mig_manager.create(gpu, _profile(gpu, "1g.5gb"), (static.placement[0], 1))


def test_inventory_resolves_published_mig_names() -> None:
    inventory = MockBackend(NODE, "A100-40GB,A100-40GB:mig=3g.20gb").inventory
    dynamic = inventory.mig_by_name("gpu-0-mig-1g5gb-19-3")
    assert dynamic is not None and dynamic.existing is None
    assert (dynamic.gpu.minor, dynamic.profile.profile_id, dynamic.placement) == (0, 19, (3, 1))
    static = inventory.mig_by_name("gpu-1-mig-3g20gb-9-0")
    assert static is not None and static.existing is inventory.gpus[1].mig_devices[0]
    # A placement of a GPU in MIG mode is not published, so not resolved.
    assert inventory.mig_by_name("gpu-1-mig-1g5gb-19-4") is None
    assert inventory.mig_by_name("gpu-0") is None
    assert inventory.mig_by_name("gpu-0-mig-1g5gb-19-7") is None  # no such placement

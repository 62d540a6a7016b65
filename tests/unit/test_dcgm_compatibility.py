"""What NVIDIA's DCGM exporter reads from our ResourceSlices to label GPU metrics with pods
(docs/operations.md, "DCGM exporter"): under the driver name ``gpu.nvidia.com``, the
attributes ``type``, ``uuid``, ``parentUUID`` and ``profile`` of each device."""

from __future__ import annotations

from api.resource_v1 import Device
from dra_driver.discovery.mock import MockBackend
from dra_driver.slices import build_slices

EXPORTER_DRIVER = "gpu.nvidia.com"


def _devices(profile: str, **options: bool) -> list[Device]:
    inventory = MockBackend("node-a", profile).discover()
    slices = build_slices(inventory, driver_name=EXPORTER_DRIVER, **options)
    assert {s.spec.driver for s in slices} == {EXPORTER_DRIVER}
    return [d for s in slices for d in s.spec.devices or []]


def _attributes(device: Device) -> dict[str, str]:
    wanted = ("type", "uuid", "parentUUID", "profile")
    return {k: str(v.value) for k, v in (device.attributes or {}).items() if k in wanted}


def test_whole_and_shared_gpus_carry_type_and_uuid() -> None:
    for shared in (False, True):
        (gpu,) = _devices("1xL4", shared_gpus=shared)
        found = _attributes(gpu)
        assert found["type"] == "gpu" and found["uuid"].startswith("GPU-")


def test_static_mig_devices_carry_their_own_uuid_the_parent_and_the_profile() -> None:
    devices = _devices("1xA100-80GB:mig=3g.40gb/2x2g.20gb")
    assert devices
    for device in devices:
        found = _attributes(device)
        assert found["type"] == "mig"
        assert found["uuid"].startswith("MIG-") and found["parentUUID"].startswith("GPU-")
        assert found["profile"] in ("3g.40gb", "2g.20gb")


def test_mig_devices_made_at_prepare_have_no_uuid_in_the_slice() -> None:
    # The documented limit: the exporter cannot map a MIG device that exists only once a
    # claim is prepared; its parent GPU and profile are published, its UUID cannot be.
    migs = [d for d in _devices("1xA100-80GB") if _attributes(d)["type"] == "mig"]
    assert migs
    for device in migs:
        found = _attributes(device)
        assert "uuid" not in found and found["parentUUID"].startswith("GPU-")
        assert found["profile"]

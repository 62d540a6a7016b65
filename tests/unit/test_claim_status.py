"""status.devices of prepared claims (KEP-4817): what the plugin writes, how it merges with
other writers, and what it does when refused, raced or late."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from api.checkpoint import ClaimEntry, DeviceRecord, MigRecord
from api.resource_v1 import DeviceTaint
from dra_driver.discovery.mock import MockBackend
from kubelet_plugin.claim_events import ClaimEvents
from kubelet_plugin.claim_status import ClaimStatusReporter, ClaimStatusWriter, device_entries
from kubelet_plugin.node_driver import ClaimRef, PreparedDevice, PrepareResult
from tests.fakes.cluster import FakeCluster

DRIVER = "gpu.dra-driver.io"
NODE = "node-a"
UID = "5f0e7c1a-1111-4a2b-9c3d-000000000001"
REF = ClaimRef(namespace="default", name="train", uid=UID)
INVENTORY = MockBackend(NODE, "2xH100-80GB").discover()
#: The 1g.10gb MIG device at the start of gpu-0, as a checkpoint records it.
MIG_ON_GPU_0 = MigRecord(
    parent_device="gpu-0",
    parent_uuid=INVENTORY.gpus[0].uuid,
    profile="1g.10gb",
    profile_id=19,
    placement_start=0,
    placement_size=1,
    dynamic=True,
)
OTHER: dict[str, Any] = {
    "driver": "nic.example.com",
    "pool": NODE,
    "device": "eth0",
    "conditions": [
        {
            "type": "Ready",
            "status": "True",
            "reason": "Up",
            "message": "",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        }
    ],
}


def _record(device: str = "gpu-1", **kw: Any) -> DeviceRecord:
    gpu = INVENTORY.gpu_by_name(device.split("-mig", maxsplit=1)[0]) or INVENTORY.gpus[0]
    return DeviceRecord(
        requests=("gpu",),
        pool=NODE,
        device=device,
        cdi_device_ids=(f"{DRIVER}/gpu={UID}-{device}",),
        uuid=gpu.uuid,
        device_node=gpu.device_node,
        **kw,
    )


def _entry(*records: DeviceRecord) -> ClaimEntry:
    return ClaimEntry(
        namespace="default",
        name="train",
        state="PrepareCompleted",
        boot_id="boot",
        cdi_spec_path=f"/var/run/cdi/{DRIVER}-{UID}.json",
        devices=records or (_record(),),
    )


def _cluster(*, allocated: bool = True, devices: list[dict[str, Any]] | None = None) -> FakeCluster:
    cluster = FakeCluster()
    status: dict[str, Any] = {}
    if allocated:
        status["allocation"] = {
            "devices": {
                "results": [{"request": "gpu", "driver": DRIVER, "pool": NODE, "device": "gpu-1"}]
            }
        }
    if devices is not None:
        status["devices"] = devices
    cluster.create(
        "resourceclaims",
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaim",
            "metadata": {"name": "train", "namespace": "default", "uid": UID},
            "spec": {"devices": {"requests": []}},
        },
    )
    stored = cluster.get("resourceclaims", "train", namespace="default")
    # The fake makes its own UIDs: the claim gets the one the tests' REF names.
    stored["metadata"]["uid"] = UID
    cluster.put("resourceclaims", {**stored, "status": status})
    return cluster


def _devices(cluster: FakeCluster) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = cluster.get("resourceclaims", "train", namespace="default")[
        "status"
    ].get("devices", [])
    return found


def test_each_device_gets_ready_and_healthy_conditions_and_its_identity() -> None:
    (entry,) = device_entries(DRIVER, _entry(), INVENTORY, {}, now="2026-12-07T10:00:00Z")
    gpu = INVENTORY.gpu_by_name("gpu-1")
    assert gpu is not None
    assert (entry["driver"], entry["pool"], entry["device"]) == (DRIVER, NODE, "gpu-1")
    assert "shareID" not in entry
    assert [(c["type"], c["status"], c["reason"]) for c in entry["conditions"]] == [
        ("Ready", "True", "Prepared"),
        ("Healthy", "True", "NoHealthEvent"),
    ]
    assert entry["data"] == {
        "uuid": gpu.uuid,
        "pciBusID": gpu.pci_bus_id,
        "cdiDeviceIDs": [f"{DRIVER}/gpu={UID}-gpu-1"],
        "deviceNode": gpu.device_node,
    }


def test_a_share_is_keyed_by_its_share_id_and_a_mig_device_names_its_profile() -> None:
    entries = device_entries(
        DRIVER,
        _entry(_record("gpu-1", shareID="a1b2c"), _record("gpu-0-mig-1g.10gb-0", mig=MIG_ON_GPU_0)),
        INVENTORY,
        {},
    )
    assert entries[0]["shareID"] == "a1b2c"
    assert entries[1]["data"]["migProfile"] == "1g.10gb"
    assert entries[1]["data"]["pciBusID"] == INVENTORY.gpus[0].pci_bus_id  # the parent's


def test_a_tainted_device_is_unhealthy_with_its_taints_as_the_reason() -> None:
    taint = DeviceTaint(key=f"{DRIVER}/xid", value="79", effect="NoExecute")
    (entry,) = device_entries(DRIVER, _entry(), INVENTORY, {"gpu-1": [taint]})
    healthy = entry["conditions"][1]
    assert (healthy["status"], healthy["reason"]) == ("False", "Tainted")
    assert f"{DRIVER}/xid=79:NoExecute" in healthy["message"]


def test_the_write_keeps_other_drivers_entries_and_removes_only_ours() -> None:
    cluster = _cluster(devices=[OTHER])
    writer = ClaimStatusWriter(cluster, DRIVER)

    assert writer.write(REF, device_entries(DRIVER, _entry(), INVENTORY, {}))
    assert [e["driver"] for e in _devices(cluster)] == ["nic.example.com", DRIVER]
    assert writer.write(REF, None)
    assert _devices(cluster) == [OTHER]


def test_an_unchanged_condition_keeps_its_transition_time_and_nothing_is_rewritten() -> None:
    cluster = _cluster()
    writer = ClaimStatusWriter(cluster, DRIVER)
    first = device_entries(DRIVER, _entry(), INVENTORY, {}, now="2026-12-07T10:00:00Z")
    later = device_entries(DRIVER, _entry(), INVENTORY, {}, now="2026-12-07T11:00:00Z")
    writer.write(REF, first)
    cluster.calls.clear()

    assert writer.write(REF, later)

    assert [c.verb for c in cluster.calls] == ["get"]
    times = {c["lastTransitionTime"] for c in _devices(cluster)[0]["conditions"]}
    assert times == {"2026-12-07T10:00:00Z"}


def test_a_conflicting_writer_is_merged_not_overwritten() -> None:
    cluster = _cluster()
    writer = ClaimStatusWriter(cluster, DRIVER)

    def someone_else_writes() -> None:
        stored = cluster.get("resourceclaims", "train", namespace="default")
        cluster.put(
            "resourceclaims", {**stored, "status": {**stored["status"], "devices": [OTHER]}}
        )

    cluster.before("patch_status", "resourceclaims", someone_else_writes, times=1)
    assert writer.write(REF, device_entries(DRIVER, _entry(), INVENTORY, {}))
    assert [e["driver"] for e in _devices(cluster)] == ["nic.example.com", DRIVER]


def test_a_refusal_is_logged_once_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    cluster = _cluster()
    cluster.fail("patch_status", "resourceclaims", 403, times=2)
    writer = ClaimStatusWriter(cluster, DRIVER)
    with caplog.at_level(logging.WARNING):
        assert not writer.write(REF, device_entries(DRIVER, _entry(), INVENTORY, {}))
        assert not writer.write(REF, device_entries(DRIVER, _entry(), INVENTORY, {}))
    warnings = [r for r in caplog.records if "associated-node:patch" in r.getMessage()]
    assert len(warnings) == 1 and writer.forbidden == 2


def test_the_write_names_only_status_devices_and_the_version_it_read() -> None:
    # The API server compares status.allocation byte for byte (opaque parameters are raw
    # JSON): a write that sent it back re-encoded would be refused without the binding
    # permission. The patch names nothing else, and no other verb writes.
    cluster = _cluster()
    patches: list[dict[str, Any]] = []
    patch_status = cluster.patch_status

    def recording(resource: Any, name: str, patch: Any, **kwargs: Any) -> dict[str, Any]:
        patches.append(patch)
        return patch_status(resource, name, patch, **kwargs)

    cluster.patch_status = recording  # type: ignore[method-assign]
    version = cluster.get("resourceclaims", "train", namespace="default")["metadata"][
        "resourceVersion"
    ]
    writer = ClaimStatusWriter(cluster, DRIVER)
    cluster.calls.clear()
    assert writer.write(REF, device_entries(DRIVER, _entry(), INVENTORY, {}))
    assert writer.write(REF, None)

    assert [set(p) for p in patches] == [{"metadata", "status"}] * 2
    assert patches[0]["metadata"] == {"resourceVersion": version}
    assert set(patches[0]["status"]) == {"devices"}
    assert patches[1]["status"] == {"devices": None}  # merge patch: the field removed
    assert "devices" not in cluster.get("resourceclaims", "train", namespace="default")["status"]
    assert {c.verb for c in cluster.calls} == {"get", "patch_status"}


@pytest.mark.parametrize("case", ["gone", "other uid", "deallocated"])
def test_a_claim_that_is_not_this_one_any_more_is_left_alone(case: str) -> None:
    cluster = _cluster(allocated=case != "deallocated")
    if case == "gone":
        cluster.delete("resourceclaims", "train", namespace="default")
    ref = REF if case != "other uid" else ClaimRef(namespace="default", name="train", uid="x")
    cluster.calls.clear()
    assert not ClaimStatusWriter(cluster, DRIVER).write(
        ref, device_entries(DRIVER, _entry(), INVENTORY, {})
    )
    assert not [c for c in cluster.calls if c.verb == "patch_status"]


class _Inner:
    def __init__(self) -> None:
        self.entries: dict[str, ClaimEntry] = {}

    def prepare(self, claims: Sequence[ClaimRef]) -> Mapping[str, PrepareResult]:
        results = {}
        for ref in claims:
            if ref.name == "broken":
                results[ref.uid] = PrepareResult(error="no such device")
                continue
            self.entries[ref.uid] = _entry()
            device = PreparedDevice(requests=("gpu",), pool=NODE, device="gpu-1", cdi_device_ids=())
            results[ref.uid] = PrepareResult(devices=(device,))
        return results

    def unprepare(self, claims: Sequence[ClaimRef]) -> Mapping[str, str | None]:
        for ref in claims:
            self.entries.pop(ref.uid, None)
        return {ref.uid: None for ref in claims}


def test_the_reporter_writes_after_prepare_health_and_unprepare() -> None:
    cluster = _cluster()
    inner = _Inner()
    writer = ClaimStatusWriter(cluster, DRIVER)
    reporter = ClaimStatusReporter(
        inner, writer, prepared=lambda: inner.entries, inventory=INVENTORY
    )
    broken = ClaimRef(namespace="default", name="broken", uid="u-2")

    answers = reporter.prepare([REF, broken])
    writer.drain()
    assert answers[broken.uid].error == "no such device"  # answers pass through unchanged
    assert [c["status"] for c in _devices(cluster)[0]["conditions"]] == ["True", "True"]

    reporter.health_changed({"gpu-1": [DeviceTaint(key=f"{DRIVER}/xid", effect="NoSchedule")]})
    writer.drain()
    assert _devices(cluster)[0]["conditions"][1]["status"] == "False"

    reporter.unprepare([REF])
    writer.drain()
    assert _devices(cluster) == []


def test_a_failed_prepare_and_the_health_of_a_held_device_are_events_on_the_claim() -> None:
    cluster = _cluster()
    inner = _Inner()
    writer = ClaimStatusWriter(cluster, DRIVER)
    events = ClaimEvents(cluster, NODE)  # not started: each Event is written at once
    reporter = ClaimStatusReporter(
        inner, writer, prepared=lambda: inner.entries, inventory=INVENTORY, events=events
    )
    broken = ClaimRef(namespace="default", name="broken", uid="u-2")
    xid = DeviceTaint(key=f"{DRIVER}/xid", value="79", effect="NoExecute")

    reporter.prepare([REF, broken])
    reporter.health_changed({"gpu-1": [xid]})
    reporter.health_changed({"gpu-0": [xid]})  # a device no claim here holds: no Event
    reporter.health_changed({})
    writer.drain()

    found = [
        (e["involvedObject"]["name"], e["involvedObject"]["uid"], e["type"], e["reason"])
        for e in cluster.objects("events")
    ]
    assert found == [
        ("broken", "u-2", "Warning", "PrepareFailed"),
        ("train", UID, "Warning", "DeviceTainted"),
        ("train", UID, "Normal", "DeviceRecovered"),
    ]
    messages = [e["message"] for e in cluster.objects("events")]
    assert messages[0] == f"node {NODE}: preparing the claim failed: no such device"
    gpu = INVENTORY.gpu_by_name("gpu-1")
    assert gpu is not None
    assert messages[1].startswith(
        f"node {NODE}: device gpu-1 ({gpu.uuid}) carries health taints {DRIVER}/xid=79:NoExecute"
        "; NoExecute: the pods using it are evicted"
    )
    assert all(e["involvedObject"]["kind"] == "ResourceClaim" for e in cluster.objects("events"))


def test_a_fault_of_the_gpu_makes_its_mig_device_unhealthy_and_tells_the_claim() -> None:
    # Health is kept per GPU: the monitor's taints name gpu-0, the claim holds a MIG device
    # on it.
    entry = _entry(_record("gpu-0-mig-1g.10gb-0", mig=MIG_ON_GPU_0))
    xid = DeviceTaint(key=f"{DRIVER}/xid", value="48", effect="NoSchedule")
    (device,) = device_entries(DRIVER, entry, INVENTORY, {"gpu-0": [xid]})
    assert device["conditions"][1]["status"] == "False"

    cluster = _cluster()
    writer = ClaimStatusWriter(cluster, DRIVER)
    events = ClaimEvents(cluster, NODE)
    reporter = ClaimStatusReporter(
        _Inner(), writer, prepared=lambda: {UID: entry}, inventory=INVENTORY, events=events
    )
    reporter.health_changed({"gpu-0": [xid]})
    reporter.health_changed({})
    assert [e["reason"] for e in cluster.objects("events")] == ["DeviceTainted", "DeviceRecovered"]
    assert "device gpu-0-mig-1g.10gb-0" in cluster.objects("events")[0]["message"]

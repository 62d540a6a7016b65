"""Device metadata files (KEP-5304): the bytes, the paths and how a claim's plan mounts them.

``device_metadata_upstream.json`` holds the stream for the object of
:func:`test_bytes_are_those_of_the_upstream_library`; it was checked by a Go program built
against the pinned ``k8s.io/dynamic-resource-allocation`` v0.37.2: the upstream
``devicemetadata`` decoder reads and validates it (as v1beta1, and as v1alpha1 for a 1.36
reader), and the upstream encoder writes the same bytes for the object it decoded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from preparation_fixtures import DRIVER, NODE, claim, claim_uid, inventory, result

from api.checkpoint import ClaimEntry, DeviceMetadataRecord
from api.errors import PrepareError
from api.resource_v1 import DeviceAttribute, ResourceClaim, parse_object
from dra_driver.cdi import HostFiles, encode_cdi_spec
from dra_driver.device_metadata import (
    MetadataDevice,
    container_file_path,
    encode_device_metadata,
    host_file_path,
)
from dra_driver.preparation import PreparationPlan, plan_preparation
from dra_driver.prepared_claims import checkpoint_devices, metadata_files, plan_from_checkpoint

UID = claim_uid(5)
ROOT = "/var/lib/kubelet/plugins/gpu.dra-driver.io/dra-device-metadata"
HOST = HostFiles(dev_root="/mock", control_devices=("/dev/nvidiactl",), metadata_root=ROOT)
INVENTORY = inventory(4)
UPSTREAM = Path(__file__).with_name("device_metadata_upstream.json")
CONTAINER_DIR = "/var/run/kubernetes.io/dra-device-attributes"


def test_bytes_are_those_of_the_upstream_library() -> None:
    content = encode_device_metadata(
        driver_name=DRIVER,
        namespace="default",
        name="pod-gpu-x7k2q",
        uid="6f1c9a52-2b1e-4c34-9f0e-3a1d2c4b5e6f",
        pod_claim_name="gpu",
        request="gpu/large",
        devices=[
            MetadataDevice(
                pool=NODE,
                name="gpu-0",
                attributes={
                    "uuid": DeviceAttribute(string="GPU-1f2e3d4c"),
                    "resource.kubernetes.io/pciBusID": DeviceAttribute(string="0000:10:00.0"),
                    "index": DeviceAttribute(int_=0),
                    "driverVersion": DeviceAttribute(version="550.54.15"),
                    "productName": DeviceAttribute(string="H100 <SXM> & co"),
                },
            ),
            MetadataDevice(pool=NODE, name="gpu-1", attributes={}),
        ],
    )
    assert content == UPSTREAM.read_bytes()
    decoder = json.JSONDecoder()
    text, index, versions = content.decode(), 0, []
    while index < len(text.rstrip()):
        document, index = decoder.raw_decode(text, index)
        versions.append(document["apiVersion"])
        index += 1  # the newline after each document
    assert versions == ["metadata.resource.k8s.io/v1beta1", "metadata.resource.k8s.io/v1alpha1"]


@pytest.mark.parametrize(
    ("claim_name", "pod_claim_name", "request_name", "expected"),
    [
        ("shared", None, "gpu", "resourceclaims/shared/gpu"),
        ("pod-gpu-x7k2q", "gpu", "gpu", "resourceclaimtemplates/gpu/gpu"),
        ("pod-gpu-x7k2q", "gpu", "gpu/large", "resourceclaimtemplates/gpu/gpu"),
        # An empty annotation counts as none, as upstream reads it.
        ("shared", "", "gpu", "resourceclaims/shared/gpu"),
    ],
)
def test_container_paths_follow_the_upstream_layout(
    claim_name: str, pod_claim_name: str | None, request_name: str, expected: str
) -> None:
    path = container_file_path(DRIVER, claim_name, pod_claim_name, request_name)
    assert path == f"{CONTAINER_DIR}/{expected}/{DRIVER}-metadata.json"


@pytest.mark.parametrize(
    ("pod_claim_name", "request_name"),
    [("../etc", "gpu"), ("gpu", "../../etc"), ("GPU", "gpu"), ("gpu", "")],
)
def test_names_that_are_no_dns_label_never_make_a_path(
    pod_claim_name: str, request_name: str
) -> None:
    with pytest.raises(ValueError, match="not a DNS label"):
        container_file_path(DRIVER, "c", pod_claim_name, request_name)
    with pytest.raises(ValueError):
        host_file_path(ROOT, "../x", DRIVER, "gpu")


def with_annotation(resource_claim: ResourceClaim, value: str) -> ResourceClaim:
    document: dict[str, Any] = resource_claim.model_dump(mode="json", by_alias=True)
    document["metadata"]["annotations"] = {"resource.kubernetes.io/pod-claim-name": value}
    parsed = parse_object(document)
    assert isinstance(parsed, ResourceClaim)
    return parsed


def plan(resource_claim: ResourceClaim, host: HostFiles = HOST) -> PreparationPlan:
    return plan_preparation(
        resource_claim, uid=UID, inventory=INVENTORY, driver_name=DRIVER, pool_name=NODE, host=host
    )


def metadata_devices(p: PreparationPlan) -> dict[str, Any]:
    assert p.spec is not None
    return {
        d.name: d.container_edits.model_dump(mode="json", by_alias=True, exclude_none=True)
        for d in p.spec.devices
        if "-metadata-" in d.name
    }


def test_each_request_gets_a_mounted_file_and_its_first_device_the_id() -> None:
    p = plan(
        with_annotation(
            claim(UID, [result("gpu-1"), result("gpu-2"), result("gpu-3", "extra")]), "train"
        )
    )
    assert p.device_metadata == DeviceMetadataRecord(pod_claim_name="train")
    gpu_id = f"{DRIVER}/gpu={UID}-metadata-gpu"
    extra_id = f"{DRIVER}/gpu={UID}-metadata-extra"
    assert {r.device: r.cdi_device_ids[1:] for r in checkpoint_devices(p)} == {
        "gpu-1": (gpu_id,),
        "gpu-2": (),
        "gpu-3": (extra_id,),
    }
    mounts = metadata_devices(p)
    assert mounts[f"{UID}-metadata-gpu"] == {
        "mounts": [
            {
                "hostPath": f"{ROOT}/{UID}/gpu/{DRIVER}-metadata.json",
                "containerPath": (
                    f"{CONTAINER_DIR}/resourceclaimtemplates/train/gpu/{DRIVER}-metadata.json"
                ),
                "options": ["ro", "nosuid", "nodev", "noexec", "bind"],
            }
        ]
    }
    assert set(mounts) == {f"{UID}-metadata-gpu", f"{UID}-metadata-extra"}


def test_file_content_lists_the_requests_devices_with_their_attributes() -> None:
    p = plan(claim(UID, [result("gpu-1"), result("gpu-2"), result("gpu-3", "extra")]))
    files = metadata_files(p, INVENTORY, driver_name=DRIVER)
    content = files[f"{ROOT}/{UID}/gpu/{DRIVER}-metadata.json"].decode()
    first = json.JSONDecoder().raw_decode(content)[0]
    assert first["metadata"] == {
        "name": "train-0",
        "namespace": "default",
        "uid": UID,
        "generation": 1,
    }
    assert "podClaimName" not in first  # a claim the pod names
    (request,) = first["requests"]
    assert request["name"] == "gpu"
    assert [d["name"] for d in request["devices"]] == ["gpu-1", "gpu-2"]
    attributes = request["devices"][0]["attributes"]
    assert attributes["uuid"] == {"string": INVENTORY.gpus[1].uuid}
    assert attributes["resource.kubernetes.io/pciBusID"] == {"string": "0000:11:00.0"}
    assert list(attributes) == sorted(attributes)


def test_a_plan_from_the_checkpoint_mounts_the_same_files() -> None:
    p = plan(with_annotation(claim(UID, [result("gpu-1")]), "train"))
    assert p.spec is not None
    entry = ClaimEntry(
        namespace="default",
        name="train-0",
        state="PrepareCompleted",
        boot_id="b",
        cdi_spec_path="/var/run/cdi/x.json",
        devices=checkpoint_devices(p),
        device_metadata=p.device_metadata,
    )
    again = plan_from_checkpoint(UID, entry, driver_name=DRIVER, host=HOST)
    assert again.spec is not None
    assert encode_cdi_spec(again.spec) == encode_cdi_spec(p.spec)
    assert checkpoint_devices(again) == entry.devices
    assert metadata_files(again, INVENTORY, driver_name=DRIVER) == metadata_files(
        p, INVENTORY, driver_name=DRIVER
    )

    # An entry of an older plugin (no deviceMetadata) keeps a spec without the mounts.
    older = entry.model_copy(update={"device_metadata": None})
    old_plan = plan_from_checkpoint(UID, older, driver_name=DRIVER, host=HOST)
    assert metadata_devices(old_plan) == {} and old_plan.metadata == ()


def test_without_a_metadata_root_nothing_is_planned() -> None:
    p = plan(claim(UID, [result("gpu-1")]), HostFiles(dev_root="/mock"))
    assert p.device_metadata is None and p.metadata == ()
    assert metadata_devices(p) == {}
    assert checkpoint_devices(p)[0].cdi_device_ids == (f"{DRIVER}/gpu={UID}-gpu-1",)


def test_a_pod_claim_name_that_cannot_name_a_path_is_a_prepare_error() -> None:
    with pytest.raises(PrepareError) as caught:
        plan(with_annotation(claim(UID, [result("gpu-1")]), "../../etc"))
    message = str(caught.value)
    assert "claim default/train-0" in message
    assert "resource.kubernetes.io/pod-claim-name" in message
    assert "not a DNS label" in message

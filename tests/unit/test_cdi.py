"""The CDI spec builder: layout, names, lowest cdiVersion, validity against the CDI schema."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from typing import Any

import jsonschema
import pytest
from preparation_fixtures import DRIVER, claim_uid, validate_cdi_document
from pydantic import ValidationError

from dra_driver.cdi import (
    MAX_CDI_VERSION,
    CdiDevice,
    CdiSpec,
    ContainerEdits,
    DeviceNode,
    HostFiles,
    Mount,
    SharingSettings,
    SpecDevice,
    build_cdi_spec,
    cdi_device_id,
    cdi_device_name,
    cdi_kind,
    encode_cdi_spec,
    gpu_env_key,
    is_driver_file,
    is_valid_cdi_device_name,
    minimum_cdi_version,
    select_driver_files,
    spec_file_name,
)

UID = claim_uid(1)  # starts with a digit or a letter; tests below pick explicitly
LIBS = (
    "/usr/lib/x86_64-linux-gnu/libcuda.so.1",
    "/usr/lib/x86_64-linux-gnu/libcuda.so.550.54.15",
    "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1",
    "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.550.54.15",
)
FULL_HOST = HostFiles(
    dev_root="/var/lib/mock-gpus",
    driver_root="/run/nvidia/driver",
    control_devices=("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"),
    driver_files=(*LIBS, "/usr/bin/nvidia-smi"),
    hook_path="/usr/bin/nvidia-cdi-hook",
)


def device(minor: int = 0, *, uid: str = UID, sharing: SharingSettings | None = None) -> SpecDevice:
    return SpecDevice(
        name=cdi_device_name(uid, f"gpu-{minor}"),
        env_key=gpu_env_key(f"gpu-{minor}"),
        uuid=f"GPU-{minor:08d}",
        device_node=f"/dev/nvidia{minor}",
        sharing=sharing,
    )


def document(spec: CdiSpec) -> Any:
    return json.loads(encode_cdi_spec(spec))


def test_one_gpu_spec_follows_the_nvidia_layout_and_validates() -> None:
    spec = build_cdi_spec(driver_name=DRIVER, devices=[device(3)], host=FULL_HOST)
    doc = document(spec)
    validate_cdi_document(doc)

    assert doc["kind"] == "gpu.dra-driver.io/gpu"
    assert doc["devices"] == [
        {
            "name": f"{UID}-gpu-3",
            "containerEdits": {
                "env": ["DRA_GPU_3_UUID=GPU-00000003", "DRA_GPU_3_SHARING_STRATEGY=Exclusive"],
                "deviceNodes": [
                    {"path": "/dev/nvidia3", "hostPath": "/var/lib/mock-gpus/dev/nvidia3"}
                ],
            },
        }
    ]
    common = doc["containerEdits"]
    assert common["env"] == ["NVIDIA_VISIBLE_DEVICES=void"]
    assert common["deviceNodes"] == [
        {"path": p, "hostPath": f"/var/lib/mock-gpus{p}"}
        for p in ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools")
    ]
    mounts = {m["containerPath"]: m for m in common["mounts"]}
    assert set(mounts) == {*LIBS, "/usr/bin/nvidia-smi"}
    smi = mounts["/usr/bin/nvidia-smi"]
    assert smi["hostPath"] == "/run/nvidia/driver/usr/bin/nvidia-smi"
    assert smi["options"] == ["ro", "nosuid", "nodev", "bind"]
    assert common["hooks"] == [
        {
            "hookName": "createContainer",
            "path": "/usr/bin/nvidia-cdi-hook",
            "args": [
                "nvidia-cdi-hook",
                "update-ldcache",
                "--folder",
                "/usr/lib/x86_64-linux-gnu",
            ],
        }
    ]


def test_names_ids_and_file_name() -> None:
    assert cdi_kind(DRIVER) == "gpu.dra-driver.io/gpu"
    name = cdi_device_name("0b6c2a8e-7d1f-4b43-9d4e-2f1c9a3e5b77", "gpu-0")
    assert name == "0b6c2a8e-7d1f-4b43-9d4e-2f1c9a3e5b77-gpu-0"
    assert cdi_device_id(DRIVER, name) == f"gpu.dra-driver.io/gpu={name}"
    assert spec_file_name(DRIVER, "abc") == "gpu.dra-driver.io-abc.json"
    assert cdi_device_name("u", "gpu-1", "share") == "u-gpu-1-share"


@pytest.mark.parametrize("name", ["a", "0", "0b6c-gpu-0", "x.y_z:1-2"])
def test_valid_device_names(name: str) -> None:
    assert is_valid_cdi_device_name(name)


@pytest.mark.parametrize("name", ["", "-a", "a-", "a/b", "a=b", "a b", "gpu_"])
def test_invalid_device_names(name: str) -> None:
    assert not is_valid_cdi_device_name(name)
    with pytest.raises(ValueError, match="not a valid CDI device name"):
        CdiDevice(name=name, container_edits=ContainerEdits(env=["A=b"]))


def test_invalid_driver_name_is_no_kind() -> None:
    with pytest.raises(ValueError, match="not a valid CDI vendor"):
        cdi_kind("-bad")


def test_version_is_0_5_0_for_a_digit_leading_name() -> None:
    host = HostFiles()  # dev root "/": no hostPath
    spec = build_cdi_spec(driver_name=DRIVER, devices=[device(uid="0abc")], host=host)
    assert spec.cdi_version == "0.5.0"


def test_version_is_0_3_0_without_host_paths_and_a_letter_name() -> None:
    spec = build_cdi_spec(driver_name=DRIVER, devices=[device(uid="abc")], host=HostFiles())
    doc = document(spec)
    assert doc["cdiVersion"] == "0.3.0"
    assert "hostPath" not in json.dumps(doc["devices"])
    validate_cdi_document(doc)


def test_version_is_0_5_0_for_a_host_path() -> None:
    host = HostFiles(dev_root="/mock")
    spec = build_cdi_spec(driver_name=DRIVER, devices=[device(uid="abc")], host=host)
    assert spec.cdi_version == "0.5.0"


def test_version_is_0_4_0_for_a_mount_type() -> None:
    spec = CdiSpec(
        cdi_version="0.8.0",
        kind="a.b/c",
        devices=[
            CdiDevice(
                name="d",
                container_edits=ContainerEdits(
                    mounts=[Mount(host_path="/a", container_path="/a", type="bind")]
                ),
            )
        ],
    )
    assert minimum_cdi_version(spec) == "0.4.0"


def test_version_never_exceeds_the_cap_and_what_podman_4_3_reads() -> None:
    for uid, dev_root, hook, sharing in itertools.product(
        ["0abc", "abc"],
        ["/", "/mock"],
        [None, "/usr/bin/nvidia-cdi-hook"],
        [None, SharingSettings("MPS", mps_active_thread_percentage=10)],
    ):
        host = HostFiles(
            dev_root=dev_root,
            control_devices=("/dev/nvidiactl",),
            driver_files=LIBS,
            hook_path=hook,
        )
        spec = build_cdi_spec(
            driver_name=DRIVER, devices=[device(0, uid=uid, sharing=sharing)], host=host
        )
        version = tuple(int(p) for p in spec.cdi_version.split("."))
        assert version <= (0, 5, 0) <= tuple(int(p) for p in MAX_CDI_VERSION.split("."))
        validate_cdi_document(document(spec))


def test_no_hook_without_a_hook_binary_or_without_libraries() -> None:
    no_hook = HostFiles(driver_files=LIBS)
    doc = document(build_cdi_spec(driver_name=DRIVER, devices=[device()], host=no_hook))
    assert "hooks" not in doc["containerEdits"]
    no_libs = HostFiles(driver_files=("/usr/bin/nvidia-smi",), hook_path="/hook")
    doc = document(build_cdi_spec(driver_name=DRIVER, devices=[device()], host=no_libs))
    assert "hooks" not in doc["containerEdits"]


def test_several_gpus_keep_their_order_each_with_variables_of_its_own() -> None:
    spec = build_cdi_spec(driver_name=DRIVER, devices=[device(5), device(2)], host=FULL_HOST)
    doc = document(spec)
    validate_cdi_document(doc)
    assert [d["name"] for d in doc["devices"]] == [f"{UID}-gpu-5", f"{UID}-gpu-2"]
    # No claim-wide list: a container given one of the two must not be told of the other.
    assert doc["containerEdits"]["env"] == ["NVIDIA_VISIBLE_DEVICES=void"]
    assert "DRA_GPU_5_UUID=GPU-00000005" in doc["devices"][0]["containerEdits"]["env"]
    assert "DRA_GPU_2_UUID=GPU-00000002" in doc["devices"][1]["containerEdits"]["env"]


def test_devices_of_two_claims_in_one_container_have_distinct_variables() -> None:
    first = document(build_cdi_spec(driver_name=DRIVER, devices=[device(0)], host=HostFiles()))
    other_uid = "0b5e2f4c-9d1a-4e8b-8c3f-2a6d7e9f1b00"
    second = document(
        build_cdi_spec(driver_name=DRIVER, devices=[device(1, uid=other_uid)], host=HostFiles())
    )
    names = [
        line.split("=", 1)[0]
        for doc in (first, second)
        for d in doc["devices"]
        for line in d["containerEdits"]["env"]
    ]
    assert len(names) == len(set(names)), names
    # The spec-level values are equal, so applying both specs changes nothing.
    assert first["containerEdits"]["env"] == second["containerEdits"]["env"]


@pytest.mark.parametrize(
    ("device_name", "share_id", "key"),
    [
        ("gpu-3", None, "3"),
        ("gpu-0-mig-1g.10gb-0", None, "0_MIG_1G_10GB_0"),
        ("gpu-1", "a1b2c", "1_A1B2C"),
    ],
)
def test_the_variables_key_is_the_devices_published_name(
    device_name: str, share_id: str | None, key: str
) -> None:
    assert gpu_env_key(device_name, share_id) == key


def test_two_devices_with_one_key_are_refused() -> None:
    with pytest.raises(ValueError, match="env key"):
        build_cdi_spec(driver_name=DRIVER, devices=[device(1), device(1)], host=HostFiles())


def test_sharing_settings_become_env() -> None:
    time_sliced = SharingSettings("TimeSlicing", time_slice_interval="Long")
    mps_a = SharingSettings(
        "MPS", mps_active_thread_percentage=50, mps_pinned_memory_limit_bytes=10 * 2**30
    )
    mps_b = SharingSettings(
        "MPS", mps_active_thread_percentage=30, mps_pinned_memory_limit_bytes=2**20 + 1
    )
    spec = build_cdi_spec(
        driver_name=DRIVER,
        devices=[
            device(0, sharing=time_sliced),
            device(1, sharing=mps_a),
            device(2, sharing=mps_b),
        ],
        host=HostFiles(),
    )
    doc = document(spec)
    validate_cdi_document(doc)
    envs = [d["containerEdits"]["env"] for d in doc["devices"]]
    assert envs[0] == [
        "DRA_GPU_0_UUID=GPU-00000000",
        "DRA_GPU_0_SHARING_STRATEGY=TimeSlicing",
        "DRA_GPU_0_TIME_SLICE_INTERVAL=Long",
    ]
    assert envs[1] == [
        "DRA_GPU_1_UUID=GPU-00000001",
        "DRA_GPU_1_SHARING_STRATEGY=MPS",
        "DRA_GPU_1_MPS_ACTIVE_THREAD_PERCENTAGE=50",
        "DRA_GPU_1_MPS_PINNED_DEVICE_MEM_LIMIT=10240M",
    ]
    assert "DRA_GPU_2_MPS_PINNED_DEVICE_MEM_LIMIT=2M" in envs[2]  # rounded up, never down
    assert doc["containerEdits"]["env"] == [
        "NVIDIA_VISIBLE_DEVICES=void",
        "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=30",
        "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=GPU-00000001=10240M,GPU-00000002=2M",
    ]


def test_same_inputs_give_the_same_bytes() -> None:
    first = encode_cdi_spec(build_cdi_spec(driver_name=DRIVER, devices=[device()], host=FULL_HOST))
    second = encode_cdi_spec(build_cdi_spec(driver_name=DRIVER, devices=[device()], host=FULL_HOST))
    assert first == second


def test_spec_model_refuses_what_loaders_refuse() -> None:
    with pytest.raises(ValueError, match="at least one device"):
        build_cdi_spec(driver_name=DRIVER, devices=[], host=HostFiles())
    same_name = [device(0), replace(device(1), name=device(0).name)]
    with pytest.raises(ValidationError, match="unique"):
        build_cdi_spec(driver_name=DRIVER, devices=same_name, host=HostFiles())
    with pytest.raises(ValidationError, match="at least one container edit"):
        CdiDevice(name="d", container_edits=ContainerEdits())
    with pytest.raises(ValidationError, match="must be absolute"):
        DeviceNode(path="dev/nvidia0")
    with pytest.raises(ValidationError, match="NAME=value"):
        ContainerEdits(env=["=x"])
    with pytest.raises(ValidationError, match="Extra inputs"):
        DeviceNode.model_validate({"path": "/dev/x", "fileMode": 1})


def test_schema_check_catches_a_broken_spec() -> None:
    # The check the other tests rely on is not vacuous.
    doc = document(build_cdi_spec(driver_name=DRIVER, devices=[device()], host=FULL_HOST))
    del doc["devices"][0]["containerEdits"]
    with pytest.raises(jsonschema.ValidationError):
        validate_cdi_document(doc)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/usr/lib/x86_64-linux-gnu/libcuda.so.550.54.15", True),
        ("/usr/lib/x86_64-linux-gnu/libcuda.so.1", True),
        ("/usr/lib64/libnvidia-ml.so.1", True),
        ("/usr/lib/x86_64-linux-gnu/libcuda.so", False),  # the -dev symlink
        ("/usr/lib/x86_64-linux-gnu/libfoo.so.1", False),
        ("/usr/lib/x86_64-linux-gnu/nvidia/libcuda.so.1", False),
        ("/usr/bin/nvidia-smi", True),
        ("/usr/bin/nvidia-cuda-mps-control", True),
        ("/usr/lib/x86_64-linux-gnu/nvidia-smi", False),
        ("/usr/bin/bash", False),
        ("/lib/firmware/nvidia/550.54.15/gsp_ga10x.bin", True),
        ("/lib/firmware/nvidia/550.54.15/other.bin", False),
        ("/run/nvidia-persistenced/socket", True),
    ],
)
def test_driver_files_follow_the_nvidia_layout(path: str, expected: bool) -> None:
    assert is_driver_file(path) is expected


def test_select_driver_files_sorts_and_drops_repeats() -> None:
    chosen = select_driver_files(
        ["/usr/bin/nvidia-smi", "/usr/bin/ls", "/usr/bin/nvidia-smi", *LIBS]
    )
    assert chosen == tuple(sorted({*LIBS, "/usr/bin/nvidia-smi"}))

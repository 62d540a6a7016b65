"""Shared GPUs (consumable capacity) end to end without a cluster: slices built with
``shared_gpus``, three claims allocated onto one GPU by ``dra-driver allocate``, then
each prepared by GpuDriver into its own CDI spec with MPS limits from its share."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import yaml

from api.errors import ExitCode
from dra_cli.main import main
from dra_driver.cdi import gpu_env_key
from dra_driver.discovery.mock import MockBackend
from dra_driver.slices import build_slices
from kubelet_plugin.cdi_writer import CdiWriter, scan_host_files
from kubelet_plugin.checkpoint_store import CheckpointStore
from kubelet_plugin.devnodes import create_device_nodes
from kubelet_plugin.driver import GpuDriver
from kubelet_plugin.node_driver import ClaimRef
from tests.component.driver_fixtures import (
    BOOT_ID,
    DRIVER,
    NODE,
    cdi_root,
    checkpoint_path,
    claim_uid,
    spec_path,
    validate_cdi_file,
)
from tests.fakes.claim_source import FakeClaimSource

CLASS = "shared-gpu"


def _claim(n: int, memory: str, compute: str) -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": f"claim-{n}", "namespace": "default", "uid": claim_uid(n)},
        "spec": {
            "devices": {
                "requests": [
                    {
                        "name": "gpu",
                        "exactly": {
                            "deviceClassName": CLASS,
                            "capacity": {"requests": {"memory": memory, "compute": compute}},
                        },
                    }
                ]
            }
        },
    }


def _allocate(tmp_path: Path, backend: MockBackend, claims: list[dict[str, Any]]) -> list[Any]:
    slices = build_slices(backend.inventory, driver_name=DRIVER, shared_gpus=True)
    device_class = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "DeviceClass",
        "metadata": {"name": CLASS},
        "spec": {
            "selectors": [
                {
                    "cel": {
                        "expression": f"device.driver == '{DRIVER}' && "
                        f"device.attributes['{DRIVER}'].type == 'gpu'"
                    }
                }
            ]
        },
    }
    documents = [
        device_class,
        *(s.model_dump(mode="json", by_alias=True, exclude_none=True) for s in slices),
        *claims,
    ]
    path = tmp_path / "input.yaml"
    path.write_text(yaml.safe_dump_all(documents))
    out = io.StringIO()
    code = main(
        ["allocate", "-f", str(path), "--node", NODE, "-o", "json"],
        stdin=io.StringIO(),
        stdout=out,
    )
    assert code == ExitCode.OK, out.getvalue()
    items: list[Any] = json.loads(out.getvalue())["items"]
    return items


def test_three_claims_share_one_gpu_and_prepare_independently(tmp_path: Path) -> None:
    backend = MockBackend(NODE, "2xH100-80GB")
    allocated = _allocate(
        tmp_path,
        backend,
        [_claim(1, "20Gi", "30"), _claim(2, "10Gi", "30"), _claim(3, "40Gi", "40")],
    )

    results = [c["status"]["allocation"]["devices"]["results"] for c in allocated]
    assert [[r["device"] for r in rs] for rs in results] == [["gpu-0"]] * 3
    share_ids = [rs[0]["shareID"] for rs in results]
    assert len(set(share_ids)) == 3
    assert [rs[0]["consumedCapacity"] for rs in results] == [
        {"memory": "20Gi", "compute": "30"},
        {"memory": "10Gi", "compute": "30"},
        {"memory": "40Gi", "compute": "40"},
    ]

    create_device_nodes(tmp_path / "host", backend.inventory)
    driver = GpuDriver(
        driver_name=DRIVER,
        inventory=backend.inventory,
        claim_source=FakeClaimSource(allocated),
        checkpoints=CheckpointStore(checkpoint_path(tmp_path)),
        cdi=CdiWriter(cdi_root(tmp_path), DRIVER),
        host=scan_host_files(tmp_path / "host", tmp_path / "driver", None),
        boot_id=BOOT_ID,
    )
    driver.start()
    refs = [ClaimRef("default", f"claim-{n}", claim_uid(n)) for n in (1, 2, 3)]
    answers = driver.prepare(refs)

    gpu_uuid = backend.inventory.gpus[0].uuid
    for n, share_id, (memory_mib, compute) in zip(
        (1, 2, 3), share_ids, ((20480, 30), (10240, 30), (40960, 40)), strict=True
    ):
        answer = answers[claim_uid(n)]
        assert answer.error is None
        name = f"{claim_uid(n)}-gpu-0-{share_id}"
        assert [d.cdi_device_ids for d in answer.devices] == [(f"{DRIVER}/gpu={name}",)]
        assert answer.devices[0].share_id == share_id
        document = validate_cdi_file(spec_path(tmp_path, n))
        assert [d["name"] for d in document["devices"]] == [name]
        env = document["containerEdits"]["env"]
        assert f"CUDA_MPS_PINNED_DEVICE_MEM_LIMIT={gpu_uuid}={memory_mib}M" in env
        assert f"CUDA_MPS_ACTIVE_THREAD_PERCENTAGE={compute}" in env
        assert "NVIDIA_VISIBLE_DEVICES=void" in env
        (device,) = document["devices"]
        key = gpu_env_key("gpu-0", share_id)
        assert f"DRA_GPU_{key}_UUID={gpu_uuid}" in device["containerEdits"]["env"]

    # One share goes away; the others stay prepared.
    assert driver.unprepare([refs[1]]) == {claim_uid(2): None}
    assert sorted(driver.prepared()) == sorted([claim_uid(1), claim_uid(3)])
    assert spec_path(tmp_path, 1).exists() and not spec_path(tmp_path, 2).exists()


def test_a_share_that_does_not_fit_goes_to_the_next_gpu(tmp_path: Path) -> None:
    backend = MockBackend(NODE, "2xH100-80GB")
    allocated = _allocate(tmp_path, backend, [_claim(1, "60Gi", "50"), _claim(2, "30Gi", "50")])
    devices = [c["status"]["allocation"]["devices"]["results"][0]["device"] for c in allocated]
    assert devices == ["gpu-0", "gpu-1"]  # 60Gi + 30Gi exceed gpu-0's 80Gi

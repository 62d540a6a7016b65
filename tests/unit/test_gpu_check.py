"""e2e/gpu/check.py, the real-GPU checks: the parts that run without a GPU, on mock GPUs.

The script runs by hand on GPU machines; these tests keep it working as the
code it drives changes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dra_driver.discovery.mock import MockBackend
from dra_driver.discovery.model import RecoveryAction
from e2e.gpu import check


def test_bus_ids_of_nvidia_smi_and_sysfs_compare_equal() -> None:
    assert check.normalized_bus_id("00000000:19:00.0") == "0000:19:00.0"
    assert check.normalized_bus_id("0000:AB:00.0") == "0000:ab:00.0"
    assert check.normalized_bus_id("00000001:19:00.0") != check.normalized_bus_id("0000:19:00.0")


def test_slices_check_validates_and_writes_the_partitionable_pool(tmp_path: Path) -> None:
    inventory = MockBackend(check.NODE, "2xH100-80GB").inventory
    result = check.check_slices(inventory, tmp_path)
    assert result["devices"]["full"] == 2
    assert result["devices"]["partitionable"] > 2  # MIG placements beside the GPUs
    documents = list(yaml.safe_load_all((tmp_path / "slices.yaml").read_text()))
    names = {d["name"] for doc in documents for d in doc["spec"].get("devices") or []}
    assert {"gpu-0", "gpu-1"} <= names


def test_prepare_latency_check_prepares_every_iteration(tmp_path: Path) -> None:
    libs = tmp_path / "driver" / "usr/lib/x86_64-linux-gnu"
    libs.mkdir(parents=True)
    (libs / "libnvidia-ml.so.1").write_bytes(b"\x7fELF")
    inventory = MockBackend(check.NODE, "1xH100-80GB").inventory
    result = check.check_prepare_latency(inventory, tmp_path / "driver", 5)
    assert result["iterations"] == 5
    assert 0 < result["p50_ms"] <= result["p99_ms"]


def test_a_failed_expectation_names_what_was_seen() -> None:
    with pytest.raises(check.CheckFailedError, match="seen 3"):
        check.expect(False, "seen 3")


def test_recovery_check_records_each_action_and_fails_a_gpu_that_does_not_validate() -> None:
    mock = MockBackend("node-a", "2xH100-80GB")
    mock.recovery.set_action(mock.inventory.gpus[1].uuid, RecoveryAction.GPU_RESET)
    assert check.check_recovery(mock.recovery, mock.inventory) == {
        "gpus": {
            "gpu-0": {"recoveryAction": "NONE"},
            "gpu-1": {"recoveryAction": "GPU_RESET"},
        }
    }
    mock.recovery.set_supported(False)  # an older driver: recorded, not failed
    assert check.check_recovery(mock.recovery, mock.inventory)["gpus"]["gpu-0"] == {
        "recoveryAction": "not-supported"
    }
    mock.recovery.set_invalid(mock.inventory.gpus[0].uuid, "NVML does not answer for it")
    with pytest.raises(check.CheckFailedError, match=r"gpu-0 \(GPU-.*\) does not validate"):
        check.check_recovery(mock.recovery, mock.inventory)

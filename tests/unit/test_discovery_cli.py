"""`dra-driver discover`: slices as multi-document YAML, backends, flags and their env twins."""

from __future__ import annotations

import argparse
import io
import socket
from pathlib import Path

import pytest
import yaml
from discovery_nvml_fake import LIBRARY_NOT_FOUND, FakeNvml, fake_gpu

from api.resource_v1 import ResourceSlice, parse_object
from api.validation import validate
from dra_cli.discover import run_discover
from dra_cli.main import build_parser, main
from dra_driver.discovery.model import DiscoveryBackend
from kubelet_plugin.nvml import NvmlBackend


def _run(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    code = main(["discover", *argv], stdout=out)
    return code, out.getvalue()


def _slices(text: str) -> list[ResourceSlice]:
    slices = []
    for document in yaml.safe_load_all(text):
        obj = parse_object(document)
        assert isinstance(obj, ResourceSlice)
        assert validate(obj) == []
        slices.append(obj)
    return slices


def test_mock_backend_prints_the_whole_pool(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(
        ["--backend", "mock", "--mock-profile", "4xA100-40GB,4xL4", "--node-name", "n1"]
    )
    assert code == 0
    slices = _slices(out)
    assert len(slices) == slices[0].spec.pool.resource_slice_count == 3
    assert {s.spec.pool.name for s in slices} == {"n1"}
    devices = [d.name for s in slices for d in s.spec.devices or []]
    assert len(devices) == 4 * 26 + 4
    assert "n1: 8 GPU(s), 108 device(s) in 3 slice(s) (backend mock)" in capsys.readouterr().err


def test_flags_shape_the_output() -> None:
    code, out = _run(
        [
            "--backend=mock",
            "--mock-profile=2xA100-40GB,1xL4",
            "--node-name=n1",
            "--driver-name=gpu.example.com",
            "--device-order=smallest-first",
            "--no-partitionable",
        ]
    )
    assert code == 0
    (slice_,) = _slices(out)
    assert slice_.spec.driver == "gpu.example.com"
    assert [d.name for d in slice_.spec.devices or []] == ["gpu-2", "gpu-0", "gpu-1"]


def test_shared_gpus_are_published_for_consumable_capacity(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    argv = ["--backend=mock", "--mock-profile=1xL4", "--node-name=n1", "--no-partitionable"]
    code, out = _run([*argv, "--shared-gpus"])
    assert code == 0
    ((device,),) = [s.spec.devices for s in _slices(out)]
    assert device.allow_multiple_allocations is True
    assert device.capacity is not None
    assert device.capacity["memory"].request_policy is not None
    monkeypatch.setenv("DRA_DRIVER_SHARED_GPUS", "true")
    assert _slices(_run(argv)[1])[0].spec.devices[0].allow_multiple_allocations is True  # type: ignore[index]
    code, out = _run([*argv, "--no-shared-gpus"])
    assert not _slices(out)[0].spec.devices[0].allow_multiple_allocations  # type: ignore[index]


def test_every_flag_has_an_environment_twin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRA_DRIVER_BACKEND", "mock")
    monkeypatch.setenv("DRA_DRIVER_MOCK_PROFILE", "1xL4,1xT4")
    monkeypatch.setenv("DRA_DRIVER_NODE_NAME", "env-node")
    monkeypatch.setenv("DRA_DRIVER_NAME", "gpu.example.com")
    monkeypatch.setenv("DRA_DRIVER_DEVICE_ORDER", "largest-first")
    monkeypatch.setenv("DRA_DRIVER_PARTITIONABLE", "false")
    code, out = _run([])
    assert code == 0
    (slice_,) = _slices(out)
    assert (slice_.spec.pool.name, slice_.spec.driver) == ("env-node", "gpu.example.com")
    assert [d.name for d in slice_.spec.devices or []] == ["gpu-0", "gpu-1"]
    # A flag beats its twin.
    code, out = _run(["--device-order", "smallest-first"])
    assert [d.name for d in _slices(out)[0].spec.devices or []] == ["gpu-1", "gpu-0"]


def test_node_name_defaults_to_the_host_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DRA_DRIVER_NODE_NAME", raising=False)
    code, out = _run(["--backend", "mock", "--mock-profile", "1xL4"])
    assert code == 0
    assert _slices(out)[0].spec.node_name == socket.gethostname().lower()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--mock-profile", "2xB300"], "unknown GPU model 'B300'"),
        (["--device-order", "random"], "--device-order: unknown device order 'random'"),
        (["--driver-name", "Not_A_Driver"], "invalid driver name"),
    ],
)
def test_invalid_flags_exit_2_and_print_nothing(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _run(["--backend", "mock", "--node-name", "n1", *argv])
    assert (code, out) == (2, "")
    assert message in capsys.readouterr().err


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["discover", "--node-name", "n1", *argv])


def test_auto_never_falls_back_to_mock_silently() -> None:
    def no_nvml(node_name: str) -> DiscoveryBackend:
        return NvmlBackend(node_name, nvml=FakeNvml([], init_error=LIBRARY_NOT_FOUND))

    out, err = io.StringIO(), io.StringIO()
    code = run_discover(_args("--backend", "auto"), out, err=err, load_nvml=no_nvml)
    assert (code, out.getvalue()) == (1, "")
    message = err.getvalue()
    assert "--backend auto found no usable NVIDIA GPU backend" in message
    assert "NVML Shared Library Not Found" in message
    assert "--backend mock" in message


@pytest.mark.parametrize("backend", ["auto", "nvml"])
def test_nvml_backend_when_it_initialises(backend: str, tmp_path: Path) -> None:
    nvml = FakeNvml([fake_gpu("H100-80GB", "GPU-1234", bus_id="00000000:3B:00.0")])

    def with_nvml(node_name: str) -> DiscoveryBackend:
        return NvmlBackend(node_name, nvml=nvml, sysfs_root=tmp_path)

    out = io.StringIO()
    code = run_discover(_args("--backend", backend), out, err=io.StringIO(), load_nvml=with_nvml)
    assert code == 0
    slices = _slices(out.getvalue())
    gpu = next(d for s in slices for d in s.spec.devices or [] if d.name == "gpu-0")
    assert gpu.attributes is not None
    assert gpu.attributes["resource.kubernetes.io/pciBusID"].string == "0000:3b:00.0"
    assert gpu.attributes["driverVersion"].version == "535.104.5"
    assert nvml.shut_down == 1  # the CLI closes the backend


def test_nvml_failure_during_discovery_exits_1(tmp_path: Path) -> None:
    broken = fake_gpu("L4", "GPU-1")
    broken.failures["nvmlDeviceGetMinorNumber"] = 999

    def with_nvml(node_name: str) -> DiscoveryBackend:
        return NvmlBackend(node_name, nvml=FakeNvml([broken]), sysfs_root=tmp_path)

    err = io.StringIO()
    code = run_discover(_args("--backend", "nvml"), io.StringIO(), err=err, load_nvml=with_nvml)
    assert code == 1
    assert "discovery failed: node n1: GPU 0 (GPU-1): nvmlDeviceGetMinorNumber" in err.getvalue()


def test_real_nvml_loader_is_used_by_default() -> None:
    # The default loader reaches the node agent's NVML backend (real pynvml): here
    # it either finds GPUs or fails with the explained error, never a crash.
    out, err = io.StringIO(), io.StringIO()
    code = run_discover(_args("--backend", "nvml"), out, err=err)
    if code == 1:
        assert "NVML did not initialise" in err.getvalue()
    else:
        assert code == 0
        _slices(out.getvalue())

"""The GpuConfig opaque configuration: strict decoding, rules, defaults."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from api.errors import InvalidInputError
from api.gpu_config import (
    API_VERSION,
    KIND,
    TIME_SLICE_INTERVALS,
    GpuConfig,
    MpsConfig,
    TimeSlicingConfig,
    decode_gpu_config,
)
from api.quantity import Quantity
from api.resource_v1 import dump


def config(sharing: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"apiVersion": API_VERSION, "kind": KIND, **extra}
    if sharing is not None:
        data["sharing"] = sharing
    return data


def rejected(parameters: Any) -> list[str]:
    with pytest.raises(InvalidInputError) as info:
        decode_gpu_config(parameters)
    return [str(e) for e in info.value.errors]


def test_documented_example_decodes() -> None:
    parameters = yaml.safe_load(
        """
apiVersion: gpu.dra-driver.io/v1alpha1
kind: GpuConfig
sharing:
  strategy: MPS
  mpsConfig:
    defaultActiveThreadPercentage: 50
    defaultPinnedDeviceMemoryLimit: 10Gi
    defaultPerDevicePinnedMemoryLimit: {"0": 5Gi}
"""
    )
    decoded = decode_gpu_config(parameters)
    assert decoded.sharing is not None and decoded.sharing.mps_config is not None
    mps = decoded.sharing.mps_config
    assert mps.default_active_thread_percentage == 50
    assert mps.default_pinned_device_memory_limit == Quantity.parse("10Gi")
    assert mps.default_per_device_pinned_memory_limit == {"0": Quantity.parse("5Gi")}
    assert not decoded.exclusive
    assert dump(decoded) == parameters


def test_no_sharing_means_exclusive() -> None:
    decoded = decode_gpu_config(config())
    assert decoded.exclusive
    assert decoded.normalized() == decoded
    assert dump(decoded.normalized()) == config()


@pytest.mark.parametrize(
    "sharing",
    [
        {"strategy": "TimeSlicing"},
        {"strategy": "TimeSlicing", "timeSlicingConfig": {}},
    ],
)
def test_time_slicing_defaults_to_default_interval(sharing: dict[str, Any]) -> None:
    decoded = decode_gpu_config(config(sharing))
    normalized = decoded.normalized()
    assert normalized.sharing is not None
    assert normalized.sharing.time_slicing_config == TimeSlicingConfig(interval="Default")
    # normalized() returns a copy; the decoded config keeps what the user wrote.
    assert decoded.sharing is not None
    assert decoded.sharing.time_slicing_config != TimeSlicingConfig(interval="Default")


def test_explicit_interval_is_kept_by_normalized() -> None:
    decoded = decode_gpu_config(
        config({"strategy": "TimeSlicing", "timeSlicingConfig": {"interval": "Long"}})
    )
    normalized = decoded.normalized()
    assert normalized.sharing is not None and normalized.sharing.time_slicing_config is not None
    assert normalized.sharing.time_slicing_config.interval == "Long"
    assert TIME_SLICE_INTERVALS["Long"] == 3


def test_mps_defaults_to_empty_config() -> None:
    normalized = decode_gpu_config(config({"strategy": "MPS"})).normalized()
    assert normalized.sharing is not None
    assert normalized.sharing.mps_config == MpsConfig()


@pytest.mark.parametrize("interval", list(TIME_SLICE_INTERVALS))
def test_every_interval_is_accepted(interval: str) -> None:
    parameters = config({"strategy": "TimeSlicing", "timeSlicingConfig": {"interval": interval}})
    decoded = decode_gpu_config(parameters)
    # Kept as written (not replaced by a default), also once the defaults are filled in...
    assert decoded.sharing is not None and decoded.sharing.time_slicing_config is not None
    assert decoded.sharing.time_slicing_config.interval == interval
    normalized = decoded.normalized().sharing
    assert normalized is not None and normalized.time_slicing_config is not None
    assert normalized.time_slicing_config.interval == interval
    assert not decoded.exclusive
    # ...and written back exactly as the user gave it.
    assert dump(decoded) == parameters


@pytest.mark.parametrize(
    ("parameters", "expected"),
    [
        (
            config({"strategy": "TimeSlicing", "timeSlicingConfig": {"interval": "Fast"}}),
            'sharing.timeSlicingConfig.interval: unsupported value "Fast": '
            'supported values "Default", "Short", "Medium", "Long"',
        ),
        (config({"strategy": "TimeSlicing", "foo": 1}), "sharing.foo: unknown field"),
        (config(sharing=None, replicas=2), "replicas: unknown field"),
        (
            config({"strategy": "MPS", "mpsConfig": {"defaultActiveThreadPercent": 5}}),
            "sharing.mpsConfig.defaultActiveThreadPercent: unknown field",
        ),
        (
            config({"strategy": "Exclusive"}),
            'sharing.strategy: unsupported value "Exclusive": '
            'supported values "TimeSlicing", "MPS"',
        ),
        (
            {"apiVersion": API_VERSION, "kind": KIND, "sharing": {}},
            "sharing.strategy: required field is missing",
        ),
        (
            config({"strategy": "MPS", "timeSlicingConfig": {"interval": "Short"}}),
            'sharing.timeSlicingConfig: only allowed with strategy "TimeSlicing", not "MPS"',
        ),
        (
            config({"strategy": "TimeSlicing", "mpsConfig": {}}),
            'sharing.mpsConfig: only allowed with strategy "MPS", not "TimeSlicing"',
        ),
        (
            config({"strategy": "MPS", "mpsConfig": {"defaultActiveThreadPercentage": 0}}),
            "sharing.mpsConfig.defaultActiveThreadPercentage: must be between 1 and 100, not 0",
        ),
        (
            config({"strategy": "MPS", "mpsConfig": {"defaultActiveThreadPercentage": 101}}),
            "sharing.mpsConfig.defaultActiveThreadPercentage: must be between 1 and 100, not 101",
        ),
        (
            config({"strategy": "MPS", "mpsConfig": {"defaultActiveThreadPercentage": "50"}}),
            "sharing.mpsConfig.defaultActiveThreadPercentage: must be an integer, not string",
        ),
        (
            config({"strategy": "MPS", "mpsConfig": {"defaultPinnedDeviceMemoryLimit": "0"}}),
            "sharing.mpsConfig.defaultPinnedDeviceMemoryLimit: must be a positive quantity",
        ),
        (
            config({"strategy": "MPS", "mpsConfig": {"defaultPinnedDeviceMemoryLimit": "10GB"}}),
            "sharing.mpsConfig.defaultPinnedDeviceMemoryLimit: "
            "quantity '10GB' has an unknown suffix",
        ),
        (
            config(
                {
                    "strategy": "MPS",
                    "mpsConfig": {"defaultPerDevicePinnedMemoryLimit": {"1": "-1Gi"}},
                }
            ),
            "sharing.mpsConfig.defaultPerDevicePinnedMemoryLimit[1]: must be a positive quantity",
        ),
        (
            config(
                {"strategy": "MPS", "mpsConfig": {"defaultPerDevicePinnedMemoryLimit": {"": "1Gi"}}}
            ),
            "sharing.mpsConfig.defaultPerDevicePinnedMemoryLimit[]: "
            "the device key must not be empty",
        ),
        (
            config({"strategy": "TimeSlicing", "timeSlicingConfig": "Long"}),
            "sharing.timeSlicingConfig: must be an object, not string",
        ),
    ],
)
def test_rules_name_the_offending_field(parameters: dict[str, Any], expected: str) -> None:
    found = rejected(parameters)
    assert any(m.startswith(expected) for m in found), found


def test_every_problem_is_reported() -> None:
    found = rejected(
        config(
            {
                "strategy": "MPS",
                "timeSlicingConfig": {"interval": "Fast"},
                "mpsConfig": {"defaultActiveThreadPercentage": 0},
            }
        )
    )
    assert [m.split(":")[0] for m in found] == [
        "sharing.timeSlicingConfig",
        "sharing.timeSlicingConfig.interval",
        "sharing.mpsConfig.defaultActiveThreadPercentage",
    ]


@pytest.mark.parametrize(
    ("api_version", "kind", "expected"),
    [
        (
            "resource.nvidia.com/v1beta1",
            KIND,
            ['apiVersion: unsupported value "resource.nvidia.com/v1beta1"'],
        ),
        (API_VERSION, "MigDeviceConfig", ['kind: unsupported value "MigDeviceConfig"']),
        (None, None, ['apiVersion: unsupported value "None"', 'kind: unsupported value "None"']),
    ],
)
def test_foreign_api_version_or_kind_is_named(
    api_version: str | None, kind: str | None, expected: list[str]
) -> None:
    parameters = {"apiVersion": api_version, "kind": kind}
    with pytest.raises(InvalidInputError) as info:
        decode_gpu_config({k: v for k, v in parameters.items() if v is not None})
    found = [str(e) for e in info.value.errors]
    assert [m.split(":")[0] + ":" + m.split(":")[1] for m in found] == expected
    assert "not a GpuConfig" in str(info.value)
    assert API_VERSION in str(info.value)


def test_parameters_must_be_an_object() -> None:
    with pytest.raises(InvalidInputError, match="must be a JSON object, not list"):
        decode_gpu_config([])  # type: ignore[arg-type]


def test_error_can_be_located_at_the_claim() -> None:
    with pytest.raises(InvalidInputError) as info:
        decode_gpu_config(config({"strategy": "Exclusive"}))
    located = info.value.located(obj="claim default/c")
    assert str(located).startswith("claim default/c: invalid GpuConfig; sharing.strategy:")


def test_models_are_strict_about_unknown_fields_even_when_built_in_code() -> None:
    with pytest.raises(ValueError, match="extra"):
        GpuConfig.model_validate({"apiVersion": API_VERSION, "kind": KIND, "shareing": {}})

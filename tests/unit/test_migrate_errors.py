"""`dra-driver migrate` on bad device-plugin configs: every refusal exits 2 with nothing on
stdout, and its message names the file, the key path and the fix; nothing is silently
dropped."""

from __future__ import annotations

from pathlib import Path

import pytest
from migrate_support import fixture, migrate

from api.errors import ExitCode

CONFIG_MAP_DATA_NOT_TEXT = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: configs}
data:
  broken: 3
"""


def refused(capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, *extra: str) -> str:
    """Migrate ``text`` as a file; assert the refusal; return its message."""
    path = tmp_path / "config.yaml"
    path.write_text(text)
    code, out, err = migrate(capsys, "-f", str(path), *extra)
    assert code == ExitCode.INVALID, err
    assert out == ""
    assert "Traceback" not in err
    assert str(path) in err
    return err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "version: v1\nflags:\n  migStrategyy: none\n",
            [
                'flags.migStrategyy: unknown key "migStrategyy": did you mean "migStrategy"?',
                "remove or correct",
            ],
            id="unknown-key",
        ),
        pytest.param(
            "version: v1\nflags:\n  plugin:\n    passDeviceSpec: true\n",
            ["flags.plugin.passDeviceSpec: unknown key", "passDeviceSpecs"],
            id="unknown-nested-key",
        ),
        pytest.param(
            "version: v1\nflags:\n  failOnInitError: maybe\n",
            ['flags.failOnInitError: must be true or false, not the string "maybe"'],
            id="wrong-type-bool",
        ),
        pytest.param(
            "version: v1\nsharing:\n  timeSlicing:\n    resources:\n"
            "    - {name: nvidia.com/gpu, replicas: four}\n",
            [
                "sharing.timeSlicing.resources[0].replicas: must be an integer, "
                'not the string "four"'
            ],
            id="wrong-type-int",
        ),
        pytest.param(
            "version: v1\nsharing:\n  timeSlicing:\n    resources:\n"
            "    - {name: nvidia.com/gpu, replicas: 0}\n",
            ["sharing.timeSlicing.resources[0].replicas: must be 1 or more, not 0"],
            id="replicas-below-one",
        ),
        pytest.param(
            "version: v1\nsharing:\n  mps:\n    resources:\n    - {name: nvidia.com/gpu}\n",
            ["sharing.mps.resources[0].replicas: required"],
            id="replicas-missing",
        ),
        pytest.param(
            "version: v1\nflags:\n  migStrategy: partial\n",
            ['flags.migStrategy: unsupported value "partial"', '"none", "single", "mixed"'],
            id="unknown-mig-strategy",
        ),
        pytest.param(
            "version: v1\nflags:\n  plugin:\n    deviceListStrategy: [envvar, files]\n",
            ['flags.plugin.deviceListStrategy[1]: unsupported value "files"'],
            id="bad-device-list-strategy",
        ),
        pytest.param(
            "version: v2\n",
            ['version: unsupported value "v2"'],
            id="unknown-version",
        ),
        pytest.param(
            "version: v1\nsharing:\n  timeSlicing:\n    resources:\n"
            "    - {name: nvidia.com/gpu, replicas: 2, devices: [GPU-x]}\n",
            ["sharing.timeSlicing.resources[0].devices[0]: must be a GPU index"],
            id="bad-device-reference",
        ),
        pytest.param(
            "version: v1\nsharing:\n  timeSlicing:\n    resources: []\n",
            ["sharing.timeSlicing.resources: no resources specified"],
            id="no-shared-resources",
        ),
    ],
)
def test_a_bad_key_or_value_is_named_with_its_path(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, expected: list[str]
) -> None:
    err = refused(capsys, tmp_path, text)
    for part in expected:
        assert part in err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "version: v1\nflags:\n  gdsEnabled: true\n",
            ["flags.gdsEnabled: unsupported", "GPUDirect Storage", "set it false"],
            id="gds",
        ),
        pytest.param(
            "version: v1\nflags:\n  mofedEnabled: true\n",
            ["flags.mofedEnabled: unsupported"],
            id="mofed",
        ),
        pytest.param(
            "version: v1\nimex:\n  channelIDs: [0]\n",
            ["imex.channelIDs: unsupported", "IMEX channels"],
            id="imex",
        ),
        pytest.param(
            "version: v1\nflags:\n  deviceDiscoveryStrategy: tegra\n",
            ["flags.deviceDiscoveryStrategy: unsupported", "NVML only"],
            id="tegra",
        ),
        pytest.param(
            "version: v1\nsharing:\n  mps:\n    resources:\n"
            "    - {name: nvidia.com/mig-1g.10gb, replicas: 2}\n",
            ["sharing.mps.resources[0].name", "MPS shares whole GPUs only"],
            id="mps-of-mig",
        ),
        pytest.param(
            "version: v1\nflags:\n  migStrategy: single\nsharing:\n  timeSlicing:\n"
            "    resources:\n    - {name: nvidia.com/mig-1g.10gb, replicas: 2}\n",
            ["migStrategy single advertises no MIG profile by name", "migStrategy: mixed"],
            id="mig-share-without-mixed",
        ),
        pytest.param(
            "version: v1\nsharing:\n  timeSlicing:\n    resources:\n"
            "    - {name: nvidia.com/gpu, replicas: 2}\n"
            "  mps:\n    resources:\n    - {name: nvidia.com/gpu, replicas: 2}\n",
            ["sharing: timeSlicing and mps exclude each other"],
            id="both-sharing-methods",
        ),
    ],
)
def test_a_feature_this_driver_lacks_is_refused_by_name(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, expected: list[str]
) -> None:
    err = refused(capsys, tmp_path, text, "--gpu-memory", "80Gi")
    for part in expected:
        assert part in err


def test_shares_without_the_gpu_memory_are_refused_with_the_fix(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = migrate(capsys, "-f", fixture("mps.yaml"))
    assert code == ExitCode.INVALID
    assert out == ""
    assert "--gpu-memory" in err and "e.g. 80Gi" in err
    assert "sharing.mps.resources[0]" in err


def test_configs_that_give_one_name_two_meanings_are_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = migrate(
        capsys,
        "-f",
        fixture("whole-gpus.yaml"),
        "-f",
        fixture("time-slicing.yaml"),
        "--gpu-memory",
        "80Gi",
    )
    assert code == ExitCode.INVALID
    assert out == ""
    assert "nvidia.com/gpu means one thing in config whole-gpus" in err
    assert "nvidia.com/device-plugin.config=NAME" in err
    # One of them, chosen by the node label, migrates.
    code, _, err = migrate(
        capsys,
        "-f",
        fixture("whole-gpus.yaml"),
        "-f",
        fixture("time-slicing.yaml"),
        "-l",
        "nvidia.com/device-plugin.config=whole-gpus",
    )
    assert code == ExitCode.OK, err


def test_a_node_label_naming_no_config_lists_the_names(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = migrate(
        capsys, "-f", fixture("configmap.yaml"), "-l", "nvidia.com/device-plugin.config=gone"
    )
    assert code == ExitCode.INVALID
    assert "no config of that name" in err and "default, shared, a100-mig" in err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["-l", "no-equals-sign"], "--node-label"),
        (["--mig-profile", "big"], "--mig-profile"),
        (["--gpu-memory", "lots"], "--gpu-memory"),
    ],
)
def test_bad_flags_are_named(
    capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    code, out, err = migrate(capsys, "-f", fixture("mig-mixed.yaml"), *argv)
    assert code == ExitCode.INVALID
    assert out == ""
    assert expected in err


def test_a_configmap_whose_data_is_not_text_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    err = refused(capsys, tmp_path, CONFIG_MAP_DATA_NOT_TEXT)
    assert "configmap configs data.broken" in err


def test_an_object_that_is_no_config_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    err = refused(capsys, tmp_path, "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n")
    assert "neither a device-plugin config" in err


def test_a_partial_carry_over_is_a_warning_not_silence(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "version: v1\nflags:\n  nvidiaDriverRoot: /\n  gfd: {oneshot: true}\n"
        "  plugin: {deviceIDStrategy: index, nvidiaCTKPath: /usr/bin/nvidia-ctk}\n"
        "resources:\n  gpus: [{pattern: '*A100*', name: a100}]\n"
    )
    code, _, err = migrate(capsys, "-f", str(path))
    assert code == ExitCode.OK
    for key in ("flags.gfd", "deviceIDStrategy index", "nvidiaCTKPath", "resources is ignored"):
        assert key in err


@pytest.mark.parametrize(
    ("label", "warned"),
    [
        ("nvidia.com/mig.config=all-balanced", "names no single profile"),
        ("kubernetes.io/hostname=gpu-1", "has no bearing on the migration"),
        ("nvidia.com/mig.config=all-disabled", None),
    ],
)
def test_node_labels_the_migration_cannot_use_are_named(
    capsys: pytest.CaptureFixture[str], label: str, warned: str | None
) -> None:
    code, _, err = migrate(capsys, "-f", fixture("mig-single.yaml"), "-l", label)
    assert code == ExitCode.OK
    if warned is None:
        assert "--node-label" not in err
    else:
        assert f"--node-label {label.partition('=')[0]}" in err and warned in err


def test_the_gpu_memory_has_an_environment_twin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRA_DRIVER_GPU_MEMORY", "40Gi")
    code, out, err = migrate(capsys, "-f", fixture("mps.yaml"))
    assert code == ExitCode.OK, err
    assert "memory: 20Gi" in out


def test_mig_profiles_for_a_config_without_mig_are_named_as_ignored(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = migrate(capsys, "-f", fixture("whole-gpus.yaml"), "--mig-profile", "1g.10gb")
    assert code == ExitCode.OK
    assert "MIG profiles 1g.10gb are ignored: migStrategy none" in err

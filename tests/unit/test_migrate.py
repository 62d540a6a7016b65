"""`dra-driver migrate` on real device-plugin configs: each MIG strategy, time slicing with
and without renameByDefault, MPS and a ConfigMap of named configs.

Each run is checked on the objects it prints (the classes and the names they answer to,
the chart values, each pattern's two forms) and every manifest it prints must pass the
project's own reading (``load_inventory``), as ``kubectl apply`` would judge it.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
import yaml
from migrate_support import (
    FIXTURES,
    by_kind,
    documents,
    fixture,
    inventory_of,
    limits_of,
    migrate,
    request_of,
)

from api.errors import ExitCode
from api.resource_v1 import dump
from dra_cli.main import main
from dra_driver.discovery.mock import MockBackend
from dra_driver.slices import build_slices

DRIVER = "gpu.dra-driver.io"
TYPE = f'device.attributes["{DRIVER}"].type'
PROFILE = f'device.attributes["{DRIVER}"].profile'


def selector(device_class: dict[str, object]) -> str:
    spec = device_class["spec"]
    assert isinstance(spec, dict)
    expression: str = spec["selectors"][0]["cel"]["expression"]
    return expression


def strategy(device_class: dict[str, object]) -> str | None:
    spec = device_class["spec"]
    assert isinstance(spec, dict)
    if "config" not in spec:
        return None
    value: str = spec["config"][0]["opaque"]["parameters"]["sharing"]["strategy"]
    return value


def test_mig_strategy_none_maps_nvidia_gpu_to_whole_gpus(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = migrate(capsys, "-f", fixture("whole-gpus.yaml"))
    assert code == ExitCode.OK, err
    values = documents(out)[0]
    assert values["kubeletPlugin"]["driverRoot"] == "/run/nvidia/driver"
    assert values["kubeletPlugin"]["sharedGpus"] is False
    assert values["kubeletPlugin"]["partitionable"] is False
    assert values["kubeletPlugin"]["nodeSelector"] == {f"{DRIVER}/kubelet-plugin": "true"}
    assert values["deviceClasses"] == {
        "create": True,
        "sharing": False,
        "mig": False,
        "extendedResourceNames": {"gpu": "nvidia.com/gpu", "timeslicing": "", "mps": "", "mig": ""},
    }
    # The chart's whole-GPU class answers to nvidia.com/gpu: the migration makes no class.
    assert (
        by_kind(
            migrate(capsys, "-f", fixture("whole-gpus.yaml"), "--part", "classes")[1], "DeviceClass"
        )
        == {}
    )
    classes = by_kind(out, "DeviceClass")
    assert list(classes) == [DRIVER]
    gpu = classes[DRIVER]
    assert gpu["spec"]["extendedResourceName"] == "nvidia.com/gpu"
    assert selector(gpu) == f'device.driver == "{DRIVER}" && {TYPE} == "gpu"'
    assert strategy(gpu) is None
    templates, pods = by_kind(out, "ResourceClaimTemplate"), by_kind(out, "Pod")
    assert request_of(templates["one-gpu"]) == {"deviceClassName": DRIVER}
    assert request_of(templates["two-gpus"])["count"] == 2
    assert limits_of(pods["one-gpu-extended"]) == {"nvidia.com/gpu": 1}
    assert limits_of(pods["two-gpus-extended"]) == {"nvidia.com/gpu": 2}
    claim_pod = pods["two-gpus-claim"]["spec"]
    assert claim_pod["resourceClaims"] == [{"name": "gpu", "resourceClaimTemplateName": "two-gpus"}]
    # failOnInitError carries over only partly: said on stderr, by name.
    assert "warning:" in err and "flags.failOnInitError" in err


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ([], f'({TYPE} == "gpu" || {TYPE} == "mig")'),
        (
            ["-l", "nvidia.com/mig.config=all-1g.10gb"],
            f'{TYPE} == "mig" && {PROFILE} == "1g.10gb"',
        ),
        (["--mig-profile", "3g.40gb"], f'{TYPE} == "mig" && {PROFILE} == "3g.40gb"'),
    ],
)
def test_mig_strategy_single_maps_nvidia_gpu_to_gpus_or_the_nodes_mig_devices(
    capsys: pytest.CaptureFixture[str], extra: list[str], expected: str
) -> None:
    code, out, err = migrate(capsys, "-f", fixture("mig-single.yaml"), *extra)
    assert code == ExitCode.OK, err
    gpu = by_kind(out, "DeviceClass")[f"nvidia-gpu.{DRIVER}"]
    assert gpu["spec"]["extendedResourceName"] == "nvidia.com/gpu"
    assert selector(gpu) == f'device.driver == "{DRIVER}" && {expected}'
    assert documents(out)[0]["deviceClasses"]["mig"] is True


def test_mig_strategy_mixed_gives_each_profile_its_class(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = migrate(capsys, "-f", fixture("mig-mixed.yaml"), "--mig-profile", "2g.20gb")
    assert code == ExitCode.OK, err
    classes = by_kind(out, "DeviceClass")
    assert [c["spec"]["extendedResourceName"] for c in classes.values()] == [
        "nvidia.com/gpu",
        "nvidia.com/mig-2g.20gb",
        "nvidia.com/mig-1g.10gb",
    ]
    sliced = classes[f"nvidia-mig-1g-10gb.{DRIVER}"]
    assert selector(sliced).endswith(f'{TYPE} == "mig" && {PROFILE} == "1g.10gb"')
    assert strategy(sliced) == "TimeSlicing"
    assert strategy(classes[f"nvidia-mig-2g-20gb.{DRIVER}"]) is None
    pods = by_kind(out, "Pod")
    assert limits_of(pods["mig-1g-10gb-extended"]) == {"nvidia.com/mig-1g.10gb": 1}
    assert "sharing.timeSlicing.resources[0]" in err and "partly" in err


def test_mixed_without_a_known_profile_warns_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = migrate(
        capsys, "-f", fixture("configmap.yaml"), "-l", "nvidia.com/device-plugin.config=a100-mig"
    )
    assert code == ExitCode.OK, err
    assert "migStrategy mixed: no MIG profile known" in err
    assert "--mig-profile" in err


def test_time_slicing_without_rename_keeps_nvidia_gpu_for_the_shares(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = migrate(capsys, "-f", fixture("time-slicing.yaml"), "--gpu-memory", "64Gi")
    assert code == ExitCode.OK, err
    classes = by_kind(out, "DeviceClass")
    assert list(classes) == [f"timeslicing.{DRIVER}"]
    share = classes[f"timeslicing.{DRIVER}"]
    assert share["spec"]["extendedResourceName"] == "nvidia.com/gpu"
    assert strategy(share) == "TimeSlicing"
    values = documents(out)[0]
    assert values["kubeletPlugin"]["sharedGpus"] is True
    # The chart's classes: nvidia.com/gpu moves from the whole-GPU class to time slicing.
    assert values["deviceClasses"]["extendedResourceNames"] == {
        "gpu": "",
        "timeslicing": "nvidia.com/gpu",
        "mps": "",
        "mig": "",
    }
    templates, pods = by_kind(out, "ResourceClaimTemplate"), by_kind(out, "Pod")
    assert request_of(templates["gpu-share"])["capacity"] == {
        "requests": {"compute": "25", "memory": "16Gi"}
    }
    assert limits_of(pods["gpu-share-extended"]) == {"nvidia.com/gpu": 1}
    # Whole GPUs: the chart's class, by its implicit extended resource name.
    assert request_of(templates["one-gpu"]) == {"deviceClassName": DRIVER}
    assert limits_of(pods["one-gpu-extended"]) == {
        f"deviceclass.resource.kubernetes.io/{DRIVER}": 1
    }
    assert "4 replicas) carries over partly" in err


def test_time_slicing_renamed_adds_a_shared_class_beside_whole_gpus(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = migrate(
        capsys, "-f", fixture("time-slicing-renamed.yaml"), "--gpu-memory", "80Gi"
    )
    assert code == ExitCode.OK, err
    classes = by_kind(out, "DeviceClass")
    assert {n: c["spec"]["extendedResourceName"] for n, c in classes.items()} == {
        f"timeslicing.{DRIVER}": "nvidia.com/gpu.shared",
        DRIVER: "nvidia.com/gpu",
    }
    assert strategy(classes[DRIVER]) is None
    pods = by_kind(out, "Pod")
    assert limits_of(pods["gpu-share-extended"]) == {"nvidia.com/gpu.shared": 1}
    assert limits_of(pods["one-gpu-extended"]) == {"nvidia.com/gpu": 1}
    # failRequestsGreaterThanOne has no DRA counterpart: named in the warning.
    assert "nvidia.com/gpu.shared: 2 gets two GPUs" in err


def test_mps_shares_ask_for_half_of_compute_and_memory(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = migrate(capsys, "-f", fixture("mps.yaml"), "--gpu-memory", "40Gi")
    assert code == ExitCode.OK, err
    share = by_kind(out, "DeviceClass")[f"mps.{DRIVER}"]
    assert strategy(share) == "MPS"
    assert share["spec"]["extendedResourceName"] == "nvidia.com/gpu.shared"
    template = by_kind(out, "ResourceClaimTemplate")["gpu-share"]
    assert request_of(template)["capacity"]["requests"] == {"compute": "50", "memory": "20Gi"}


def test_a_configmap_of_named_configs_is_migrated_whole_or_by_node_label(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = migrate(
        capsys, "-f", fixture("configmap.yaml"), "--gpu-memory", "80Gi", "--mig-profile", "1g.10gb"
    )
    assert code == ExitCode.OK, err
    assert set(by_kind(out, "DeviceClass")) == {
        DRIVER,
        f"timeslicing.{DRIVER}",
        f"nvidia-mig-1g-10gb.{DRIVER}",
    }
    assert "config(s) default, shared, a100-mig" in err
    code, out, err = migrate(
        capsys,
        "-f",
        fixture("configmap.yaml"),
        "-l",
        "nvidia.com/device-plugin.config=default",
    )
    assert code == ExitCode.OK, err
    assert set(by_kind(out, "DeviceClass")) == {DRIVER}


def test_a_directory_of_configs_reads_every_file_as_a_mounted_configmap_holds_them(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    shutil.copy(FIXTURES / "whole-gpus.yaml", tmp_path / "default")
    shutil.copy(FIXTURES / "mps.yaml", tmp_path / "mps")
    (tmp_path / "..data").mkdir()
    code, out, err = migrate(capsys, "-f", str(tmp_path), "--gpu-memory", "80Gi")
    assert code == ExitCode.OK, err
    assert "config(s) default, mps" in err
    assert set(by_kind(out, "DeviceClass")) == {DRIVER, f"mps.{DRIVER}"}


CASES = [
    ("whole-gpus.yaml",),
    ("mig-single.yaml", "-l", "nvidia.com/mig.config=all-1g.10gb"),
    ("mig-mixed.yaml", "--mig-profile", "3g.40gb"),
    ("time-slicing.yaml", "--gpu-memory", "80Gi"),
    ("time-slicing-renamed.yaml", "--gpu-memory", "80Gi"),
    ("mps.yaml", "--gpu-memory", "80Gi"),
    ("configmap.yaml", "--gpu-memory", "80Gi", "--mig-profile", "1g.10gb"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_every_manifest_printed_passes_the_projects_own_validation(
    capsys: pytest.CaptureFixture[str], case: tuple[str, ...]
) -> None:
    name, *extra = case
    code, out, err = migrate(capsys, "-f", fixture(name), "--part", "manifests", *extra)
    assert code == ExitCode.OK, err
    inventory = inventory_of(out)
    assert inventory.classes
    assert {t.metadata.name for t in inventory.templates} >= {"one-gpu", "two-gpus"}
    for device_class in inventory.classes.values():
        assert device_class.spec.extended_resource_name


def test_json_and_the_values_part(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = migrate(
        capsys, "-f", fixture("mps.yaml"), "--gpu-memory", "80Gi", "-o", "json"
    )
    assert code == ExitCode.OK, err
    document = json.loads(out)
    assert document["helmValues"]["kubeletPlugin"]["sharedGpus"] is True
    assert [w["pattern"] for w in document["workloads"]] == [
        "one-gpu",
        "two-gpus",
        "gpu-share",
    ]
    assert document["warnings"]
    code, out, err = migrate(
        capsys, "-f", fixture("mps.yaml"), "--gpu-memory", "80Gi", "--part", "values"
    )
    assert code == ExitCode.OK, err
    assert [d.get("kind") for d in documents(out)] == [None]
    code, out, err = migrate(
        capsys, "-f", fixture("mps.yaml"), "--gpu-memory", "80Gi", "--part", "classes"
    )
    assert code == ExitCode.OK, err
    # The classes to apply: the chart makes both of this config's.
    assert documents(out) == []


def test_kubectl_dra_migrate_reads_stdin(capsys: pytest.CaptureFixture[str]) -> None:
    text = (FIXTURES / "whole-gpus.yaml").read_text()
    code, out, err = migrate(capsys, "-f", "-", stdin=text)
    assert code == ExitCode.OK, err
    assert DRIVER in by_kind(out, "DeviceClass")


def _claims_from(template: dict[str, object], count: int) -> list[dict[str, object]]:
    spec = template["spec"]
    assert isinstance(spec, dict)
    return [
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaim",
            "metadata": {"name": f"claim-{i}", "namespace": "default"},
            "spec": spec["spec"],
        }
        for i in range(count)
    ]


def _allocate(
    capsys: pytest.CaptureFixture[str],
    profile: str,
    manifests: str,
    claims: list[dict[str, object]],
) -> tuple[int, list[str]]:
    """Allocate ``claims`` with the printed classes on a mock node's shared, static slices."""
    inventory = MockBackend("node-a", profile).discover()
    slices = build_slices(inventory, partitionable=False, shared_gpus=True)
    classes = [d for d in documents(manifests) if d["kind"] == "DeviceClass"]
    text = yaml.safe_dump_all([dump(s) for s in slices] + classes + claims)
    out = io.StringIO()
    code = main(["allocate", "-f", "-", "-o", "json"], stdin=io.StringIO(text), stdout=out)
    capsys.readouterr()
    if code != ExitCode.OK:
        return code, []
    items = json.loads(out.getvalue())["items"]
    return code, [
        r["device"] for c in items for r in c["status"]["allocation"]["devices"]["results"]
    ]


def test_four_quarter_shares_land_on_one_gpu_and_a_fifth_does_not_fit(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = migrate(
        capsys, "-f", fixture("time-slicing.yaml"), "--gpu-memory", "64Gi", "--part", "manifests"
    )
    assert code == ExitCode.OK, err
    template = by_kind(out, "ResourceClaimTemplate")["gpu-share"]
    code, devices = _allocate(capsys, "1xH100-80GB", out, _claims_from(template, 4))
    assert code == ExitCode.OK
    assert devices == ["gpu-0"] * 4
    code, _ = _allocate(capsys, "1xH100-80GB", out, _claims_from(template, 5))
    assert code == ExitCode.FAILED


def test_a_mixed_profile_claim_gets_a_static_mig_device_of_that_profile(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = migrate(
        capsys, "-f", fixture("mig-mixed.yaml"), "--mig-profile", "2g.20gb", "--part", "manifests"
    )
    assert code == ExitCode.OK, err
    template = by_kind(out, "ResourceClaimTemplate")["mig-2g-20gb"]
    code, devices = _allocate(
        capsys, "1xA100-80GB:mig=3g.40gb/2x2g.20gb", out, _claims_from(template, 2)
    )
    assert code == ExitCode.OK
    assert len(set(devices)) == 2
    assert all("mig" in device for device in devices)
    code, _ = _allocate(capsys, "1xA100-80GB:mig=3g.40gb/2x2g.20gb", out, _claims_from(template, 3))
    assert code == ExitCode.FAILED

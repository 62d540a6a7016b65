"""`dra-driver allocate`, `explain` and `demo`: the DESIGN.md contract, on the examples."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from dra_driver.cli.main import EXIT_INVALID, EXIT_OK, EXIT_UNSATISFIABLE, main

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples"
INVENTORY = str(EXAMPLES / "inventory")


def run(argv: list[str], stdin: str = "") -> tuple[int, str]:
    out = io.StringIO()
    code = main(argv, stdin=io.StringIO(stdin), stdout=out)
    return code, out.getvalue()


def allocated(argv: list[str]) -> list[dict[str, Any]]:
    code, out = run(argv)
    assert code == EXIT_OK, out
    document = json.loads(out)
    assert document["apiVersion"] == "v1"
    assert document["kind"] == "List"
    items: list[dict[str, Any]] = document["items"]
    return items


def devices_of(claim: dict[str, Any]) -> list[tuple[str, str, str]]:
    results = claim["status"]["allocation"]["devices"]["results"]
    return [(r["request"], r["pool"], r["device"]) for r in results]


def node_of(claim: dict[str, Any]) -> list[str]:
    terms = claim["status"]["allocation"]["nodeSelector"]["nodeSelectorTerms"]
    assert len(terms) == 1
    (field,) = terms[0]["matchFields"]
    assert field["key"] == "metadata.name"
    assert field["operator"] == "In"
    values: list[str] = field["values"]
    return values


def test_first_fit_takes_the_first_node_by_name() -> None:
    (claim,) = allocated(["allocate", "-f", INVENTORY, "-f", str(EXAMPLES / "one-gpu")])
    assert claim["metadata"]["name"] == "one-gpu"
    assert devices_of(claim) == [("gpu", "gpu-node-a100", "gpu-0")]
    assert node_of(claim) == ["gpu-node-a100"]
    assert claim["status"]["allocation"]["devices"]["results"][0]["driver"] == "gpu.dra-driver.io"
    # The spec the user wrote comes back untouched.
    written = yaml.safe_load((EXAMPLES / "one-gpu" / "claim.yaml").read_text())
    assert claim["spec"] == written["spec"]


def test_most_capable_prefers_the_h100() -> None:
    argv = [
        "allocate",
        "-f",
        INVENTORY,
        "-f",
        str(EXAMPLES / "one-gpu"),
        "--policy",
        "most-capable",
    ]
    (claim,) = allocated(argv)
    assert devices_of(claim) == [("gpu", "gpu-node-h100", "gpu-0")]


def test_policy_has_an_environment_twin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRA_DRIVER_POLICY", "most-capable")
    (claim,) = allocated(["allocate", "-f", INVENTORY, "-f", str(EXAMPLES / "one-gpu")])
    assert devices_of(claim)[0][1] == "gpu-node-h100"


def test_match_attribute_backtracks_past_a_lone_free_gpu() -> None:
    (claim,) = allocated(["allocate", "-f", INVENTORY, "-f", str(EXAMPLES / "numa-pair")])
    assert devices_of(claim) == [
        ("gpus", "gpu-node-a100", "gpu-4"),
        ("gpus", "gpu-node-a100", "gpu-5"),
    ]


def test_first_available_falls_back_on_a_node_without_hoppers() -> None:
    argv = ["allocate", "-f", INVENTORY, "-f", str(EXAMPLES / "first-available")]
    (claim,) = allocated([*argv, "--node", "gpu-node-a100"])
    assert devices_of(claim) == [("gpu/any", "gpu-node-a100", "gpu-0")]
    (claim,) = allocated([*argv, "--node", "gpu-node-h100"])
    assert devices_of(claim) == [
        ("gpu/hopper-pair", "gpu-node-h100", "gpu-0"),
        ("gpu/hopper-pair", "gpu-node-h100", "gpu-1"),
    ]


def test_first_fit_prefers_the_node_where_the_first_choice_fits() -> None:
    # The scheduler scores feasible nodes by the prioritized list: the H100 node,
    # where "hopper-pair" fits, beats the A100 node that comes first by name.
    argv = ["allocate", "-f", INVENTORY, "-f", str(EXAMPLES / "first-available")]
    (claim,) = allocated(argv)
    assert devices_of(claim) == [
        ("gpu/hopper-pair", "gpu-node-h100", "gpu-0"),
        ("gpu/hopper-pair", "gpu-node-h100", "gpu-1"),
    ]


def test_opaque_config_travels_with_the_allocation() -> None:
    (claim,) = allocated(["allocate", "-f", INVENTORY, "-f", str(EXAMPLES / "time-slicing")])
    (config,) = claim["status"]["allocation"]["devices"]["config"]
    assert config["source"] == "FromClaim"
    assert config["requests"] == ["gpu"]
    assert config["opaque"]["parameters"]["sharing"]["timeSlicingConfig"]["interval"] == "Long"


def test_yaml_output_is_the_same_list() -> None:
    argv = ["allocate", "-f", INVENTORY, "-f", str(EXAMPLES / "one-gpu")]
    code, out = run([*argv, "-o", "yaml"])
    assert code == EXIT_OK
    assert yaml.safe_load(out) == json.loads(run(argv)[1])


def test_unsatisfiable_exits_1_with_nothing_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(["allocate", "-f", INVENTORY, "-f", str(EXAMPLES / "unsatisfiable")])
    assert code == EXIT_UNSATISFIABLE
    assert out == ""
    assert "claim default/nine-gpus" in capsys.readouterr().err


def test_explain_names_every_node_and_the_shortfall() -> None:
    code, out = run(
        ["explain", "-f", INVENTORY, "-f", str(EXAMPLES / "unsatisfiable"), "-o", "json"]
    )
    assert code == EXIT_OK
    text = json.dumps(json.loads(out))
    assert "gpu-node-a100" in text
    assert "gpu-node-h100" in text
    code, table = run(["explain", "-f", INVENTORY, "-f", str(EXAMPLES / "unsatisfiable")])
    assert code == EXIT_OK
    assert "gpu-node-h100" in table
    assert "nine-gpus" in table


def test_stdin_and_kind_list_are_accepted() -> None:
    docs = [
        yaml.safe_load(p.read_text()) for p in sorted((EXAMPLES / "inventory").glob("slice-*.yaml"))
    ]
    docs += list(yaml.safe_load_all((EXAMPLES / "inventory" / "deviceclasses.yaml").read_text()))
    docs.append(yaml.safe_load((EXAMPLES / "one-gpu" / "claim.yaml").read_text()))
    listing = json.dumps({"apiVersion": "v1", "kind": "List", "items": docs})
    code, out = run(["allocate", "-f", "-", "--node", "gpu-node-h100"], stdin=listing)
    assert code == EXIT_OK
    (claim,) = json.loads(out)["items"]
    assert devices_of(claim) == [("gpu", "gpu-node-h100", "gpu-0")]


def test_demo_shows_every_scenario() -> None:
    code, out = run(["demo", "--examples", str(EXAMPLES)])
    assert code == EXIT_OK
    for scenario in ("one-gpu", "numa-pair", "first-available", "time-slicing", "unsatisfiable"):
        assert scenario in out
    assert "gpu-node-h100" in out  # most-capable's choice for one-gpu


# -- bad input: exit 2 (or 1 where upstream treats it as unsatisfiable), never a traceback --

CLASS = """
apiVersion: resource.k8s.io/v1
kind: DeviceClass
metadata: {name: gpu.dra-driver.io}
spec:
  selectors:
  - cel: {expression: 'device.driver == "gpu.dra-driver.io"'}
"""


def claim_yaml(class_name: str = "gpu.dra-driver.io", selector: str | None = None) -> str:
    selectors = (
        f"\n        selectors:\n        - cel: {{expression: '{selector}'}}" if selector else ""
    )
    return f"""
apiVersion: resource.k8s.io/v1
kind: ResourceClaim
metadata: {{name: claim-0, namespace: default}}
spec:
  devices:
    requests:
    - name: gpu
      exactly:
        deviceClassName: {class_name}{selectors}
"""


def slice_yaml(devices: int = 2, version: str = "550.54.15", with_model: bool = True) -> str:
    items = []
    for i in range(devices):
        model = "model: {string: x}, " if with_model or i > 0 else ""
        items.append(
            f"  - {{name: gpu-{i}, attributes: {{{model}driverVersion: {{version: '{version}'}}}}}}"
        )
    body = "\n".join(items)
    return f"""
apiVersion: resource.k8s.io/v1
kind: ResourceSlice
metadata: {{name: node-a-gpus}}
spec:
  driver: gpu.dra-driver.io
  nodeName: node-a
  pool: {{name: node-a, generation: 1, resourceSliceCount: 1}}
  devices:
{body}
"""


def write(tmp_path: Path, name: str, *docs: str) -> str:
    path = tmp_path / name
    path.write_text("---\n".join(docs))
    return str(path)


def stderr_of(capsys: pytest.CaptureFixture[str], tmp_path: Path, expected: int, *docs: str) -> str:
    path = write(tmp_path, "input.yaml", *docs)
    code, out = run(["allocate", "-f", path])
    err = capsys.readouterr().err
    assert code == expected, err
    assert out == ""
    assert "Traceback" not in err
    return err


def test_malformed_yaml_names_the_file_and_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    err = stderr_of(capsys, tmp_path, EXIT_INVALID, "kind: [unclosed\n")
    assert "input.yaml" in err
    assert "line" in err


def test_unknown_kind_is_ignored_with_a_warning(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config_map = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n"
    path = write(tmp_path, "input.yaml", CLASS, slice_yaml(), claim_yaml(), config_map)
    code, out = run(["allocate", "-f", path])
    err = capsys.readouterr().err
    assert code == EXIT_OK
    assert "ConfigMap" in err
    assert "warning" in err
    assert json.loads(out)["items"][0]["status"]["allocation"]


def test_missing_device_class_is_invalid_input(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    err = stderr_of(capsys, tmp_path, EXIT_INVALID, CLASS, slice_yaml(), claim_yaml("nope"))
    assert "claim default/claim-0" in err
    assert "deviceClassName" in err
    assert '"nope"' in err
    assert "input.yaml" in err


def test_cel_that_does_not_compile_is_invalid_input(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = claim_yaml(selector="device.driver ==")
    err = stderr_of(capsys, tmp_path, EXIT_INVALID, CLASS, slice_yaml(), bad)
    assert "claim default/claim-0" in err
    assert "selectors[0].cel.expression" in err
    assert "input.yaml" in err


def test_selector_on_a_missing_attribute_is_unsatisfiable(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # gpu-0 lacks "model": evaluation reaches it first, which upstream treats as a
    # runtime error for the whole allocation.
    selector = 'device.attributes["gpu.dra-driver.io"].model == "x"'
    err = stderr_of(
        capsys,
        tmp_path,
        EXIT_UNSATISFIABLE,
        CLASS,
        slice_yaml(with_model=False),
        claim_yaml(selector=selector),
    )
    assert "no such key" in err
    assert "model" in err


def test_non_semver_version_attribute_is_invalid_input(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    err = stderr_of(
        capsys, tmp_path, EXIT_INVALID, CLASS, slice_yaml(version="550.54"), claim_yaml()
    )
    assert "slice node-a-gpus" in err
    assert "driverVersion" in err


def test_129_devices_in_a_slice_is_invalid_input(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    err = stderr_of(capsys, tmp_path, EXIT_INVALID, CLASS, slice_yaml(devices=129), claim_yaml())
    assert "slice node-a-gpus" in err
    assert "spec.devices" in err
    assert "128" in err


def test_unreadable_file_is_invalid_input(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out = run(["allocate", "-f", str(tmp_path / "missing.yaml")])
    err = capsys.readouterr().err
    assert code == EXIT_INVALID
    assert out == ""
    assert "missing.yaml" in err

"""`dra-driver allocate`, `explain` and `demo`: the DESIGN.md contract, on the examples.

Every feature folder of deploy/examples is allocated offline against the mock
inventory of deploy/examples/inventory, with the outcome its README promises
(the cluster tests apply the same folders to a real cluster).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from bad_input_fixtures import CLASS

from api.errors import ExitCode
from dra_cli.main import main

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples"
INVENTORY = str(EXAMPLES / "inventory")
#: Folders of deploy/examples that are not a feature.
NOT_FEATURES = ("inventory", "demo", "demo-topology")
FEATURES = sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir() and p.name not in NOT_FEATURES)


def run(argv: list[str], stdin: str = "") -> tuple[int, str]:
    out = io.StringIO()
    code = main(argv, stdin=io.StringIO(stdin), stdout=out)
    return code, out.getvalue()


def allocated(argv: list[str]) -> list[dict[str, Any]]:
    code, out = run(argv)
    assert code == ExitCode.OK, out
    document = json.loads(out)
    assert document["apiVersion"] == "v1"
    assert document["kind"] == "List"
    items: list[dict[str, Any]] = document["items"]
    return items


def example(folder: str, *extra: str) -> list[str]:
    """``allocate`` argv for one feature folder with the shared inventory."""
    return ["allocate", "-f", INVENTORY, "-f", str(EXAMPLES / folder), *extra]


def devices_of(claim: dict[str, Any]) -> list[tuple[str, str, str]]:
    results = claim["status"]["allocation"]["devices"]["results"]
    return [(r["request"], r["pool"], r["device"]) for r in results]


def by_name(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {claim["metadata"]["name"]: claim for claim in items}


def node_of(claim: dict[str, Any]) -> list[str]:
    terms = claim["status"]["allocation"]["nodeSelector"]["nodeSelectorTerms"]
    assert len(terms) == 1
    (field,) = terms[0]["matchFields"]
    assert field["key"] == "metadata.name"
    assert field["operator"] == "In"
    values: list[str] = field["values"]
    return values


@pytest.mark.parametrize("folder", FEATURES)
def test_every_feature_folder_has_a_readme_and_no_namespace(folder: str) -> None:
    assert (EXAMPLES / folder / "README.md").is_file()
    files = sorted((EXAMPLES / folder).glob("*.yaml"))
    assert files
    for path in files:
        assert path.read_text().startswith("# "), f"{path}: no leading comment"
        for doc in yaml.safe_load_all(path.read_text()):
            # Applied into the user's namespace of choice (kubectl apply -n NS).
            assert "namespace" not in doc["metadata"], f"{path}: {doc['metadata']['name']}"


@pytest.mark.parametrize(
    ("folder", "expected"),
    [
        # An A100 by product name with at least 40Gi: the A100 node's first GPU.
        ("selectors", {"a100-40gi": [("gpu", "gpu-node-a100", "gpu-0")]}),
        # Two GPUs on one NUMA node: the first two, both on NUMA node 0.
        (
            "constraints",
            {"numa-pair": [("gpus", "gpu-node-a100", "gpu-0"), ("gpus", "gpu-node-a100", "gpu-1")]},
        ),
        # The node where the first choice fits wins over the first node by name.
        ("first-available", {"h100-or-two-a100": [("gpu/h100", "gpu-node-h100", "gpu-0")]}),
        # The shared claim needs 80Gi (an H100); the time-sliced one takes the next GPU there.
        (
            "sharing",
            {
                "shared-gpu": [("gpu", "gpu-node-h100", "gpu-0")],
                "time-sliced-gpu": [("gpu", "gpu-node-h100", "gpu-1")],
            },
        ),
        # Two halves of one shared L4.
        (
            "shared-capacity",
            {
                "half-a": [("gpu", "gpu-node-l4", "gpu-0")],
                "half-b": [("gpu", "gpu-node-l4", "gpu-0")],
            },
        ),
        # Admin access to every A100 of the node, whether in use or not.
        ("admin-access", {"all-a100s": [("gpus", "gpu-node-a100", f"gpu-{i}") for i in range(8)]}),
        # A 1g.10gb MIG placement of the partitionable H100.
        ("mig", {"mig-1g10gb": [("mig", "gpu-node-mig", "gpu-0-mig-1g10gb-19-0")]}),
        # Under first fit, both claims on the first node by name, in file order (binpack.yaml
        # first); the policies' choices are below.
        (
            "placement",
            {
                "capable-gpu": [("gpu", "gpu-node-a100", "gpu-1")],
                "packed-gpu": [("gpu", "gpu-node-a100", "gpu-0")],
            },
        ),
    ],
)
def test_feature_folder_allocates_as_its_readme_says(
    folder: str, expected: dict[str, list[tuple[str, str, str]]]
) -> None:
    claims = by_name(allocated(example(folder)))
    assert {name: devices_of(claim) for name, claim in claims.items()} == expected
    nodes = {expected_devices[0][1] for expected_devices in expected.values()}
    for claim in claims.values():
        assert node_of(claim) == sorted(nodes)


def test_the_selectors_claim_comes_back_untouched() -> None:
    (claim,) = allocated(example("selectors"))
    assert claim["status"]["allocation"]["devices"]["results"][0]["driver"] == "gpu.dra-driver.io"
    written = next(
        doc
        for doc in yaml.safe_load_all((EXAMPLES / "selectors" / "a100-40gi.yaml").read_text())
        if doc["kind"] == "ResourceClaim"
    )
    assert claim["spec"] == written["spec"]


def test_admin_access_is_marked_and_ignores_devices_in_use(tmp_path: Path) -> None:
    in_use = tmp_path / "in-use.yaml"
    in_use.write_text(IN_USE)
    (claim,) = allocated(example("admin-access", "-f", str(in_use)))
    results = claim["status"]["allocation"]["devices"]["results"]
    assert [r["device"] for r in results] == [f"gpu-{i}" for i in range(8)]
    assert all(r["adminAccess"] is True for r in results)
    # Without admin access, "All" fails on the devices the training job holds.
    plain = tmp_path / "plain.yaml"
    plain.write_text(
        (EXAMPLES / "admin-access" / "all-a100s.yaml").read_text().replace("adminAccess: true", "")
    )
    code, out = run(["allocate", "-f", INVENTORY, "-f", str(plain), "-f", str(in_use)])
    assert (code, out) == (ExitCode.FAILED, "")


def test_shared_capacity_gives_each_half_its_share() -> None:
    claims = by_name(allocated(example("shared-capacity")))
    results = [claims[name]["status"]["allocation"]["devices"]["results"][0] for name in claims]
    assert results[0]["shareID"] != results[1]["shareID"]
    for result in results:
        assert result["consumedCapacity"] == {"compute": "50", "memory": "10Gi"}


@pytest.mark.parametrize(
    ("policy", "node"),
    [
        ("first-fit", "gpu-node-a100"),
        # The strongest GPUs: compute capability 9.0 beats the L4's 8.9 and the A100's 8.0.
        ("most-capable", "gpu-node-h100"),
        # Nothing is in use: the node with the fewest free devices, keeping the big ones whole.
        ("binpack", "gpu-node-l4"),
    ],
)
def test_placement_policies_choose_different_nodes(policy: str, node: str) -> None:
    claims = by_name(allocated(example("placement", "--policy", policy)))
    assert sorted(claims) == ["capable-gpu", "packed-gpu"]
    for claim in claims.values():
        assert node_of(claim) == [node]


def test_policy_has_an_environment_twin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRA_DRIVER_POLICY", "most-capable")
    claims = by_name(allocated(example("placement")))
    assert sorted(claims) == ["capable-gpu", "packed-gpu"]
    for claim in claims.values():
        assert node_of(claim) == ["gpu-node-h100"]


IN_USE = """
# A training job holds gpu-0..gpu-2 of the A100 node (NUMA node 0).
apiVersion: resource.k8s.io/v1
kind: ResourceClaim
metadata: {name: training-job, namespace: default}
spec:
  devices:
    requests:
    - name: gpus
      exactly: {deviceClassName: gpu.dra-driver.io, count: 3}
status:
  allocation:
    devices:
      results:
      - {request: gpus, driver: gpu.dra-driver.io, pool: gpu-node-a100, device: gpu-0}
      - {request: gpus, driver: gpu.dra-driver.io, pool: gpu-node-a100, device: gpu-1}
      - {request: gpus, driver: gpu.dra-driver.io, pool: gpu-node-a100, device: gpu-2}
    nodeSelector:
      nodeSelectorTerms:
      - matchFields:
        - {key: metadata.name, operator: In, values: [gpu-node-a100]}
"""


def test_match_attribute_backtracks_past_a_lone_free_gpu(tmp_path: Path) -> None:
    # Only gpu-3 is left on NUMA node 0, so the pair comes from NUMA node 1.
    in_use = tmp_path / "in-use.yaml"
    in_use.write_text(IN_USE)
    (claim,) = allocated(example("constraints", "-f", str(in_use)))
    assert devices_of(claim) == [
        ("gpus", "gpu-node-a100", "gpu-4"),
        ("gpus", "gpu-node-a100", "gpu-5"),
    ]


def test_first_available_falls_back_on_a_node_without_h100s() -> None:
    (claim,) = allocated(example("first-available", "--node", "gpu-node-a100"))
    assert devices_of(claim) == [
        ("gpu/two-a100", "gpu-node-a100", "gpu-0"),
        ("gpu/two-a100", "gpu-node-a100", "gpu-1"),
    ]


def test_opaque_config_travels_with_the_allocation() -> None:
    claim = by_name(allocated(example("sharing")))["time-sliced-gpu"]
    (config,) = claim["status"]["allocation"]["devices"]["config"]
    assert config["source"] == "FromClaim"
    # It names the claim's only request: cleared, as the scheduler does (empty means all).
    assert "requests" not in config
    assert config["opaque"]["parameters"]["sharing"]["timeSlicingConfig"]["interval"] == "Long"


def test_yaml_output_is_the_same_list() -> None:
    argv = example("selectors")
    code, out = run([*argv, "-o", "yaml"])
    assert code == ExitCode.OK
    assert yaml.safe_load(out) == json.loads(run(argv)[1])


def test_unsatisfiable_exits_1_with_nothing_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(example("explain"))
    assert code == ExitCode.FAILED
    assert out == ""
    assert "claim nine-gpus" in capsys.readouterr().err


def test_explain_names_every_node_and_the_shortfall() -> None:
    argv = ["explain", "-f", INVENTORY, "-f", str(EXAMPLES / "explain")]
    code, out = run([*argv, "-o", "json"])
    assert code == ExitCode.OK
    report = json.loads(out)
    nodes = {row["node"] for row in report["nodes"]}
    assert nodes == {"gpu-node-a100", "gpu-node-h100", "gpu-node-l4", "gpu-node-mig"}
    for row in report["nodes"]:
        assert row["claims"][0]["requests"][0]["eligible"] < 9
    code, table = run(argv)
    assert code == ExitCode.OK
    assert "gpu-node-h100" in table
    assert "nine-gpus" in table


def test_stdin_and_kind_list_are_accepted() -> None:
    docs = [
        yaml.safe_load(p.read_text())
        for p in sorted((EXAMPLES / "inventory").glob("slice-*00.yaml"))
    ]
    docs += list(yaml.safe_load_all((EXAMPLES / "inventory" / "deviceclasses.yaml").read_text()))
    docs += [
        doc
        for doc in yaml.safe_load_all((EXAMPLES / "selectors" / "a100-40gi.yaml").read_text())
        if doc["kind"] == "ResourceClaim"
    ]
    listing = json.dumps({"apiVersion": "v1", "kind": "List", "items": docs})
    code, out = run(["allocate", "-f", "-", "--node", "gpu-node-a100"], stdin=listing)
    assert code == ExitCode.OK
    (claim,) = json.loads(out)["items"]
    assert devices_of(claim) == [("gpu", "gpu-node-a100", "gpu-0")]


def test_demo_shows_every_scenario() -> None:
    code, out = run(["demo", "--examples", str(EXAMPLES)])
    assert code == ExitCode.OK
    for scenario in FEATURES:
        assert scenario in out
    rows = [line.split() for line in out.splitlines()]
    assert {row[0] for row in rows if row} & set(NOT_FEATURES) == set()
    placement = {row[1]: row[2] for row in rows if row[0] == "placement"}
    assert placement == {
        "first-fit": "gpu-node-a100",
        "binpack": "gpu-node-l4",
        "most-capable": "gpu-node-h100",
    }


# -- bad input: exit 2 (or 1 where upstream treats it as unsatisfiable), never a traceback --


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
    err = stderr_of(capsys, tmp_path, ExitCode.INVALID, "kind: [unclosed\n")
    assert "input.yaml" in err
    assert "line" in err


def test_unknown_kind_is_ignored_with_a_warning(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config_map = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n"
    path = write(tmp_path, "input.yaml", CLASS, slice_yaml(), claim_yaml(), config_map)
    code, out = run(["allocate", "-f", path])
    err = capsys.readouterr().err
    assert code == ExitCode.OK
    assert "ConfigMap" in err
    assert "warning" in err
    assert json.loads(out)["items"][0]["status"]["allocation"]


def test_missing_device_class_is_invalid_input(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    err = stderr_of(capsys, tmp_path, ExitCode.INVALID, CLASS, slice_yaml(), claim_yaml("nope"))
    assert "claim default/claim-0" in err
    assert "deviceClassName" in err
    assert '"nope"' in err
    assert "input.yaml" in err


def test_cel_that_does_not_compile_is_invalid_input(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = claim_yaml(selector="device.driver ==")
    err = stderr_of(capsys, tmp_path, ExitCode.INVALID, CLASS, slice_yaml(), bad)
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
        ExitCode.FAILED,
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
        capsys, tmp_path, ExitCode.INVALID, CLASS, slice_yaml(version="550.54"), claim_yaml()
    )
    assert "slice node-a-gpus" in err
    assert "driverVersion" in err


def test_129_devices_in_a_slice_is_invalid_input(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    err = stderr_of(
        capsys, tmp_path, ExitCode.INVALID, CLASS, slice_yaml(devices=129), claim_yaml()
    )
    assert "slice node-a-gpus" in err
    assert "spec.devices" in err
    assert "128" in err


def test_unreadable_file_is_invalid_input(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out = run(["allocate", "-f", str(tmp_path / "missing.yaml")])
    err = capsys.readouterr().err
    assert code == ExitCode.INVALID
    assert out == ""
    assert "missing.yaml" in err


def test_a_kind_typo_is_invalid_input_and_lenient_has_an_environment_twin(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    typo = claim_yaml().replace("kind: ResourceClaim", "kind: ResourceClam")
    path = write(tmp_path, "input.yaml", CLASS, slice_yaml(), claim_yaml(), typo)
    code, _ = run(["allocate", "-f", path])
    err = capsys.readouterr().err
    assert code == ExitCode.INVALID
    assert "input.yaml#3" in err
    assert 'did you mean "resource.k8s.io/v1 ResourceClaim"' in err
    monkeypatch.setenv("DRA_DRIVER_LENIENT", "true")
    code, _ = run(["allocate", "-f", path])
    err = capsys.readouterr().err
    assert code == ExitCode.OK
    assert "warning" in err
    assert "ResourceClam" in err

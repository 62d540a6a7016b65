"""deploy/examples/demo, the manifests ``make demo`` applies: valid as the API server and the
scheduler would judge them, and they say what the demo shows. No cluster.

The demo's objects are checked with the project's own decoders and validation
(api.resource_v1, api.validation, api.gpu_config), their CEL selectors are
compiled, and each template's or claim's request is allocated offline against
the mock inventory of deploy/examples/inventory to show it finds the GPU the
demo expects.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from api.gpu_config import decode_gpu_config
from api.resource_v1 import ResourceClaim, ResourceClaimTemplate, parse_object
from api.validation import validate
from dra_driver.allocator import Snapshot, allocate
from dra_driver.cel import compile_selector
from dra_driver.manifest_read import read_documents
from dra_driver.manifests import load_inventory
from e2e.demo_report import container_view, format_table, placed_by

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples"
DEMO = EXAMPLES / "demo"
INVENTORY = EXAMPLES / "inventory"
DRIVER = "gpu.dra-driver.io"
GATE = f"{DRIVER}/placement"
BUSYBOX = "docker.io/local/busybox:dra-e2e"


def _documents() -> list[tuple[Path, dict[str, Any]]]:
    found = []
    for path in sorted(DEMO.glob("*.yaml")):
        found += [(path, d) for d in yaml.safe_load_all(path.read_text()) if d is not None]
    return found


def _by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _, d in _documents() if d["kind"] == kind}


def test_every_file_says_what_it_shows_and_the_folder_has_a_readme() -> None:
    files = sorted(DEMO.glob("*.yaml"))
    assert len(files) >= 4
    for path in files:
        assert path.read_text().startswith("# "), f"{path.name}: no leading comment"
    assert (DEMO / "README.md").is_file()


def test_every_claim_and_template_is_valid_and_its_selectors_compile() -> None:
    checked = 0
    for path, doc in _documents():
        if doc["kind"] not in ("ResourceClaim", "ResourceClaimTemplate"):
            continue
        obj = parse_object(doc, source=str(path))
        assert isinstance(obj, ResourceClaim | ResourceClaimTemplate)
        assert validate(obj) == [], f"{path.name}: {doc['metadata']['name']}"
        spec = obj.spec if isinstance(obj, ResourceClaim) else obj.spec.spec
        assert spec.devices is not None
        for request in spec.devices.requests or []:
            assert request.exactly is not None
            for selector in request.exactly.selectors or []:
                assert selector.cel is not None
                compile_selector(selector.cel.expression)
        for config in spec.devices.config or []:
            assert config.opaque is not None and config.opaque.driver == DRIVER
            decode_gpu_config(config.opaque.parameters)
        checked += 1
    assert checked == 4  # two templates, the shared claim, the time-sliced claim


def test_pods_use_the_local_busybox_and_only_claims_of_the_folder() -> None:
    claims, templates = _by_kind("ResourceClaim"), _by_kind("ResourceClaimTemplate")
    pods = _by_kind("Pod")
    assert sorted(pods) == [
        "controller-placed",
        "scheduler-placed",
        "shared-a",
        "shared-b",
        "time-sliced",
    ]
    namespaces = {
        d["metadata"].get("namespace") for _, d in _documents() if d["kind"] != "Namespace"
    }
    assert namespaces == set(_by_kind("Namespace"))
    for name, pod in pods.items():
        spec = pod["spec"]
        (container,) = spec["containers"]
        assert container["image"] == BUSYBOX and container["imagePullPolicy"] == "Never"
        used = {c["name"] for c in container["resources"]["claims"]}
        assert used == {c["name"] for c in spec["resourceClaims"]}, name
        for entry in spec["resourceClaims"]:
            assert (
                entry.get("resourceClaimName") in claims
                or entry.get("resourceClaimTemplateName") in templates
            ), f"pod {name}: {entry} names no claim or template of the folder"
        # The container prints the markers the demo reads its view from.
        assert "--- dev" in container["command"][-1] and "--- end" in container["command"][-1]


def test_only_the_controllers_pod_is_gated_and_it_asks_for_most_capable() -> None:
    pods = _by_kind("Pod")
    gated = {n for n, p in pods.items() if p["spec"].get("schedulingGates")}
    assert gated == {"controller-placed"}
    pod = pods["controller-placed"]
    assert pod["spec"]["schedulingGates"] == [{"name": GATE}]
    assert pod["metadata"]["annotations"] == {f"{DRIVER}/policy": "most-capable"}
    users = [
        n
        for n, p in pods.items()
        for c in p["spec"]["resourceClaims"]
        if c.get("resourceClaimName") == "shared-gpu"
    ]
    assert sorted(users) == ["shared-a", "shared-b"]


def _claim_from(doc: dict[str, Any]) -> dict[str, Any]:
    """A pending ResourceClaim with the spec of a claim or a template, in namespace default."""
    spec = doc["spec"]["spec"] if doc["kind"] == "ResourceClaimTemplate" else doc["spec"]
    name = doc["metadata"]["name"]
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }


def _allocate(doc: dict[str, Any], policy: str, tmp_path: Path) -> tuple[str, list[str]]:
    claim_file = tmp_path / "claim.yaml"
    claim_file.write_text(yaml.safe_dump(_claim_from(doc)))
    inventory = load_inventory(read_documents([str(INVENTORY), str(claim_file)], sys.stdin))
    snapshot = Snapshot.build(
        slices=inventory.slices,
        classes=list(inventory.classes.values()),
        claims=[],
        nodes=inventory.nodes,
    )
    result = allocate(snapshot, inventory.pending_claims, policy=policy)
    devices = [
        r.device for a in result.results for r in (a.devices.results if a.devices else None) or []
    ]
    return result.node or "", devices


@pytest.mark.parametrize(
    ("kind", "name", "policy", "node"),
    [
        # The scheduler's pod: an A100 by product name, whatever the policy.
        ("ResourceClaimTemplate", "one-a100", "first-fit", "gpu-node-a100"),
        ("ResourceClaimTemplate", "one-a100", "most-capable", "gpu-node-a100"),
        # The controller's pod: any GPU; most-capable picks the H100s, first fit would not.
        ("ResourceClaimTemplate", "any-gpu", "most-capable", "gpu-node-h100"),
        ("ResourceClaimTemplate", "any-gpu", "first-fit", "gpu-node-a100"),
        # The shared claim: at least 80Gi, which only the H100s have.
        ("ResourceClaim", "shared-gpu", "first-fit", "gpu-node-h100"),
    ],
)
def test_requests_find_the_gpus_the_demo_shows(
    kind: str, name: str, policy: str, node: str, tmp_path: Path
) -> None:
    chosen, devices = _allocate(_by_kind(kind)[name], policy, tmp_path)
    assert chosen == node
    assert len(devices) == 1


def test_container_view_keeps_the_gpu_nodes_and_the_gpu_environment() -> None:
    log = "\n".join(
        [
            "--- dev",
            "null",
            "nvidia1",
            "nvidiactl",
            "--- env",
            "HOME=/root",
            "NVIDIA_VISIBLE_DEVICES=void",
            "DRA_GPU_1_UUID=GPU-1",
            "DRA_GPU_1_SHARING_STRATEGY=TimeSlicing",
            "DRA_GPU_1_TIME_SLICE_INTERVAL=Long",
            "DRA_GPU_1_OTHER=x",
            "--- end",
        ]
    )
    assert container_view(log) == [
        "/dev: nvidia1 nvidiactl",
        "DRA_GPU_1_SHARING_STRATEGY=TimeSlicing",
        "DRA_GPU_1_TIME_SLICE_INTERVAL=Long",
        "DRA_GPU_1_UUID=GPU-1",
    ]
    assert container_view("--- dev\nnull\n--- env\nHOME=/\n--- end") == []


def test_placed_by_reads_the_controllers_annotation() -> None:
    allocated: dict[str, Any] = {"status": {"allocation": {"devices": {"results": []}}}}
    by_controller = {
        "metadata": {"annotations": {f"{DRIVER}/placed-for": "uid-1"}},
        **allocated,
    }
    assert placed_by(by_controller, DRIVER) == "controller"
    assert placed_by(allocated, DRIVER) == "scheduler"
    assert placed_by({"metadata": {}}, DRIVER) == "-"


def test_format_table_pads_columns_and_stacks_multi_line_cells() -> None:
    table = format_table(("A", "BB", "C"), [(("x",), ("1", "22"), ("end",))])
    assert table.splitlines() == ["A  BB  C", "x  1   end", "   22"]

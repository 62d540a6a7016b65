"""``dra-driver allocate`` / ``explain`` on a Pod asking for extended resources: the
claim the scheduler would make comes out allocated and explained by name; nodes a device
plugin serves are no candidates; bad quantities are exit 2 naming the pod and the field."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from extended_resource_fixtures import (
    GPU,
    container,
    gpu_class,
    gpu_node,
    pending_claim,
    pod,
    run,
)

from api.errors import ExitCode
from dra_cli.main import main

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples"


def allocated(*objects: Any, argv: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    code, out = run(["allocate", *argv], *objects)
    assert code == ExitCode.OK
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def placement(item: dict[str, Any]) -> tuple[str, list[tuple[str, str]]]:
    """(node, [(request, device)]) of an allocated claim."""
    allocation = item["status"]["allocation"]
    (term,) = allocation["nodeSelector"]["nodeSelectorTerms"]
    (node,) = term["matchFields"][0]["values"]
    return node, [(r["request"], r["device"]) for r in allocation["devices"]["results"]]


def test_the_example_allocates_two_gpus_of_the_first_node_as_its_readme_says() -> None:
    out = io.StringIO()
    argv = [
        "allocate",
        "-f",
        str(EXAMPLES / "inventory"),
        "-f",
        str(EXAMPLES / "extended-resources"),
    ]
    assert main(argv, stdout=out) == ExitCode.OK
    (item,) = json.loads(out.getvalue())["items"]
    assert item["metadata"]["generateName"] == "two-gpus-extended-resources-"
    assert item["spec"]["devices"]["requests"][0]["exactly"] == {
        "deviceClassName": "gpu.dra-driver.io",
        "allocationMode": "ExactCount",
        "count": 2,
    }
    assert placement(item) == (
        "gpu-node-a100",
        [("container-0-request-0", "gpu-0"), ("container-0-request-0", "gpu-1")],
    )


def test_a_device_plugin_node_is_skipped_for_the_next_one() -> None:
    (item,) = allocated(
        gpu_class(),
        gpu_node("node-a", 4, allocatable={GPU: "4"}),
        gpu_node("node-b", 4),
        pod("p", container("main", {GPU: 2})),
    )
    assert placement(item)[0] == "node-b"


def test_when_a_device_plugin_serves_every_node_the_reason_names_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out = run(
        ["allocate"],
        gpu_class(),
        gpu_node("node-a", 4, allocatable={GPU: "4"}),
        pod("p", container("main", {GPU: 2})),
    )
    assert code == ExitCode.FAILED
    assert out == ""
    err = capsys.readouterr().err
    assert "claim default/p-extended-resources-" in err
    assert "a device plugin serves nvidia.com/gpu on this node" in err


def test_explain_names_the_device_plugin_node_and_explains_the_claim_by_name() -> None:
    code, out = run(
        ["explain"],
        gpu_class(),
        gpu_node("node-a", 4, allocatable={GPU: "4"}),
        gpu_node("node-b", 1),
        pod("p", container("main", {GPU: 2})),
    )
    assert code == ExitCode.OK
    assert "node-a: not a candidate: a device plugin serves nvidia.com/gpu" in out
    assert "node-b: does not fit (shortfall 1)" in out
    row = next(line for line in out.splitlines() if line.startswith("node-b"))
    assert "default/p-extended-resources-" in row
    assert "container-0-request-0" in row
    code, out = run(
        ["explain", "-o", "json"],
        gpu_class(),
        gpu_node("node-a", 4, allocatable={GPU: "4"}),
        gpu_node("node-b", 1),
        pod("p", container("main", {GPU: 2})),
    )
    report = json.loads(out)
    (claim,) = report["claims"]
    assert claim.startswith("claim default/p-extended-resources-")
    excluded = {n["node"]: n["excluded"] for n in report["nodes"]}
    assert excluded["node-b"] is None
    assert "device plugin" in excluded["node-a"]


def test_an_explicit_claim_and_the_extended_resource_share_one_node() -> None:
    items = allocated(
        gpu_class(),
        gpu_node("node-a", 2),
        gpu_node("node-b", 4),
        pending_claim("explicit", 1),
        pod(
            "p",
            container("main", {GPU: 2}),
            resourceClaims=[{"name": "extra", "resourceClaimName": "explicit"}],
        ),
    )
    assert [i["metadata"]["name"][:21] for i in items] == ["explicit", "p-extended-resources-"]
    nodes = {placement(i)[0] for i in items}
    assert nodes == {"node-b"}
    devices = [d for i in items for _, d in placement(i)[1]]
    assert len(set(devices)) == 3


@pytest.mark.parametrize(
    ("resources", "path", "message"),
    [
        ({"limits": {GPU: "1.5"}}, "limits[nvidia.com/gpu]", "must be a whole number"),
        ({"limits": {GPU: -1}}, "limits[nvidia.com/gpu]", "greater than or equal to 0"),
        (
            {"limits": {GPU: 2}, "requests": {GPU: 1}},
            "requests[nvidia.com/gpu]",
            "must be equal to the nvidia.com/gpu limit of 2",
        ),
        ({"requests": {GPU: 1}}, "limits[nvidia.com/gpu]", "a limit for nvidia.com/gpu"),
        (
            {"limits": {"deviceclass.resource.kubernetes.io/gpu": "500m"}},
            "limits[deviceclass.resource.kubernetes.io/gpu]",
            "must be a whole number",
        ),
    ],
)
def test_bad_extended_resource_quantities_are_exit_2_naming_the_pod_and_field(
    resources: dict[str, Any], path: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = pod("p", {"name": "main", "image": "busybox:1.37", "resources": resources})
    code, out = run(["allocate"], gpu_class(), bad)
    assert code == ExitCode.INVALID
    assert out == ""
    err = capsys.readouterr().err
    assert "pod default/p" in err
    assert f"spec.containers[0].resources.{path}" in err
    assert message in err


def test_an_unknown_pod_field_is_exit_2_and_lenient_reads_past_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    typo = pod("p", container("main", {GPU: 1}), nodeSelecter={"a": "b"})
    code, _ = run(["allocate"], gpu_class(), gpu_node("node-a", 1), typo)
    assert code == ExitCode.INVALID
    assert "spec.nodeSelecter: unknown field" in capsys.readouterr().err
    code, out = run(["allocate", "--lenient"], gpu_class(), gpu_node("node-a", 1), typo)
    assert code == ExitCode.OK
    assert len(json.loads(out)["items"]) == 1

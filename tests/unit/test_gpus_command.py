"""``dra-driver gpus``: every GPU of the driver, who holds it and what is free, from one
list per resource of each cluster (the in-memory API server plays the clusters)."""

from __future__ import annotations

import argparse
import io
import json
from datetime import datetime, timedelta
from typing import Any

import pytest
import yaml

from api.resource_v1 import DeviceTaint, ResourceClaim, ResourceSlice, dump
from dra_cli.gpus import add_gpus_arguments, run_gpus
from dra_driver.discovery.mock import MockBackend
from dra_driver.slices import build_slices
from tests.fakes.cluster import FakeCluster

DRIVER = "gpu.dra-driver.io"
MIG = "gpu-1-mig-1g10gb-19-0"


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_gpus_arguments(parser)
    return parser.parse_args(list(argv))


def _claim(name: str, pool: str, device: str, *, share: str | None = None) -> dict[str, Any]:
    result: dict[str, Any] = {"request": "gpu", "driver": DRIVER, "pool": pool, "device": device}
    if share:
        result["shareID"] = share
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {
            "name": name,
            "namespace": "team-a",
            "creationTimestamp": "2026-12-07T10:00:00Z",
        },
        "spec": {"devices": {"requests": []}},
        "status": {
            "allocation": {"devices": {"results": [result]}},
            "reservedFor": [{"resource": "pods", "name": f"{name}-pod", "uid": "u"}],
        },
    }


def _cluster(*, taint: bool = False) -> FakeCluster:
    cluster = FakeCluster()
    h100 = MockBackend("node-a", "2xH100-80GB").discover()
    l4 = MockBackend("node-b", "2xL4").discover()
    slices = build_slices(h100, driver_name=DRIVER) + build_slices(
        l4, driver_name=DRIVER, shared_gpus=True
    )
    if taint:
        tainted = slices[1].spec.devices[0]  # type: ignore[index]
        tainted.taints = [DeviceTaint(key=f"{DRIVER}/xid", value="79", effect="NoSchedule")]
    for slice_ in slices:
        cluster.create("resourceslices", dump(slice_))
    other = dump(build_slices(h100, driver_name="other.example.com")[1])
    other["metadata"]["name"] = "other-slice"
    cluster.create("resourceslices", other)
    for name, labels in (("node-a", {"gpu": "h100"}), ("node-b", {"gpu": "l4"})):
        cluster.create(
            "nodes",
            {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}},
        )
    cluster.create("resourceclaims", _claim("whole", "node-a", "gpu-0"))
    cluster.create("resourceclaims", _claim("slice", "node-a", MIG))
    cluster.create("resourceclaims", _claim("half-1", "node-b", "gpu-0", share="s1"))
    cluster.create("resourceclaims", _claim("half-2", "node-b", "gpu-0", share="s2"))
    return cluster


def _json(*argv: str, clients: dict[str | None, Any] | None = None) -> tuple[int, Any]:
    out = io.StringIO()
    code = run_gpus(_args(*argv, "-o", "json"), out=out, clients=clients or {None: _cluster()})
    return code, json.loads(out.getvalue()) if out.getvalue() else None


def test_each_gpu_with_its_holders_sharing_and_totals() -> None:
    cluster = _cluster()
    created = cluster.get("resourceclaims", "whole", namespace="team-a")["metadata"][
        "creationTimestamp"
    ]
    code, doc = _json(clients={None: cluster})
    assert code == 0
    rows = {(g["node"], g["device"]): g for g in doc["gpus"]}
    assert sorted(rows) == [
        ("node-a", "gpu-0"),
        ("node-a", "gpu-1"),
        ("node-b", "gpu-0"),
        ("node-b", "gpu-1"),
    ]
    whole = rows[("node-a", "gpu-0")]
    assert whole["sharing"] == "exclusive" and whole["product"].startswith("NVIDIA H100")
    assert whole["holders"] == [
        {
            "claim": "team-a/whole",
            "pods": ["whole-pod"],
            "created": created,
            "what": "gpu",
        }
    ]
    mig = rows[("node-a", "gpu-1")]
    assert mig["sharing"] == "mig 1g.10gb x1"
    assert mig["holders"][0]["what"] == f"mig 1g.10gb ({MIG})" and not mig["free"]
    shared = rows[("node-b", "gpu-0")]
    assert shared["sharing"] == "2 share(s)"
    assert [h["claim"] for h in shared["holders"]] == ["team-a/half-1", "team-a/half-2"]
    assert rows[("node-b", "gpu-1")]["free"] is True
    assert doc["totals"]["node"] == {
        "node-a": {"gpus": 2, "free": 0},
        "node-b": {"gpus": 2, "free": 1},
    }
    assert doc["totals"]["product"]["NVIDIA L4"] == {"gpus": 2, "free": 1}
    assert doc["errors"] == []


def test_one_list_per_resource_and_no_other_call() -> None:
    cluster = _cluster()
    cluster.calls.clear()
    run_gpus(_args("-l", "gpu=l4"), out=io.StringIO(), clients={None: cluster})
    assert sorted((c.verb, c.resource) for c in cluster.calls) == [
        ("list", "nodes"),
        ("list", "resourceclaims"),
        ("list", "resourceslices"),
    ]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--free"], [("node-b", "gpu-1")]),
        (["--node", "node-b"], [("node-b", "gpu-0"), ("node-b", "gpu-1")]),
        (["-l", "gpu=h100"], [("node-a", "gpu-0"), ("node-a", "gpu-1")]),
    ],
)
def test_filters(argv: list[str], expected: list[tuple[str, str]]) -> None:
    _, doc = _json(*argv)
    assert [(g["node"], g["device"]) for g in doc["gpus"]] == expected


def test_the_table_is_aligned_like_kubectls_with_totals() -> None:
    out = io.StringIO()
    run_gpus(_args(), out=out, clients={None: _cluster(taint=True)})
    lines = out.getvalue().splitlines()
    header = lines[0].split()
    assert header == [
        "NODE",
        "DEVICE",
        "PRODUCT",
        "MEMORY",
        "SHARING",
        "HEALTH",
        "CLAIM",
        "PODS",
        "AGE",
    ]
    claim_column = lines[0].index("CLAIM")
    assert all(line[claim_column - 1] == " " for line in lines[1:6])
    assert any("gpu.dra-driver.io/xid=79:NoSchedule" in line for line in lines)
    assert "<free>" in out.getvalue()
    assert "nodes: node-a 0/2 free; node-b 1/2 free" in lines


def test_the_age_column_counts_from_the_claim() -> None:
    from dra_driver.gpu_view import gpu_rows, render_table

    cluster = _cluster()
    created = cluster.get("resourceclaims", "whole", namespace="team-a")["metadata"][
        "creationTimestamp"
    ]
    rows = gpu_rows(
        [ResourceSlice.model_validate(s) for s in cluster.objects("resourceslices")],
        [ResourceClaim.model_validate(c) for c in cluster.objects("resourceclaims")],
        driver_name=DRIVER,
    )
    now = datetime.fromisoformat(created.replace("Z", "+00:00")) + timedelta(hours=2, minutes=30)
    text = render_table(rows, now=now)
    assert any(
        "team-a/whole" in line and line.rstrip().endswith("2h") for line in text.splitlines()
    )


def test_several_clusters_get_a_column_and_a_bad_one_is_one_error_row() -> None:
    down = FakeCluster()
    down.fail("list", "resourceslices", 0, times=5)
    clients: dict[str | None, Any] = {"prod": _cluster(), "lab": down}
    out = io.StringIO()
    code = run_gpus(_args("--context", "prod", "--context", "lab"), out=out, clients=clients)
    assert code == 0
    lines = out.getvalue().splitlines()
    assert lines[0].split()[0] == "CLUSTER"
    assert any(line.startswith("lab") and "<error:" in line for line in lines)
    assert "clusters: prod 1/4 free" in lines

    code, doc = _json("--context", "prod", "--context", "lab", clients=clients)
    assert {g["cluster"] for g in doc["gpus"]} == {"prod"}
    assert [e["cluster"] for e in doc["errors"]] == ["lab"]


def test_no_cluster_that_can_be_read_is_exit_1() -> None:
    down = FakeCluster()
    down.fail("list", "resourceslices", 0)
    code, _ = _json(clients={None: down})
    assert code == 1


def test_yaml_is_the_json_document() -> None:
    # One cluster for both: the fake stamps creationTimestamp when a claim is created.
    cluster = _cluster()
    out = io.StringIO()
    run_gpus(_args("-o", "yaml"), out=out, clients={None: cluster})
    _, doc = _json(clients={None: cluster})
    assert yaml.safe_load(out.getvalue()) == doc


def test_fragmentation_per_cluster_and_node_in_json_and_table() -> None:
    _, doc = _json("--node", "node-b")
    (found,) = doc["fragmentation"]
    assert found["cluster"] is None
    # The whole cluster, whatever --node shows: node-a's GPUs are both taken (one whole, one
    # by a MIG device), node-b's gpu-1 is free beside a shared gpu-0.
    assert found["total"]["largestGpuRequest"] == 1
    assert found["total"]["ratio"]["gpu"] == 1.0
    assert found["nodes"]["node-a"]["migFree"]["3g.40gb"] == 1
    assert found["total"]["migProfileNodes"]["7g.80gb"] == 0

    out = io.StringIO()
    run_gpus(_args(), out=out, clients={None: _cluster()})
    lines = out.getvalue().splitlines()
    (line,) = [x for x in lines if x.startswith("fragmentation: ")]
    assert line.startswith("fragmentation: gpu 1.00 (largest request 1 of 1 free), mig 1.00 (")
    assert "3g.40gb on 1 node(s)" in line
    # node-b: the shares on gpu-0 consume no memory here, so half the free memory is stranded.
    assert (
        "fragmentation by node: node-a gpu 0.00 mig 1.00 share 0.00; "
        "node-b gpu 1.00 mig 0.00 share 0.50" in lines
    )


def test_several_clusters_each_get_their_fragmentation() -> None:
    down = FakeCluster()
    down.fail("list", "resourceslices", 0, times=5)
    clients: dict[str | None, Any] = {"prod": _cluster(), "lab": down}
    out = io.StringIO()
    run_gpus(_args("--context", "prod", "--context", "lab"), out=out, clients=clients)
    lines = out.getvalue().splitlines()
    assert any(line.startswith("fragmentation prod: gpu 1.00") for line in lines)
    assert any(line.startswith("fragmentation by node prod: node-a") for line in lines)
    assert not any(line.startswith("fragmentation lab") for line in lines)
    _, doc = _json("--context", "prod", "--context", "lab", clients=clients)
    assert [f["cluster"] for f in doc["fragmentation"]] == ["prod"]


def test_a_kubeconfig_that_cannot_be_loaded_is_named_with_the_fix(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from dra_cli.main import main

    missing = tmp_path / "no-such-kubeconfig"
    assert main(["gpus", "--kubeconfig", str(missing)], prog="kubectl dra") == 1
    err = capsys.readouterr().err
    assert err.startswith("kubectl dra: error: ")
    assert f"kubeconfig {missing}" in err and "--kubeconfig or KUBECONFIG" in err

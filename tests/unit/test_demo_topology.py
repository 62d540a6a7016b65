"""``python -m e2e.demo --machine NAME`` (``make demo DEMO_MACHINE=NAME``): its command line,
the table of what each mock machine should do with deploy/examples/demo-topology (checked
here against the allocator itself), the checks the demo makes of what it sees, and its
table with each device's NVLink island and PCIe root. No cluster.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from api.errors import UnsatisfiableError
from api.resource_v1 import DeviceClass, ResourceClaim, ResourceClaimStatus, dump, parse_object
from dra_driver.allocator import Snapshot, allocate
from dra_driver.discovery.mock import MockBackend
from dra_driver.discovery.mock_machines import MOCK_MACHINES
from dra_driver.slices import build_slices
from e2e import demo
from e2e.demo_report import format_table
from e2e.demo_topology import (
    HEADER,
    SCENES,
    Expected,
    TopologyRow,
    awaiting,
    contradictions,
    device_attributes,
    machine_name,
    scene_documents,
    unmatched_constraints,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples"
SCENE = EXAMPLES / "demo-topology"
NODE = "127.0.0.1"


def _scene() -> list[dict[str, Any]]:
    return [
        d
        for path in sorted(SCENE.glob("*.yaml"))
        for d in yaml.safe_load_all(path.read_text())
        if isinstance(d, dict)
    ]


# --- the command line -------------------------------------------------------------------


def test_the_default_run_names_no_machine() -> None:
    args = demo.build_parser().parse_args([])
    assert args.machine is None and not args.keep_logs
    assert demo.Demo(keep_logs=False).profile == demo.MOCK_PROFILE


def test_a_machine_is_picked_by_name_and_runs_as_the_plugins_mock_profile() -> None:
    args = demo.build_parser().parse_args(["--machine", "pcie-4xL40S"])
    assert args.machine == "pcie-4xL40S"
    assert demo.Demo(keep_logs=False, machine=args.machine).profile == "pcie-4xL40S"


def test_an_unknown_machine_is_a_usage_error_that_lists_the_machines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        demo.build_parser().parse_args(["--machine", "dgx-a100"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "unknown mock machine 'dgx-a100'" in err
    assert "dgx-h100, pairs-4xA100, pcie-4xL40S, rack-4xH100" in err
    with pytest.raises(ValueError, match="the machines are: dgx-h100"):
        machine_name("")


# --- the table of expectations ------------------------------------------------------------


def test_every_mock_machine_has_a_scene_and_every_scene_pod_is_in_the_folder() -> None:
    assert set(SCENES) == set(MOCK_MACHINES)
    pods = {d["metadata"]["name"] for d in _scene() if d["kind"] == "Pod"}
    for machine, expected in SCENES.items():
        assert {e.pod for e in expected} <= pods, machine
        for e in expected:
            assert e.runs == (not e.reason), f"{machine}: {e.pod}: a refusal needs its reason"
    # The PCIe-only box refuses an island pair; every other machine runs every pod.
    assert [e.pod for e in SCENES["pcie-4xL40S"] if not e.runs] == ["island-pair-a"]
    assert all(e.runs for m, exp in SCENES.items() if m != "pcie-4xL40S" for e in exp)


def test_scene_documents_keep_the_objects_and_only_the_machines_pods() -> None:
    docs = scene_documents(_scene(), "pairs-4xA100")
    kinds = [d["kind"] for d in docs]
    assert kinds.count("Namespace") == 1 and kinds.count("ResourceClaimTemplate") == 3
    assert sorted(d["metadata"]["name"] for d in docs if d["kind"] == "Pod") == [
        "island-pair-a",
        "island-pair-b",
    ]
    with pytest.raises(ValueError, match="island-quad of dgx-h100 not in the scene"):
        scene_documents([d for d in _scene() if d["metadata"]["name"] != "island-quad"], "dgx-h100")


def test_the_scene_pods_are_gated_and_ask_for_the_topology_policy() -> None:
    for doc in _scene():
        if doc["kind"] == "Pod":
            assert doc["spec"]["schedulingGates"] == [{"name": "gpu.dra-driver.io/placement"}]
            assert doc["metadata"]["annotations"] == {"gpu.dra-driver.io/policy": "topology"}
        assert doc["kind"] == "Namespace" or (doc["metadata"]["namespace"] == "dra-demo-topology")


def _templates() -> dict[str, dict[str, Any]]:
    return {
        d["metadata"]["name"]: d["spec"]["spec"]
        for d in _scene()
        if d["kind"] == "ResourceClaimTemplate"
    }


def _pod_claim(pod: str) -> ResourceClaim:
    (doc,) = [d for d in _scene() if d["kind"] == "Pod" and d["metadata"]["name"] == pod]
    (entry,) = doc["spec"]["resourceClaims"]
    return ResourceClaim.model_validate(
        {
            "metadata": {"name": f"{pod}-gpus", "namespace": "dra-demo-topology"},
            "spec": _templates()[entry["resourceClaimTemplateName"]],
        }
    )


def _classes() -> list[DeviceClass]:
    path = EXAMPLES / "inventory" / "deviceclasses.yaml"
    found = [parse_object(d, source=str(path)) for d in yaml.safe_load_all(path.read_text())]
    return [c for c in found if isinstance(c, DeviceClass)]


@pytest.mark.parametrize("machine", sorted(SCENES))
def test_the_allocator_does_what_the_table_expects_on_each_machine(machine: str) -> None:
    """The controller's allocator, under the ``topology`` policy, on the plugin's slices of
    the machine: the pods expected to run fit together, each claim keeping its constraint;
    a refused pod is refused with its reason before and after the others took their GPUs."""
    slices = build_slices(MockBackend(NODE, machine).discover(), driver_name="gpu.dra-driver.io")
    snapshot = Snapshot.build(slices=slices, classes=_classes(), claims=[], nodes=[])
    attributes = device_attributes([dump(s) for s in slices])

    def refusal(e: Expected) -> None:
        with pytest.raises(UnsatisfiableError) as refused:
            allocate(snapshot, [_pod_claim(e.pod)], policy="topology")
        said = " ".join(refused.value.reasons.values())
        for text in e.reason:
            assert text in said, said

    for e in SCENES[machine]:
        if not e.runs:
            refusal(e)
    for e in SCENES[machine]:
        if e.runs:
            claim = _pod_claim(e.pod)
            found = allocate(snapshot, [claim], policy="topology")
            held = claim.model_copy()
            held.status = ResourceClaimStatus(allocation=found.results[0])
            snapshot.add_allocated(held)
            assert unmatched_constraints(dump(held), attributes) == [], e.pod
    for e in SCENES[machine]:
        if not e.runs:
            refusal(e)


# --- what the demo checks of the cluster ----------------------------------------------------

PAIR = Expected("island-pair-a", runs=True)
REFUSED = Expected("island-pair-b", runs=False, reason=("nvlinkIsland", "offers is 1"))
UNPLACEABLE = (
    "Unplaceable: claim dra-demo-topology/island-pair-b-gpus: no value of "
    "gpu.dra-driver.io/nvlinkIsland (matchAttribute over gpus) has enough matching devices "
    "here for all of them; the most one value offers is 1 (GPU-1)"
)


def _pod(phase: str, node: str = "") -> dict[str, Any]:
    return {"spec": {"nodeName": node} if node else {}, "status": {"phase": phase}}


def test_the_demo_waits_until_each_pod_runs_or_is_refused_with_its_reason() -> None:
    pods = {"island-pair-a": _pod("Pending"), "island-pair-b": _pod("Pending")}
    assert awaiting([PAIR, REFUSED], pods, {}) == [
        "pod island-pair-a to run",
        "an Unplaceable Event on pod island-pair-b naming nvlinkIsland, offers is 1",
    ]
    # An explanation without the reason, or another Event, is not the refusal expected.
    events = {"island-pair-b": ["Unplaceable: no node has 2 free GPUs", "Placed: offers is 1"]}
    assert len(awaiting([PAIR, REFUSED], pods, events)) == 2
    pods["island-pair-a"] = _pod("Running", NODE)
    assert awaiting([PAIR, REFUSED], pods, {"island-pair-b": [UNPLACEABLE]}) == []


def test_a_stopped_pod_or_a_placed_refusal_fails_the_demo_at_once() -> None:
    assert contradictions([PAIR, REFUSED], {"island-pair-a": _pod("Running", NODE)}) == []
    assert contradictions([PAIR], {"island-pair-a": _pod("Failed", NODE)}) == [
        "pod island-pair-a stopped (Failed)"
    ]
    (placed,) = contradictions([REFUSED], {"island-pair-b": _pod("Pending", NODE)})
    assert placed.startswith("pod island-pair-b was placed")


def _claim(devices: list[str], match: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "c"},
        "spec": {"devices": {"constraints": [{"requests": ["gpus"], "matchAttribute": match}]}},
        "status": {
            "allocation": {
                "devices": {
                    "results": [{"request": "gpus", "pool": NODE, "device": d} for d in devices]
                }
            }
        },
    }


def test_a_claim_whose_devices_span_two_islands_is_caught() -> None:
    slices = [dump(s) for s in build_slices(MockBackend(NODE, "pairs-4xA100").discover())]
    attributes = device_attributes(slices)
    island = "gpu.dra-driver.io/nvlinkIsland"
    assert unmatched_constraints(_claim(["gpu-0", "gpu-1"], island), attributes) == []
    (broken,) = unmatched_constraints(_claim(["gpu-1", "gpu-2"], island), attributes)
    assert broken.startswith(f"claim c: {island} differs: GPU-")
    root = "resource.kubernetes.io/pcieRoot"
    assert unmatched_constraints(_claim(["gpu-0", "gpu-1"], root), attributes) == []
    assert unmatched_constraints(_claim(["gpu-1", "gpu-2"], root), attributes) == [
        f"claim c: {root} differs: pci0000:00, pci0000:80"
    ]


# --- the table -----------------------------------------------------------------------------


def test_the_table_shows_each_devices_island_and_root_and_the_controllers_reason() -> None:
    slices = [dump(s) for s in build_slices(MockBackend(NODE, "pairs-4xA100").discover())]
    attributes = device_attributes(slices)
    islands = [attributes[f"{NODE}/gpu-{i}"]["nvlinkIsland"] for i in range(4)]
    assert islands[0] == islands[1] != islands[2] == islands[3]
    running = TopologyRow(
        pod="island-pair-a",
        expected=PAIR,
        placed_by="controller",
        node=NODE,
        devices=(f"{NODE}/gpu-2", f"{NODE}/gpu-3"),
        attributes=attributes,
        log="--- dev\nnull\nnvidia2\nnvidia3\nnvidiactl\n--- env\n--- end\n",
    )
    refused = TopologyRow(
        pod="island-pair-b",
        expected=REFUSED,
        placed_by="-",
        node="",
        devices=(),
        attributes=attributes,
        events=("Scheduled: not this one", UNPLACEABLE),
    )
    lines = format_table(HEADER, [running.cells(), refused.cells()]).splitlines()
    assert lines[0].split() == [
        "POD", "PLACED", "BY", "NODE", "DEVICE", "NVLINK", "ISLAND", "PCIE", "ROOT", "OUTCOME"
    ]  # fmt: skip
    assert lines[1].split() == [
        "island-pair-a", "controller", NODE, "gpu-2", islands[2], "pci0000:80",
        "running", "(as", "expected)",
    ]  # fmt: skip
    assert lines[2].split() == ["gpu-3", islands[3], "pci0000:80", "/dev:", "nvidia2", "nvidia3",
                                "nvidiactl"]  # fmt: skip
    assert lines[3].split()[:5] == ["island-pair-b", "-", "-", "-", "-"]
    assert lines[3].endswith("refused (as expected), the controller says:")
    explanation = " ".join(line.split("  ")[-1].strip() for line in lines[4:])
    assert explanation == UNPLACEABLE
    assert all(len(line.split("  ")[-1].strip()) <= 72 for line in lines[4:])

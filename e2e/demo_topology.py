"""The topology scene of ``python -m e2e.demo --machine NAME``: what each mock machine should
do with the pods of deploy/examples/demo-topology, and the table that shows it.

Pure functions over raw JSON (pods, claims, ResourceSlices, Event lines), like
:mod:`e2e.demo_report`. :data:`SCENES` is the one table of expectations: per named mock
machine (:data:`dra_driver.discovery.mock_machines.MOCK_MACHINES`), which pods of the scene
are applied and whether each runs or is refused by the controller with a reason.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from api import limits
from e2e.demo_report import container_view

__all__ = [
    "HEADER",
    "SCENES",
    "Expected",
    "TopologyRow",
    "awaiting",
    "contradictions",
    "device_attributes",
    "machine_name",
    "scene_documents",
    "unmatched_constraints",
]

DRIVER: Final = "gpu.dra-driver.io"
ISLAND: Final = f"{DRIVER}/{limits.ATTRIBUTE_NVLINK_ISLAND}"
#: The Event reason the controller gives a pod it cannot place, with its explanation.
UNPLACEABLE: Final = "Unplaceable"


@dataclass(frozen=True, slots=True)
class Expected:
    """What one pod of the scene does on a machine."""

    pod: str
    runs: bool
    reason: tuple[str, ...] = ()
    """For a refusal: texts the controller's ``Unplaceable`` Event on the pod must contain."""


def _runs(pod: str) -> Expected:
    return Expected(pod, runs=True)


def _refused(pod: str, *reason: str) -> Expected:
    return Expected(pod, runs=False, reason=reason)


#: Per machine, the pods applied and what each does. The GPUs the running pods ask for fit
#: the machine together whatever order the controller takes them in, so each outcome is
#: the same on every run.
SCENES: Final[Mapping[str, tuple[Expected, ...]]] = {
    # One NVSwitch island of 8: two pairs and a quad, all on it.
    "dgx-h100": (_runs("island-pair-a"), _runs("island-pair-b"), _runs("island-quad")),
    # Two NVLink pairs: each pair pod gets one pair (one island each).
    "pairs-4xA100": (_runs("island-pair-a"), _runs("island-pair-b")),
    # No NVLink: no island has two GPUs, so the pair is refused with the reason; two GPUs
    # behind one PCIe root still fit.
    "pcie-4xL40S": (
        _refused(
            "island-pair-a",
            limits.ATTRIBUTE_NVLINK_ISLAND,
            "the most one value offers is 1",
        ),
        _runs("pcie-pair"),
    ),
    # One rack-scale fabric island (cluster UUID / clique ID): both pairs on it.
    "rack-4xH100": (_runs("island-pair-a"), _runs("island-pair-b")),
}


def machine_name(text: str) -> str:
    """``text`` if it names a mock machine with a scene; ValueError listing the names if not."""
    if text not in SCENES:
        raise ValueError(
            f"unknown mock machine {text!r}; the machines are: {', '.join(sorted(SCENES))}"
        )
    return text


def scene_documents(docs: Iterable[Mapping[str, Any]], machine: str) -> list[dict[str, Any]]:
    """The scene's documents for ``machine``: every non-Pod object, and the Pods it expects."""
    pods = {e.pod for e in SCENES[machine]}
    chosen = [dict(d) for d in docs if d["kind"] != "Pod" or d["metadata"]["name"] in pods]
    missing = pods - {d["metadata"]["name"] for d in chosen if d["kind"] == "Pod"}
    if missing:
        raise ValueError(f"pods {', '.join(sorted(missing))} of {machine} not in the scene")
    return chosen


def _phase(pod: Mapping[str, Any] | None) -> str:
    return str(((pod or {}).get("status") or {}).get("phase") or "")


def _explanations(events: Sequence[str]) -> list[str]:
    return [e for e in events if e.startswith(f"{UNPLACEABLE}:")]


def awaiting(
    expected: Sequence[Expected],
    pods: Mapping[str, Mapping[str, Any]],
    events: Mapping[str, Sequence[str]],
) -> list[str]:
    """What has not happened yet: a pod expected to run that does not run, a pod expected to
    be refused without the controller's ``Unplaceable`` Event carrying every text of its
    reason. Empty once the scene is as expected. ``events``: ``reason: message`` lines per pod.
    """
    left = []
    for e in expected:
        if e.runs and _phase(pods.get(e.pod)) != "Running":
            left.append(f"pod {e.pod} to run")
        elif not e.runs and not any(
            all(text in line for text in e.reason) for line in _explanations(events.get(e.pod, ()))
        ):
            left.append(f"an {UNPLACEABLE} Event on pod {e.pod} naming {', '.join(e.reason)}")
    return left


def contradictions(
    expected: Sequence[Expected], pods: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    """What no wait mends: a pod that stopped, or a pod expected to be refused that was placed
    (bound to a node or running)."""
    found = []
    for e in expected:
        pod = pods.get(e.pod) or {}
        phase = _phase(pod)
        if phase in ("Failed", "Succeeded"):
            found.append(f"pod {e.pod} stopped ({phase})")
        elif not e.runs and (phase == "Running" or (pod.get("spec") or {}).get("nodeName")):
            found.append(f"pod {e.pod} was placed, but {' / '.join(e.reason)} should refuse it")
    return found


def device_attributes(slices: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """``pool/device`` -> the device's attributes as published, values unwrapped (the
    ``string``/``int``/``bool``/``version`` member); names unqualified in the driver's
    domain as published, other domains qualified."""
    found: dict[str, dict[str, Any]] = {}
    for s in slices:
        spec = s.get("spec") or {}
        pool = (spec.get("pool") or {}).get("name")
        for device in spec.get("devices") or []:
            found[f"{pool}/{device['name']}"] = {
                name: next(iter(value.values()), None) if isinstance(value, Mapping) else value
                for name, value in (device.get("attributes") or {}).items()
            }
    return found


def _attribute(attributes: Mapping[str, Any], name: str) -> Any:
    """``name`` (``domain/id``) of a device: its driver's own attributes are published
    unqualified."""
    if name in attributes:
        return attributes[name]
    domain, _, short = name.rpartition("/")
    return attributes.get(short) if domain == DRIVER else None


def unmatched_constraints(
    claim: Mapping[str, Any], attributes: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    """The claim's ``matchAttribute`` constraints its allocation breaks: the devices of the
    requests a constraint names (all, when it names none) do not share one value.
    ``attributes``: :func:`device_attributes`."""
    spec = (claim.get("spec") or {}).get("devices") or {}
    allocation = (claim.get("status") or {}).get("allocation") or {}
    results = (allocation.get("devices") or {}).get("results") or []
    broken = []
    for constraint in spec.get("constraints") or []:
        name = constraint.get("matchAttribute")
        if not name:
            continue
        requests = set(constraint.get("requests") or [])
        values = {
            str(_attribute(attributes.get(f"{r['pool']}/{r['device']}", {}), name))
            for r in results
            if not requests or r["request"].split("/")[0] in requests
        }
        if len(values) > 1:
            claim_name = (claim.get("metadata") or {}).get("name")
            broken.append(f"claim {claim_name}: {name} differs: {', '.join(sorted(values))}")
    return broken


HEADER: Final = ("POD", "PLACED BY", "NODE", "DEVICE", "NVLINK ISLAND", "PCIE ROOT", "OUTCOME")
#: Width the controller's explanation is wrapped to in the OUTCOME column.
EXPLANATION_WIDTH: Final = 72


@dataclass(frozen=True)
class TopologyRow:
    """One pod of the topology scene: where its devices sit, and what came of it."""

    pod: str
    expected: Expected
    placed_by: str
    node: str
    devices: tuple[str, ...]
    """``pool/device`` of each allocated device."""
    attributes: Mapping[str, Mapping[str, Any]]
    log: str = ""
    events: tuple[str, ...] = ()

    def outcome(self) -> list[str]:
        """``running`` and what the container saw, or ``refused`` and the controller's
        latest explanation, wrapped."""
        if self.expected.runs:
            seen = [line for line in container_view(self.log) if line.startswith("/dev:")]
            return ["running (as expected)", *seen]
        said = _explanations(self.events)
        lines = ["refused (as expected), the controller says:"]
        for text in said[-1:] or ["(no explanation)"]:
            lines += textwrap.wrap(text, EXPLANATION_WIDTH, break_on_hyphens=False)
        return lines

    def cells(self) -> tuple[tuple[str, ...], ...]:
        """The row's cells, each a tuple of lines: one line per device in the device,
        island and root columns; ``-`` for none."""
        names = tuple(d.rpartition("/")[2] for d in self.devices)
        islands = tuple(self._value(d, ISLAND) for d in self.devices)
        roots = tuple(self._value(d, limits.ATTRIBUTE_PCIE_ROOT) for d in self.devices)
        return tuple(
            tuple(values) or ("-",)
            for values in (
                (self.pod,),
                (self.placed_by,),
                (self.node,) if self.node else (),
                names,
                islands,
                roots,
                self.outcome(),
            )
        )

    def _value(self, device: str, name: str) -> str:
        value = _attribute(self.attributes.get(device, {}), name)
        return "-" if value is None else str(value)

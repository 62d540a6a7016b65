"""The claim the kube-scheduler makes for a pod's extended resources (``nvidia.com/gpu: 1``
in its limits): the controller cannot place it (it exists only once the scheduler chose),
but must count its devices as taken, never write to it, and explain it on request."""

from __future__ import annotations

import io
import json
from typing import Any

from controller_fixtures import (
    CLASS,
    Harness,
    add_gpu_nodes,
    allocation,
    claim,
    object_writes,
    pod,
)

from api.limits import EXTENDED_RESOURCE_CLAIM_ANNOTATION
from controller.app import run_explain_claim

REQUEST = "container-0-request-0"
SPECIAL = "dp-extended-resources-x7k2q"


def _device_plugin_pod() -> dict[str, Any]:
    """Bound by the scheduler to node_a: no gate, GPUs asked for in its limits."""
    made = pod("dp", gated=False, node_name="node_a")
    made["metadata"]["uid"] = "dp-uid"
    made["spec"]["containers"][0]["resources"] = {"limits": {"nvidia.com/gpu": "2"}}
    made["status"] = {
        "phase": "Running",
        "extendedResourceClaimStatus": {
            "resourceClaimName": SPECIAL,
            "requestMappings": [
                {"containerName": "main", "resourceName": "nvidia.com/gpu", "requestName": REQUEST}
            ],
        },
    }
    return made


def _special_claim() -> dict[str, Any]:
    made = claim(
        SPECIAL,
        count=2,
        annotations={EXTENDED_RESOURCE_CLAIM_ANNOTATION: "true"},
        owner="dp",
    )
    made["metadata"]["ownerReferences"][0]["uid"] = "dp-uid"
    made["spec"]["devices"]["requests"][0]["name"] = REQUEST
    return made


def _harness() -> Harness:
    h = Harness()
    add_gpu_nodes(h, {"node_a": 2, "node_b": 2})
    h.add("resourceclaims", _special_claim())
    h.cluster.put(
        "resourceclaims",
        {
            **h.claim(SPECIAL),
            "status": {
                "allocation": allocation("node_a", "gpu-0", "gpu-1", request=REQUEST),
                "reservedFor": [{"resource": "pods", "name": "dp", "uid": "dp-uid"}],
            },
        },
    )
    h.add("pods", _device_plugin_pod())
    return h


def test_the_special_claims_devices_count_as_taken() -> None:
    h = _harness()
    h.add("resourceclaims", claim("c"))
    h.add("pods", pod("p", "c"))

    h.reconcile("default/p")

    assert h.devices("c") == [("node_b", "gpu-0")]
    assert h.devices(SPECIAL) == [("node_a", "gpu-0"), ("node_a", "gpu-1")]


def test_the_controller_never_writes_to_the_special_claim_or_its_pod() -> None:
    h = _harness()
    h.add("resourceclaims", claim("c"))
    h.add("pods", pod("p", "c"))
    h.cluster.calls.clear()

    h.reconcile("default/dp")
    h.reconcile("default/p")
    h.drain()

    written = {(resource, name) for _, resource, name in object_writes(h.cluster.calls)}
    assert ("resourceclaims", SPECIAL) not in written
    assert ("pods", "dp") not in written
    assert ("resourceclaims", "c") in written  # the gated pod's own claim was placed


def test_explain_claim_explains_the_special_claim() -> None:
    h = _harness()
    out = io.StringIO()

    code = run_explain_claim(
        ["claim", f"default/{SPECIAL}"], node=None, output="json", out=out, client=h.cluster
    )

    assert code == 0
    report = json.loads(out.getvalue())
    assert report["claims"] == [f"claim default/{SPECIAL}"]
    # Explained as if pending: its own devices are free for it, so both nodes fit.
    assert report["allocatable"] is True
    assert {n["node"] for n in report["nodes"]} == {"node_a", "node_b"}
    text = json.dumps(report)
    assert REQUEST in text and CLASS in text

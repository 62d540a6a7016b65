"""Builders for the CDI and preparation unit tests: mock GPUs, claims, schema validation."""

from __future__ import annotations

import json
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Any

from jsonschema import Draft7Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from api.resource_v1 import ResourceClaim, parse_object
from api.semver import Semver
from dra_driver.discovery.model import Gpu, NodeInventory

DRIVER = "gpu.dra-driver.io"
NODE = "node-a"
SCHEMA_DIR = Path(__file__).resolve().parents[1] / "cdi_schema"


def claim_uid(n: int) -> str:
    """A realistic (UUID-shaped) claim UID, the same on every run."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"claim-{n}"))


def gpu(minor: int, node: str = NODE) -> Gpu:
    return Gpu(
        index=minor,
        minor=minor,
        uuid="GPU-" + str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{node}-{minor}")),
        product_name="NVIDIA H100 80GB HBM3",
        brand="Nvidia",
        architecture="Hopper",
        cuda_compute_capability=Semver.parse("9.0.0"),
        memory_bytes=80 * 2**30,
        pci_bus_id=f"0000:{minor + 0x10:02x}:00.0",
    )


def inventory(count: int = 8, node: str = NODE) -> NodeInventory:
    return NodeInventory(
        node_name=node,
        driver_version=Semver.parse("550.54.15"),
        cuda_driver_version=Semver.parse("12.4.0"),
        gpus=tuple(gpu(i, node) for i in range(count)),
    )


def result(
    device: str,
    request: str = "gpu",
    *,
    pool: str = NODE,
    driver: str = DRIVER,
    **extra: Any,
) -> dict[str, Any]:
    return {"request": request, "driver": driver, "pool": pool, "device": device, **extra}


def gpu_config(**sharing: Any) -> dict[str, Any]:
    parameters: dict[str, Any] = {"apiVersion": "gpu.dra-driver.io/v1alpha1", "kind": "GpuConfig"}
    if sharing:
        parameters["sharing"] = sharing
    return parameters


def config(
    parameters: dict[str, Any],
    *,
    source: str = "FromClaim",
    requests: list[str] | None = None,
    driver: str = DRIVER,
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "source": source,
        "opaque": {"driver": driver, "parameters": parameters},
    }
    if requests is not None:
        entry["requests"] = requests
    return entry


def claim(
    uid: str,
    results: list[dict[str, Any]] | None = None,
    *,
    configs: list[dict[str, Any]] | None = None,
    name: str = "train-0",
    namespace: str = "default",
    allocated: bool = True,
    node_selector_node: str | None = NODE,
) -> ResourceClaim:
    document: dict[str, Any] = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": namespace, "uid": uid},
        "spec": {
            "devices": {
                "requests": [{"name": "gpu", "exactly": {"deviceClassName": "gpu.dra-driver.io"}}]
            }
        },
    }
    if allocated:
        allocation: dict[str, Any] = {
            "devices": {"results": results if results is not None else [result("gpu-0")]}
        }
        if configs:
            allocation["devices"]["config"] = configs
        if node_selector_node is not None:
            allocation["nodeSelector"] = {
                "nodeSelectorTerms": [
                    {
                        "matchFields": [
                            {
                                "key": "metadata.name",
                                "operator": "In",
                                "values": [node_selector_node],
                            }
                        ]
                    }
                ]
            }
        document["status"] = {"allocation": allocation}
    parsed = parse_object(document)
    assert isinstance(parsed, ResourceClaim)
    return parsed


@lru_cache(maxsize=1)
def _validator() -> Draft7Validator:
    schema = json.loads((SCHEMA_DIR / "schema.json").read_text())
    defs = json.loads((SCHEMA_DIR / "defs.json").read_text())
    registry: Registry[Any] = Registry().with_resource(
        "defs.json", Resource.from_contents(defs, default_specification=DRAFT7)
    )
    return Draft7Validator(schema, registry=registry)


def validate_cdi_document(document: Any) -> None:
    """Raise jsonschema.ValidationError when ``document`` is not a valid CDI spec."""
    _validator().validate(document)

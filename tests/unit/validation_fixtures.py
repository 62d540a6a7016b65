"""The objects and helpers the validation tests share (:mod:`api.validation`).

Realistic objects of each kind (``SLICE``, ``CLASS``, ``CLAIM``, and an ``ALLOCATION`` for a
claim's status) that validate cleanly, and the helpers that mutate a copy and read the
problems found: :func:`messages` and :func:`assert_rejected`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from api.resource_v1 import parse_object
from api.validation import validate

Mutation = Callable[[dict[str, Any]], object]


def gpu(i: int) -> dict[str, Any]:
    return {
        "name": f"gpu-{i}",
        "attributes": {
            "index": {"int": i},
            "productName": {"string": "NVIDIA H100 80GB HBM3"},
            "driverVersion": {"version": "550.54.15"},
            "resource.kubernetes.io/pcieRoot": {"string": "pci0000:3a"},
        },
        "capacity": {"memory": {"value": "80Gi"}},
    }


SLICE: dict[str, Any] = {
    "apiVersion": "resource.k8s.io/v1",
    "kind": "ResourceSlice",
    "metadata": {"name": "node-a-gpu"},
    "spec": {
        "driver": "gpu.dra-driver.io",
        "nodeName": "node-a",
        "pool": {"name": "node-a", "generation": 1, "resourceSliceCount": 1},
        "devices": [gpu(0), gpu(1)],
    },
}

CLASS: dict[str, Any] = {
    "apiVersion": "resource.k8s.io/v1",
    "kind": "DeviceClass",
    "metadata": {"name": "gpu.dra-driver.io"},
    "spec": {
        "selectors": [{"cel": {"expression": "device.driver == 'gpu.dra-driver.io'"}}],
        "config": [
            {
                "opaque": {
                    "driver": "gpu.dra-driver.io",
                    "parameters": {"apiVersion": "gpu.dra-driver.io/v1alpha1", "kind": "GpuConfig"},
                }
            }
        ],
    },
}

CLAIM: dict[str, Any] = {
    "apiVersion": "resource.k8s.io/v1",
    "kind": "ResourceClaim",
    "metadata": {"name": "train-0", "namespace": "default"},
    "spec": {
        "devices": {
            "requests": [
                {"name": "gpu", "exactly": {"deviceClassName": "gpu.dra-driver.io", "count": 2}},
                {
                    "name": "mig",
                    "firstAvailable": [
                        {"name": "big", "deviceClassName": "mig-3g"},
                        {"name": "small", "deviceClassName": "mig-1g"},
                    ],
                },
            ],
            "constraints": [
                {"requests": ["gpu", "mig/small"], "matchAttribute": "gpu.dra-driver.io/numa"}
            ],
            "config": [
                {
                    "requests": ["gpu"],
                    "opaque": {"driver": "gpu.dra-driver.io", "parameters": {"kind": "GpuConfig"}},
                }
            ],
        }
    },
}

ALLOCATION: dict[str, Any] = {
    "devices": {
        "results": [
            {"request": "gpu", "driver": "gpu.dra-driver.io", "pool": "node-a", "device": "gpu-0"},
            {
                "request": "mig/small",
                "driver": "gpu.dra-driver.io",
                "pool": "node-a",
                "device": "gpu-1-mig-0",
                "shareID": "6ba7b810-9dad-11d1-80b4-00c04fd430c8",
            },
        ],
        "config": [
            {
                "source": "FromClaim",
                "requests": ["gpu"],
                "opaque": {"driver": "gpu.dra-driver.io", "parameters": {}},
            }
        ],
    },
    "nodeSelector": {
        "nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-a"]}]}
        ]
    },
}


def messages(base: dict[str, Any], mutate: Mutation | None = None) -> list[str]:
    data = copy.deepcopy(base)
    if mutate is not None:
        mutate(data)
    return [str(e) for e in validate(parse_object(data))]


def assert_rejected(base: dict[str, Any], mutate: Mutation, path: str, fragment: str) -> None:
    found = messages(base, mutate)
    assert any(m.startswith(path + ": ") and fragment in m for m in found), found


def dev(d: dict[str, Any], i: int = 0) -> dict[str, Any]:
    device = d["spec"]["devices"][i]
    assert isinstance(device, dict)
    return device


def req(d: dict[str, Any], i: int = 0) -> dict[str, Any]:
    request = d["spec"]["devices"]["requests"][i]
    assert isinstance(request, dict)
    return request

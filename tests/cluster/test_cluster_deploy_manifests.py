"""The DeviceClasses shipped in deploy/ apply cleanly to a real API server.

Every ``kind: DeviceClass`` document under deploy/ is created (or replaced when
it exists), read back and compared: the API server validates the CEL
selectors with the real Kubernetes CEL environment, so a selector that only
our offline evaluator accepts fails here.
"""

from __future__ import annotations

from typing import Any

import pytest
from cluster_access import (
    DEPLOY,
    apply_device_class,
    deploy_device_classes,
    resource_api,
)
from kubernetes import client

DEVICE_CLASSES = deploy_device_classes()


def test_deploy_ships_device_classes() -> None:
    assert "gpu.dra-driver.io" in DEVICE_CLASSES


@pytest.mark.parametrize("name", sorted(DEVICE_CLASSES))
def test_device_class_applies_and_is_stored_as_written(api_client: Any, name: str) -> None:
    path, doc = DEVICE_CLASSES[name]
    api = resource_api(api_client)
    try:
        stored = apply_device_class(api, doc)
    except client.ApiException as err:
        pytest.fail(
            f"{path.relative_to(DEPLOY.parent)}: DeviceClass {name}: {err.status} {err.body}"
        )
    assert stored["spec"] == doc["spec"]
    # Applying again (the replace path) is accepted and changes nothing.
    again = apply_device_class(api, doc)
    assert again["spec"] == doc["spec"]
    assert again["metadata"]["generation"] == stored["metadata"]["generation"]

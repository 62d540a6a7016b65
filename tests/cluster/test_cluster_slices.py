"""SlicePublisher against a real API server: slices stored as written, and repaired.

The expected slices are planned independently with ``build_slices`` from the
same mock inventory, so a field the server drops, renames or defaults shows up
as a difference here.
"""

from __future__ import annotations

import threading
from typing import Any

from cluster_access import (
    ClusterUnderTest,
    PublishedPool,
    read_json,
    resource_api,
    wait_for,
)

from api.resource_v1 import OwnerReference, dump
from dra_driver.slices import build_slices


def _stored_slices(api_client: Any, node: str, driver: str) -> dict[str, dict[str, Any]]:
    listing = read_json(
        resource_api(api_client).list_resource_slice,
        field_selector=f"spec.nodeName={node},spec.driver={driver}",
    )
    return {item["metadata"]["name"]: item for item in listing["items"]}


def _expected_slices(pool: PublishedPool, generation: int) -> dict[str, dict[str, Any]]:
    owner = OwnerReference(
        api_version="v1",
        kind="Node",
        name=pool.publisher.node_name,
        uid=pool.node_uid,
        controller=True,
    )
    planned = build_slices(pool.inventory, generation=generation, owner=owner)
    return {s.metadata.name or "": dump(s) for s in planned}


def test_published_slices_are_stored_as_written(
    api_client: Any, local_cluster: ClusterUnderTest, published_pool: PublishedPool
) -> None:
    publisher = published_pool.publisher
    result = publisher.sync()
    assert not result.changed, "a second sync found the pool changed"
    assert result.dropped_fields == ()

    stored = _stored_slices(api_client, local_cluster.node_name, publisher.driver_name)
    expected = _expected_slices(published_pool, publisher.generation)
    assert sorted(stored) == sorted(expected)
    for name, want in expected.items():
        got = stored[name]
        assert got["spec"] == want["spec"], f"slice {name}: spec differs"
        assert got["metadata"]["ownerReferences"] == want["metadata"]["ownerReferences"]
    devices = [d["name"] for s in stored.values() for d in s["spec"].get("devices", [])]
    assert {"gpu-0", "gpu-1"} <= set(devices)
    assert any(s["spec"].get("sharedCounters") for s in stored.values())


def test_deleted_slice_is_republished(
    api_client: Any, local_cluster: ClusterUnderTest, published_pool: PublishedPool
) -> None:
    publisher = published_pool.publisher
    node, driver = local_cluster.node_name, publisher.driver_name
    before = _stored_slices(api_client, node, driver)
    generation = publisher.generation
    victim = max(before)  # a slice with devices: counter sets come first

    stop = threading.Event()
    runner = threading.Thread(
        target=publisher.run, args=(stop,), kwargs={"watch_timeout_s": 5, "retry_s": 1}
    )
    runner.start()
    try:
        # run() syncs first (no change) and then watches from that sync's listing.
        wait_for(
            "the publisher to sync and watch",
            lambda: publisher.generation == generation,
            cluster=local_cluster,
        )
        resource_api(api_client).delete_resource_slice(victim)

        def republished() -> bool:
            now = _stored_slices(api_client, node, driver)
            return (
                victim in now
                and now[victim]["metadata"]["uid"] != before[victim]["metadata"]["uid"]
                and all(s["spec"]["pool"]["generation"] > generation for s in now.values())
            )

        wait_for(f"slice {victim} to be republished", republished, cluster=local_cluster)
    finally:
        stop.set()
        runner.join(timeout=30)
    assert not runner.is_alive(), "the publisher did not stop within 30 s"

    after = _stored_slices(api_client, node, driver)
    expected = _expected_slices(published_pool, publisher.generation)
    assert sorted(after) == sorted(expected)
    for name, want in expected.items():
        assert after[name]["spec"] == want["spec"], f"slice {name}: spec differs"

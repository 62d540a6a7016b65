"""The cluster port: the in-memory API server's REST semantics, the real client's mapping,
and the Reflector's list+watch (relist on 410 Gone, retries)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from controller_fixtures import claim, node, pod

from agent_kit.kube import (
    RESOURCES,
    ApiError,
    ConflictError,
    ForbiddenError,
    GoneError,
    InvalidError,
    KubernetesClient,
    NotFoundError,
    Reflector,
    Resource,
    UnavailableError,
    api_error,
    api_errors,
    call_with_retries,
    retry_on_conflict,
    retry_until_stopped,
)
from tests.fakes.cluster import FakeCluster, merge_patch

# -- the in-memory API server ------------------------------------------------------------------


def test_writes_are_guarded_by_the_resource_version() -> None:
    cluster = FakeCluster()
    stored = cluster.create("nodes", node("n"))
    stale = dict(stored)
    fresh = cluster.replace("nodes", {**stored, "spec": {"unschedulable": True}})
    assert int(fresh["metadata"]["resourceVersion"]) > int(stored["metadata"]["resourceVersion"])
    with pytest.raises(ConflictError):
        cluster.replace("nodes", stale)
    with pytest.raises(ConflictError):
        cluster.patch("nodes", "n", {"metadata": {"resourceVersion": "1"}, "spec": {}})
    with pytest.raises(ConflictError):
        cluster.create("nodes", node("n"))
    with pytest.raises(NotFoundError):
        cluster.get("nodes", "missing")


def test_claim_status_is_a_subresource_and_an_allocation_is_immutable() -> None:
    cluster = FakeCluster()
    created = cluster.create("resourceclaims", claim("c"))
    allocated = {**created, "status": {"allocation": {"devices": {"results": []}}}}
    # The main resource ignores status...
    assert "status" not in cluster.replace("resourceclaims", allocated)
    current = cluster.get("resourceclaims", "c", namespace="default")
    # ...the status subresource writes it, and only it.
    relabelled = {**current, "metadata": {**current["metadata"], "labels": {"a": "b"}}}
    written = cluster.replace_status(
        "resourceclaims", {**relabelled, "status": {"allocation": {"devices": {"results": []}}}}
    )
    assert written["status"]["allocation"] == {"devices": {"results": []}}
    assert "labels" not in written["metadata"]
    other = {
        "devices": {"results": [{"request": "gpu", "driver": "d", "pool": "p", "device": "x"}]}
    }
    with pytest.raises(InvalidError):
        cluster.replace_status("resourceclaims", {**written, "status": {"allocation": other}})
    with pytest.raises(InvalidError):
        cluster.replace("resourceclaims", {**written, "spec": {}})
    released = cluster.replace_status("resourceclaims", {**written, "status": {}})
    assert "status" not in released


def test_scheduling_gates_can_only_be_removed() -> None:
    cluster = FakeCluster()
    cluster.create("pods", pod("p", gated=False))
    with pytest.raises(InvalidError):
        cluster.patch(
            "pods", "p", {"spec": {"schedulingGates": [{"name": "x"}]}}, namespace="default"
        )


def test_deleting_an_object_with_finalizers_marks_it_first() -> None:
    cluster = FakeCluster()
    body = claim("c")
    body["metadata"]["finalizers"] = ["f"]
    cluster.create("resourceclaims", body)
    cluster.delete("resourceclaims", "c", namespace="default")
    marked = cluster.get("resourceclaims", "c", namespace="default")
    assert marked["metadata"]["deletionTimestamp"]
    marked["metadata"]["finalizers"] = []
    cluster.replace("resourceclaims", marked)
    with pytest.raises(ApiError):
        cluster.get("resourceclaims", "c", namespace="default")


def test_merge_patch() -> None:
    assert merge_patch({"a": 1, "b": {"c": 2, "d": 3}}, {"b": {"c": None, "e": [1]}}) == {
        "a": 1,
        "b": {"d": 3, "e": [1]},
    }


def test_watch_replays_changes_and_selectors_turn_leavers_into_deletions() -> None:
    cluster = FakeCluster()
    start = cluster.list("pods").resource_version
    cluster.create("pods", pod("p"))
    current = cluster.get("pods", "p", namespace="default")
    current["status"] = {"phase": "Succeeded"}
    cluster.put("pods", current)
    events = list(
        cluster.watch(
            "pods", resource_version=start, timeout_s=0.01, field_selector="status.phase!=Succeeded"
        )
    )
    assert [e.type for e in events] == ["ADDED", "DELETED"]
    assert events[-1].resource_version == cluster.resource_version


def test_a_watch_from_a_compacted_version_is_gone() -> None:
    cluster = FakeCluster()
    start = cluster.list("nodes").resource_version
    cluster.create("nodes", node("n"))
    cluster.compact()
    with pytest.raises(GoneError):
        list(cluster.watch("nodes", resource_version=start, timeout_s=0.01))


def test_injected_faults_hit_the_named_calls_only() -> None:
    cluster = FakeCluster()
    cluster.fail("get", "nodes", 503, name="a")
    cluster.create("nodes", node("a"))
    cluster.create("nodes", node("b"))
    assert cluster.get("nodes", "b")["metadata"]["name"] == "b"
    with pytest.raises(UnavailableError) as info:
        cluster.get("nodes", "a")
    assert info.value.retryable
    # One call only (times=1): the next one is served.
    assert cluster.get("nodes", "a")["metadata"]["name"] == "a"


# -- the real client's mapping --------------------------------------------------------------------


@pytest.mark.parametrize("resource", sorted(RESOURCES))
def test_every_verb_maps_to_a_method_of_the_official_client(resource: Resource) -> None:
    # Each verb goes out as the REST request the API server serves for it: the official
    # client's HTTP layer is replaced by a recorder that answers 200 with an empty list.
    from types import SimpleNamespace
    from urllib.parse import urlsplit

    from kubernetes import client as k8s_client

    group, namespaced = {
        "pods": ("/api/v1", True),
        "nodes": ("/api/v1", False),
        "events": ("/api/v1", True),
        "configmaps": ("/api/v1", True),
        "leases": ("/apis/coordination.k8s.io/v1", True),
        "resourceslices": ("/apis/resource.k8s.io/v1", False),
        "deviceclasses": ("/apis/resource.k8s.io/v1", False),
        "resourceclaims": ("/apis/resource.k8s.io/v1", True),
        "devicetaintrules": ("/apis/resource.k8s.io/v1", False),
        "podgroups": ("/apis/scheduling.k8s.io/v1beta1", True),
        "resourcepoolstatusrequests": ("/apis/resource.k8s.io/v1alpha3", False),
    }[resource]
    assert RESOURCES[resource].namespaced is namespaced
    sent: list[tuple[str, str, str | None, Any]] = []

    def call_api(
        method: str, url: str, header_params: Any = None, body: Any = None, *_: Any, **__: Any
    ) -> Any:
        sent.append((method, urlsplit(url).path, (header_params or {}).get("Content-Type"), body))
        answer = b'{"metadata": {"resourceVersion": "7"}, "items": []}'
        return SimpleNamespace(status=200, response=SimpleNamespace(data=answer))

    api_client = k8s_client.ApiClient(k8s_client.Configuration(host="http://api.test"))
    api_client.call_api = call_api  # type: ignore[method-assign]
    client = KubernetesClient(api_client)
    namespace = "ns" if namespaced else None
    obj: dict[str, Any] = {"metadata": {"name": "o", **({"namespace": "ns"} if namespaced else {})}}
    # What the client's models require of a body.
    obj |= {
        "events": {"involvedObject": {}},
        "resourceslices": {
            "spec": {"driver": "d", "pool": {"name": "p", "generation": 0, "resourceSliceCount": 1}}
        },
        "devicetaintrules": {"spec": {"taint": {"key": "k", "effect": "NoSchedule"}}},
        "podgroups": {"spec": {"schedulingPolicy": {"gang": {"minCount": 2}}}},
        "resourcepoolstatusrequests": {"spec": {"driver": "d"}},
    }.get(resource, {})
    patch = {"metadata": {"labels": {"a": "b"}}}

    listed = client.list(resource, namespace=namespace)
    assert (listed.items, listed.resource_version) == ([], "7")
    client.list(resource)
    assert client.get(resource, "o", namespace=namespace)["metadata"] == {"resourceVersion": "7"}
    client.create(resource, obj)
    client.replace(resource, obj)
    client.patch(resource, "o", patch, namespace=namespace)
    client.delete(resource, "o", namespace=namespace)
    if resource == "resourceclaims":
        client.replace_status(resource, obj)

    collection = f"{group}/namespaces/ns/{resource}" if namespaced else f"{group}/{resource}"
    item = f"{collection}/o"
    expected = [
        ("GET", collection, None),
        ("GET", f"{group}/{resource}", None),  # listed across all namespaces
        ("GET", item, None),
        ("POST", collection, None),
        ("PUT", item, None),
        ("PATCH", item, "application/merge-patch+json"),
        ("DELETE", item, None),
    ]
    if resource == "resourceclaims":
        expected.append(("PUT", f"{item}/status", None))
    assert [(method, path, content_type) for method, path, content_type, _ in sent] == expected
    bodies = {method: body for method, _, _, body in sent if body is not None}
    assert bodies["POST"]["metadata"]["name"] == "o"
    assert bodies["PUT"]["metadata"]["name"] == "o"
    assert bodies["PATCH"] == patch


def test_a_status_write_leaves_the_managed_fields_out() -> None:
    """The server ignores a status write's managedFields (it keeps the live ones), so they
    are not sent; the object passed in is not changed, and a main-resource write keeps them."""
    from types import SimpleNamespace

    from kubernetes import client as k8s_client

    sent: list[Any] = []

    def call_api(
        method: str, url: str, header_params: Any = None, body: Any = None, *_: Any, **__: Any
    ) -> Any:
        sent.append(body)
        return SimpleNamespace(status=200, response=SimpleNamespace(data=b"{}"))

    api_client = k8s_client.ApiClient(k8s_client.Configuration(host="http://api.test"))
    api_client.call_api = call_api  # type: ignore[method-assign]
    client = KubernetesClient(api_client)
    body = claim("c")
    managed = [{"manager": "kubectl", "operation": "Update", "fieldsType": "FieldsV1"}]
    body["metadata"]["managedFields"] = managed
    client.replace_status("resourceclaims", body)
    client.replace("resourceclaims", body)
    status_write, update = sent
    assert "managedFields" not in status_write["metadata"]
    assert status_write["metadata"]["name"] == "c"
    assert update["metadata"]["managedFields"][0]["manager"] == "kubectl"
    assert body["metadata"]["managedFields"] is managed


def test_bodies_become_the_clients_models() -> None:
    client = KubernetesClient(api_client=None)
    body = client._body("resourceclaims", claim("c"))
    assert type(body).__name__ == "ResourceV1ResourceClaim"
    assert body.metadata.name == "c"


# -- retries ----------------------------------------------------------------------------------


def test_call_with_retries_retries_only_what_a_retry_can_cure() -> None:
    attempts: list[int] = []

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise api_error("busy", status=503)
        return "ok"

    assert call_with_retries(flaky, initial_s=0.001, max_s=0.001) == "ok"
    assert len(attempts) == 3

    def conflict() -> None:
        attempts.append(1)
        raise api_error("conflict", status=409)

    attempts.clear()
    with pytest.raises(ApiError):
        call_with_retries(conflict, initial_s=0.001)
    assert len(attempts) == 1


def test_retry_on_conflict_runs_the_step_again_and_gives_up_with_the_last_error() -> None:
    seen: list[str] = []
    answers: list[ApiError | None] = [ConflictError("stale"), NotFoundError("gone"), None]

    def step() -> str:
        answer = answers.pop(0)
        if answer is not None:
            raise answer
        return "written"

    assert (
        retry_on_conflict(
            step,
            errors=(ConflictError, NotFoundError),
            initial_s=0.001,
            on_retry=lambda err: seen.append(str(err)),
        )
        == "written"
    )
    assert seen == ["stale", "gone"]

    attempts: list[int] = []

    def always_stale() -> None:
        attempts.append(1)
        raise ConflictError(f"stale {len(attempts)}")

    with pytest.raises(ConflictError, match="stale 3"):
        retry_on_conflict(always_stale, attempts=3, initial_s=0.001)
    # Only conflicts by default: anything else at once.
    attempts.clear()

    def vanished() -> None:
        attempts.append(1)
        raise NotFoundError("gone")

    with pytest.raises(NotFoundError):
        retry_on_conflict(vanished, initial_s=0.001)
    assert len(attempts) == 1


def test_retry_until_stopped_retries_until_the_event_is_set() -> None:
    stop = threading.Event()
    failures: list[int] = []

    def on_retry(err: BaseException, attempt: int) -> None:
        failures.append(attempt)
        if attempt == 4:
            stop.set()

    def failing() -> None:
        raise UnavailableError("no answer")

    retrying = retry_until_stopped(stop, initial_s=0.001, max_s=0.001, on_retry=on_retry)
    with pytest.raises(UnavailableError):
        retrying(failing)
    assert failures == [1, 2, 3, 4]
    # Errors outside ``errors`` are not retried.
    failures.clear()

    def buggy() -> None:
        raise ValueError("bug")

    with pytest.raises(ValueError, match="bug"):
        retry_until_stopped(threading.Event(), initial_s=0.001, max_s=0.001, on_retry=on_retry)(
            buggy
        )
    assert failures == []


# -- the error tree -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (0, UnavailableError),
        (400, InvalidError),
        (401, ForbiddenError),
        (403, ForbiddenError),
        (404, NotFoundError),
        (405, ApiError),
        (409, ConflictError),
        (410, GoneError),
        (422, InvalidError),
        (429, UnavailableError),
        (500, UnavailableError),
        (503, UnavailableError),
    ],
)
def test_each_status_is_one_class_of_the_tree(status: int, kind: type[ApiError]) -> None:
    err = api_error("call", status=status)
    assert type(err) is kind
    assert err.retryable is (kind is UnavailableError)


def test_the_official_clients_errors_become_the_tree() -> None:
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import MaxRetryError

    body = '{"kind": "Status", "message": "nodes \\"n\\" not found", "code": 404}'
    with pytest.raises(NotFoundError) as info, api_errors("get nodes n"):
        raise ApiException(status=404, reason="Not Found", body=body)
    assert str(info.value) == 'get nodes n: 404 Not Found: nodes "n" not found'
    with pytest.raises(UnavailableError, match="get nodes n: "), api_errors("get nodes n"):
        raise MaxRetryError(None, "/api/v1/nodes/n", "connection refused")  # type: ignore[arg-type]


# -- the reflector ----------------------------------------------------------------------------


class RecordingSink:
    def __init__(self) -> None:
        self.lists: list[list[str]] = []
        self.events: list[tuple[str, str]] = []
        self.changed = threading.Event()

    def replace(self, resource: Resource, items: list[dict[str, Any]]) -> None:
        self.lists.append(sorted(i["metadata"]["name"] for i in items))
        self.changed.set()

    def apply(self, resource: Resource, event_type: str, obj: dict[str, Any]) -> None:
        self.events.append((event_type, obj["metadata"]["name"]))
        self.changed.set()


def _wait(condition: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def _reflector(
    cluster: FakeCluster, sink: RecordingSink, stop: threading.Event, **kw: Any
) -> Reflector:
    relists: list[str] = []
    reflector = Reflector(
        cluster,
        "nodes",
        sink,
        stop=stop,
        watch_timeout_s=0.05,
        initial_s=0.001,
        max_s=0.01,
        on_relist=relists.append,
        **kw,
    )
    threading.Thread(target=reflector.run, daemon=True).start()
    return reflector


def test_the_reflector_lists_then_watches_and_relists_after_410() -> None:
    cluster = FakeCluster()
    cluster.create("nodes", node("a"))
    sink = RecordingSink()
    stop = threading.Event()
    reflector = _reflector(cluster, sink, stop)
    try:
        assert reflector.synced.wait(5)
        assert sink.lists == [["a"]]
        cluster.create("nodes", node("b"))
        _wait(lambda: ("ADDED", "b") in sink.events)
        # The history is gone while the reflector is between watches: it lists again.
        cluster.compact()
        cluster.create("nodes", node("c"))
        cluster.compact()
        _wait(lambda: ["a", "b", "c"] in sink.lists or ("ADDED", "c") in sink.events)
        cluster.create("nodes", node("d"))
        _wait(lambda: ("ADDED", "d") in sink.events or ["a", "b", "c", "d"] in sink.lists)
    finally:
        stop.set()


def test_the_reflector_survives_a_server_that_goes_away_and_comes_back() -> None:
    cluster = FakeCluster()
    sink = RecordingSink()
    stop = threading.Event()
    reflector = _reflector(cluster, sink, stop)
    try:
        assert reflector.synced.wait(5)
        cluster.close()  # every watch ends, new ones are refused
        cluster.fail("list", "nodes", 0, times=3)
        _wait(lambda: reflector.failures > 0)
        cluster.reopen()
        cluster.create("nodes", node("late"))
        _wait(lambda: ("ADDED", "late") in sink.events or ["late"] in sink.lists)
        _wait(lambda: reflector.failures == 0)
    finally:
        stop.set()


def test_a_stopped_reflector_returns() -> None:
    cluster = FakeCluster()
    stop = threading.Event()
    reflector = Reflector(cluster, "nodes", RecordingSink(), stop=stop, watch_timeout_s=0.05)
    thread = threading.Thread(target=reflector.run)
    thread.start()
    assert reflector.synced.wait(5)
    stop.set()
    thread.join(5)
    assert not thread.is_alive()

"""Events: written once per reason and message, repeated as a count, new when the reason changes."""

from __future__ import annotations

from controller_fixtures import FakeClock

from agent_kit.events import EventRecorder, ObjectRef
from tests.fakes.cluster import FakeCluster

POD = ObjectRef("Pod", "v1", "default", "p", "uid-1")


def test_the_same_message_is_rate_limited_then_counted() -> None:
    cluster = FakeCluster()
    clock = FakeClock()
    recorder = EventRecorder(
        cluster, component="dra-driver-controller", instance="me", interval_s=60, clock=clock
    )
    assert recorder.emit(POD, "Warning", "Unplaceable", "no GPU")
    assert not recorder.emit(POD, "Warning", "Unplaceable", "no GPU")
    clock.advance(61)
    assert recorder.emit(POD, "Warning", "Unplaceable", "no GPU")
    (event,) = cluster.objects("events")
    assert event["count"] == 2
    assert event["involvedObject"] == {
        "kind": "Pod",
        "apiVersion": "v1",
        "namespace": "default",
        "name": "p",
        "uid": "uid-1",
    }
    assert event["source"]["component"] == "dra-driver-controller"


def test_a_changed_reason_is_written_at_once() -> None:
    cluster = FakeCluster()
    recorder = EventRecorder(
        cluster, component="dra-driver-controller", instance="me", interval_s=60, clock=FakeClock()
    )
    recorder.emit(POD, "Warning", "Unplaceable", "no GPU")
    recorder.emit(POD, "Warning", "Unplaceable", "no GPU with 80Gi")
    assert sorted(e["message"] for e in cluster.objects("events")) == ["no GPU", "no GPU with 80Gi"]


def test_a_failing_api_server_does_not_raise() -> None:
    cluster = FakeCluster()
    cluster.fail("create", "events", 500)
    recorder = EventRecorder(
        cluster, component="dra-driver-controller", instance="me", clock=FakeClock()
    )
    assert not recorder.emit(POD, "Normal", "Placed", "ok")
    assert recorder.emit(POD, "Normal", "Placed", "ok")


def test_long_messages_are_cut() -> None:
    cluster = FakeCluster()
    EventRecorder(cluster, component="dra-driver-controller", instance="me").emit(
        POD, "Warning", "X", "y" * 5000
    )
    (event,) = cluster.objects("events")
    assert len(event["message"]) == 1024 and event["message"].endswith("...")

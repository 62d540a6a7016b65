"""The Reflector after an API server restart: the watch's history is gone (410 Gone), it
lists again, and from that answer on it counts as healthy, even when nothing changes
afterwards (liveness reads its failure count)."""

from __future__ import annotations

import threading
import time
from typing import Any

from controller_fixtures import node

from agent_kit.kube import Reflector, Resource
from tests.fakes.cluster import FakeCluster


class _Lists:
    def __init__(self) -> None:
        self.lists: list[list[str]] = []

    def replace(self, resource: Resource, items: list[dict[str, Any]]) -> None:
        self.lists.append(sorted(item["metadata"]["name"] for item in items))

    def apply(self, resource: Resource, event_type: str, obj: dict[str, Any]) -> None:
        del resource, event_type, obj


def _wait(condition: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_a_relist_after_a_restart_clears_the_failures_without_waiting_for_an_event() -> None:
    cluster = FakeCluster()
    cluster.create("nodes", node("a"))
    sink = _Lists()
    stop = threading.Event()
    relists: list[str] = []
    reflector = Reflector(
        cluster,
        "nodes",
        sink,
        stop=stop,
        # Long watches: only the list can be what clears the failures here.
        watch_timeout_s=60,
        initial_s=0.001,
        max_s=0.01,
        on_relist=relists.append,
    )
    thread = threading.Thread(target=reflector.run, daemon=True)
    thread.start()
    try:
        assert reflector.synced.wait(5)
        cluster.close()  # the API server stops: watches end, new ones are refused
        _wait(lambda: reflector.failures >= 3)
        cluster.create("nodes", node("b"))  # written while the watch was away
        cluster.compact()  # the restarted server no longer has the watch's history
        cluster.reopen()
        _wait(lambda: len(sink.lists) == 2)
        assert sink.lists == [["a"], ["a", "b"]]
        assert relists == ["nodes"]
        _wait(lambda: reflector.failures == 0, timeout_s=2)
    finally:
        stop.set()
        cluster.close()
        thread.join(5)
    assert not thread.is_alive()

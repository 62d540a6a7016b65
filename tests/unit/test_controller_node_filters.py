"""The node filter kept per pod shape: after any change of a node's facts or usage it
answers what filter_nodes answers on the whole cluster, and pods of one shape reuse it."""

from __future__ import annotations

from typing import Any

from controller_fixtures import GATE, FakeClock, node, pod

from controller.cache import ClusterCache
from controller.cache.node_filters import NodeChanges, NodeFilters
from controller.scheduling import NodeFilter, PodInfo, filter_nodes, parse_pod
from tests.fakes.cluster import FakeCluster


def _nodes(count: int, **overrides: Any) -> list[dict[str, Any]]:
    return [node(f"n{i}", cpu="4", **overrides) for i in range(count)]


def _pod(name: str, *, cpu: str = "1", **kwargs: Any) -> PodInfo:
    return parse_pod(FakeCluster().create("pods", pod(name, cpu=cpu, **kwargs)))


def _whole(cache: ClusterCache, info: PodInfo) -> NodeFilter:
    with cache.lock:
        return filter_nodes(info, cache.nodes(), cache.node_usage())


def _kept(cache: ClusterCache, info: PodInfo) -> NodeFilter:
    with cache.lock:
        return cache.node_filters.filter(info)


def _same(cache: ClusterCache, info: PodInfo) -> None:
    kept, whole = _kept(cache, info), _whole(cache, info)
    assert kept.nodes == whole.nodes
    assert list(kept.rejected.items()) == list(whole.rejected.items())


def test_node_changes_reach_the_kept_verdicts() -> None:
    cache = ClusterCache(gate=GATE, clock=FakeClock())
    cache.replace("nodes", _nodes(4))
    first = _pod("p0")
    _same(cache, first)
    # Facts: a taint, a node gone, a new node, a cordon.
    tainted = node("n1", cpu="4", taints=[{"key": "gpu", "value": "bad", "effect": "NoSchedule"}])
    cache.apply("nodes", "MODIFIED", tainted)
    cache.apply("nodes", "DELETED", node("n2"))
    cache.apply("nodes", "ADDED", node("n9", cpu="4"))
    cache.apply("nodes", "MODIFIED", node("n3", cpu="4", unschedulable=True))
    _same(cache, _pod("p1"))
    assert _kept(cache, _pod("p2")).nodes == ["n0", "n9"]
    # Usage: bound pods and a nomination fill n0 up.
    for index in range(3):
        cache.apply("pods", "ADDED", pod(f"b{index}", cpu="1", gated=False, node_name="n0"))
    cache.nominate(_pod("q"), "n0")
    _same(cache, _pod("p3"))
    assert _kept(cache, _pod("p4")).rejected["n0"] == "Insufficient cpu"
    cache.unnominate("default/q")
    _same(cache, _pod("p5"))
    assert "n0" in _kept(cache, _pod("p6")).nodes
    assert cache.node_filters.reused >= 6


def test_each_pod_shape_has_its_own_verdicts() -> None:
    cache = ClusterCache(gate=GATE, clock=FakeClock())
    cache.replace("nodes", [*_nodes(2), node("big", cpu="64", labels={"size": "big"})])
    small, large = _pod("s", cpu="1"), _pod("l", cpu="8")
    selected = _pod("sel", node_selector={"size": "big"})
    for info in (small, large, selected, small, large, selected):
        _same(cache, info)
    assert _kept(cache, large).nodes == ["big"]
    assert _kept(cache, selected).nodes == ["big"]
    assert _kept(cache, small).nodes == ["big", "n0", "n1"]


def test_a_long_change_log_starts_over_and_stays_right() -> None:
    changes = NodeChanges()
    cache = ClusterCache(gate=GATE, clock=FakeClock())
    cache.replace("nodes", _nodes(2))
    with cache.lock:
        filters = NodeFilters(cache.nodes(), cache.node_usage(), changes)
        info = _pod("p")
        assert filters.filter(info).nodes == ["n0", "n1"]
        for _ in range(5000):
            changes.changed("n0")
        assert changes.epoch == 0
        assert filters.filter(info).nodes == ["n0", "n1"]
        assert changes.epoch == 1
        assert not changes.log

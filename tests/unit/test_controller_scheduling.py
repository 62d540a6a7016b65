"""What the scheduler checks besides devices: pod requests, tolerations, node filters."""

from __future__ import annotations

from typing import Any

import pytest
from controller_fixtures import node, pod

from api.errors import InvalidInputError
from api.resource_v1 import Node
from controller.scheduling import (
    NodeFacts,
    NodeUsage,
    Requests,
    Toleration,
    filter_nodes,
    node_facts,
    parse_pod,
)


def _nodes(*raw: dict[str, Any]) -> dict[str, NodeFacts]:
    return {str(n["metadata"]["name"]): node_facts(Node.model_validate(n)) for n in raw}


def test_requests_count_sidecars_init_peaks_and_overhead() -> None:
    raw = pod("p", cpu="1", memory="1Gi")
    raw["spec"]["initContainers"] = [
        {"name": "sidecar", "restartPolicy": "Always", "resources": {"requests": {"cpu": "500m"}}},
        {"name": "setup", "resources": {"requests": {"cpu": "3", "memory": "100Mi"}}},
    ]
    raw["spec"]["overhead"] = {"cpu": "100m"}
    requests = parse_pod(raw).requests
    # max(1 + 0.5 sidecar, 3 + 0.5 sidecar running next to setup) + 0.1 overhead, in millicores
    assert requests.cpu == 3600
    assert requests.memory == 1024**3


def test_pod_level_requests_win() -> None:
    raw = pod("p", cpu="1")
    raw["spec"]["resources"] = {"requests": {"cpu": "4"}}
    assert parse_pod(raw).requests.cpu == 4000


def test_fractions_round_up_as_the_scheduler_counts() -> None:
    assert parse_pod(pod("p", cpu="0.0001", memory="1.5")).requests == Requests(1, 2)


def test_the_pods_own_nomination_does_not_count_against_it() -> None:
    nodes = _nodes(node("a", cpu="2"))
    p = parse_pod(pod("p", cpu="2"))
    usage = {"a": NodeUsage(Requests(cpu=2000), 1)}
    assert filter_nodes(p, nodes, usage).nodes == []
    assert filter_nodes(p, nodes, usage, own=("a", p.requests)).nodes == ["a"]


def test_a_bad_allocatable_value_names_the_node() -> None:
    with pytest.raises(InvalidInputError, match=r"node a: status.allocatable.cpu"):
        node_facts(Node.model_validate(node("a", cpu="many")))


def test_a_bad_quantity_names_the_pod_and_field() -> None:
    with pytest.raises(InvalidInputError, match=r"pod default/p: containers\[0\].cpu"):
        parse_pod(pod("p", cpu="lots"))


@pytest.mark.parametrize(
    ("toleration", "taint", "tolerated"),
    [
        (Toleration(operator="Exists"), ("k", "v", "NoSchedule"), True),
        (Toleration(key="k", operator="Exists"), ("k", "v", "NoExecute"), True),
        (Toleration(key="k", value="v"), ("k", "v", "NoSchedule"), True),
        (Toleration(key="k", value="w"), ("k", "v", "NoSchedule"), False),
        (Toleration(key="k", value="v", effect="NoExecute"), ("k", "v", "NoSchedule"), False),
        (Toleration(key="j", operator="Exists"), ("k", "v", "NoSchedule"), False),
    ],
)
def test_tolerations(toleration: Toleration, taint: tuple[str, str, str], tolerated: bool) -> None:
    assert toleration.tolerates(*taint) is tolerated


def test_filter_reasons_read_like_the_schedulers() -> None:
    nodes = _nodes(
        node("a", cpu="1"),
        node("b", labels={"zone": "z"}, taints=[{"key": "gpu", "effect": "NoSchedule"}]),
        node("c", labels={"zone": "z"}, unschedulable=True),
        node("d", labels={"zone": "z"}, pods="1"),
        node("e", labels={"zone": "z"}, taints=[{"key": "soft", "effect": "PreferNoSchedule"}]),
    )
    p = parse_pod(pod("p", cpu="2", node_selector={"zone": "z"}))
    usage = {"d": NodeUsage(Requests(), 1)}
    result = filter_nodes(p, nodes, usage)
    assert result.nodes == ["e"]
    assert result.rejected == {
        "a": "node(s) didn't match Pod's node affinity/selector",
        "b": "node(s) had untolerated taint {gpu}",
        "c": "node(s) were unschedulable",
        "d": "Too many pods",
    }
    assert result.summary().startswith("1/5 nodes are available: ")


def test_required_affinity_terms_are_ored_and_match_fields_by_name() -> None:
    nodes = _nodes(node("a"), node("b", labels={"gpu": "h100"}), node("c"))
    affinity = {
        "nodeSelectorTerms": [
            {"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["h100"]}]},
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["c"]}]},
        ]
    }
    result = filter_nodes(parse_pod(pod("p", affinity=affinity)), nodes, {})
    assert result.nodes == ["b", "c"]


def test_nodes_that_report_no_allocatable_are_not_limited_by_it() -> None:
    nodes = _nodes(node("a", cpu=None, memory=None, pods=None))
    assert filter_nodes(parse_pod(pod("p", cpu="64")), nodes, {}).nodes == ["a"]


def test_excluded_nodes_are_left_out_with_a_reason() -> None:
    nodes = _nodes(node("a"), node("b"))
    result = filter_nodes(parse_pod(pod("p")), nodes, {}, excluded=["a"])
    assert result.nodes == ["b"]
    assert "earlier placement" in result.rejected["a"]

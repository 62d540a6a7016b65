"""Node rules (:mod:`api.validation.node`): which nodes a slice or device serves, node
selectors, and the Node object itself.
"""

from __future__ import annotations

from typing import Any

import pytest
from validation_fixtures import SLICE, Mutation, assert_rejected, dev, messages

from api.resource_v1 import Node, ObjectMeta
from api.validation import validate


def test_node_needs_only_a_valid_name() -> None:
    assert validate(Node(metadata=ObjectMeta(name="node-a"))) == []
    assert [str(e).split(",")[0] for e in validate(Node())] == [
        "metadata.name: required: node name"
    ]
    assert "invalid node name" in str(validate(Node(metadata=ObjectMeta(name="Node_A")))[0])


@pytest.mark.parametrize(
    ("mutate", "path", "fragment"),
    [
        (
            lambda d: d["spec"].pop("nodeName"),
            "spec",
            "exactly one of `nodeName`, `nodeSelector`, `allNodes`, `perDeviceNodeSelection`",
        ),
        (lambda d: d["spec"].update(allNodes=True), "spec", "found nodeName, allNodes"),
        (lambda d: d["spec"].update(allNodes=False), "spec.allNodes", "must be true"),
        (
            lambda d: d["spec"].update(perDeviceNodeSelection=False),
            "spec.perDeviceNodeSelection",
            "must be true",
        ),
        (lambda d: d["spec"].update(nodeName=""), "spec.nodeName", "non-empty DNS subdomain"),
        (
            lambda d: (
                d["spec"].pop("nodeName"),
                d["spec"].update(
                    nodeSelector={
                        "nodeSelectorTerms": [
                            {"matchExpressions": [{"key": "a", "operator": "Exists"}]},
                            {"matchExpressions": [{"key": "b", "operator": "Exists"}]},
                        ]
                    }
                ),
            ),
            "spec.nodeSelector.nodeSelectorTerms",
            "exactly one term, not 2",
        ),
        (
            lambda d: (
                d["spec"].pop("nodeName"),
                d["spec"].update(
                    nodeSelector={
                        "nodeSelectorTerms": [
                            {"matchExpressions": [{"key": "zone", "operator": "Near"}]}
                        ]
                    }
                ),
            ),
            "spec.nodeSelector.nodeSelectorTerms[0].matchExpressions[0].operator",
            'unsupported value "Near"',
        ),
        (
            lambda d: (
                d["spec"].pop("nodeName"),
                d["spec"].update(
                    nodeSelector={
                        "nodeSelectorTerms": [
                            {"matchExpressions": [{"key": "zone", "operator": "In"}]}
                        ]
                    }
                ),
            ),
            "spec.nodeSelector.nodeSelectorTerms[0].matchExpressions[0].values",
            "at least one value",
        ),
        (
            lambda d: (
                d["spec"].pop("nodeName"),
                d["spec"].update(nodeSelector={"nodeSelectorTerms": [{}]}),
            ),
            "spec.nodeSelector.nodeSelectorTerms[0]",
            "matchExpressions or matchFields",
        ),
        (
            lambda d: (
                d["spec"].pop("nodeName"),
                d["spec"].update(
                    nodeSelector={
                        "nodeSelectorTerms": [
                            {"matchFields": [{"key": "spec.x", "operator": "In", "values": ["a"]}]}
                        ]
                    }
                ),
            ),
            "spec.nodeSelector.nodeSelectorTerms[0].matchFields[0].key",
            '"metadata.name"',
        ),
        (
            lambda d: dev(d).update(nodeName="node-a"),
            "spec.devices[0].nodeName",
            "perDeviceNodeSelection: true",
        ),
        (
            lambda d: (
                d["spec"].pop("nodeName"),
                d["spec"].update(perDeviceNodeSelection=True),
                dev(d, 0).update(nodeName="node-a"),
            ),
            "spec.devices[1]",
            "exactly one of `nodeName`, `nodeSelector`, `allNodes` is required",
        ),
    ],
)
def test_node_selection_rules(mutate: Mutation, path: str, fragment: str) -> None:
    assert_rejected(SLICE, mutate, path, fragment)


def test_node_selector_with_valid_gt_requirement() -> None:
    def selector(d: dict[str, Any]) -> None:
        del d["spec"]["nodeName"]
        d["spec"]["nodeSelector"] = {
            "nodeSelectorTerms": [
                {
                    "matchExpressions": [
                        {"key": "example.com/gen", "operator": "Gt", "values": ["3"]}
                    ]
                }
            ]
        }

    def not_an_integer(d: dict[str, Any]) -> None:
        selector(d)
        d["spec"]["nodeSelector"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"] = ["x"]

    assert messages(SLICE, selector) == []
    assert_rejected(
        SLICE,
        not_an_integer,
        "spec.nodeSelector.nodeSelectorTerms[0].matchExpressions[0].values",
        "single integer",
    )

"""Reading manifests: YAML as kubectl reads it, lists, locations in errors."""

from __future__ import annotations

import pytest

from api.errors import InvalidInputError
from dra_driver.manifest_read import split_documents
from dra_driver.manifests import load_inventory

SLICE = """
apiVersion: resource.k8s.io/v1
kind: ResourceSlice
metadata: {name: node-a-gpus}
spec:
  driver: gpu.dra-driver.io
  nodeName: node-a
  pool: {name: node-a, generation: 1, resourceSliceCount: 1}
  devices:
  - name: gpu-0
    attributes:
      resource.kubernetes.io/pciBusID: {string: 0000:3b:00.0}
      index: {int: 0}
"""


def test_unquoted_bus_ids_stay_strings_and_numbers_stay_numbers() -> None:
    (document,) = split_documents(SLICE, "slice.yaml")
    attributes = document.data["spec"]["devices"][0]["attributes"]
    assert attributes["resource.kubernetes.io/pciBusID"] == {"string": "0000:3b:00.0"}
    assert attributes["index"] == {"int": 0}
    inventory = load_inventory([document])
    (device,) = inventory.slices[0].spec.devices or []
    assert device.attributes is not None
    assert device.attributes["resource.kubernetes.io/pciBusID"].value == "0000:3b:00.0"


def test_lists_are_flattened_and_sources_name_the_item() -> None:
    text = (
        "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Node, metadata: {name: n1}}\n"
    )
    (document,) = split_documents(text, "nodes.yaml")
    assert document.source == "nodes.yaml items[0]"
    assert load_inventory([document]).nodes[0].metadata.name == "n1"


def test_documents_are_numbered_in_multi_document_files() -> None:
    text = "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\n---\n---\n- not an object\n"
    with pytest.raises(InvalidInputError) as caught:
        split_documents(text, "f.yaml")
    assert "f.yaml#2" in str(caught.value)
    assert "must be an object" in str(caught.value)


def test_a_duplicate_object_names_both_places() -> None:
    node = "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\n"
    documents = split_documents(node, "a.yaml") + split_documents(node, "b.yaml")
    with pytest.raises(InvalidInputError) as caught:
        load_inventory(documents)
    message = str(caught.value)
    assert "b.yaml" in message
    assert "a.yaml" in message
    assert "defined twice" in message


def test_an_exported_node_is_not_refused_for_fields_the_model_does_not_carry() -> None:
    text = (
        "apiVersion: v1\nkind: Node\n"
        "metadata: {name: n1, managedFields: [], labels: {zone: a}}\n"
        "spec: {podCIDR: 10.0.0.0/24, providerID: kind://n1}\n"
        "status: {nodeInfo: {kubeletVersion: v1.36.0}, addresses: [], conditions: []}\n"
    )
    assert load_inventory(split_documents(text, "node.yaml")).nodes[0].metadata.name == "n1"


def test_a_misspelt_node_field_is_unknown_unless_lenient() -> None:
    text = "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\nspec: {unschedulabel: true}\n"
    with pytest.raises(InvalidInputError) as caught:
        load_inventory(split_documents(text, "node.yaml"))
    assert "node n1: spec.unschedulabel: unknown field" in str(caught.value)
    inventory = load_inventory(split_documents(text, "node.yaml"), lenient=True)
    assert inventory.warnings == ["node.yaml: node n1: spec.unschedulabel: unknown field"]


def test_scalar_keys_become_json_strings_and_yaml_1_1_booleans_are_booleans() -> None:
    # As kubectl's YAML to JSON conversion: y/n/yes/no/on/off are booleans, and a key that
    # is not a string is written as its JSON text.
    (document,) = split_documents("a: {y: n, 0: 5Gi, off: yes}\nb: [Y, N, on, 'y']\n", "f.yaml")
    assert document.data == {
        "a": {"true": False, "0": "5Gi", "false": True},
        "b": [True, False, True, "y"],
    }


def test_label_keys_that_are_not_strings_read_as_kubectl_sends_them() -> None:
    text = "apiVersion: v1\nkind: Node\nmetadata: {name: n1, labels: {1: a, on: b}}\n"
    (node,) = load_inventory(split_documents(text, "node.yaml")).nodes
    assert node.metadata.labels == {"1": "a", "true": "b"}


def test_a_key_given_twice_is_an_error_but_a_merged_key_may_be_overridden() -> None:
    with pytest.raises(InvalidInputError, match='mapping key "name" already defined at line 1'):
        split_documents("name: a\nname: b\n", "f.yaml")
    (document,) = split_documents("base: &b {x: 1, z: 2}\nm: {<<: *b, x: 3}\n", "f.yaml")
    assert document.data["m"] == {"x": 3, "z": 2}

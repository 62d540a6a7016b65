"""The one-walk build of plain documents (``dra_driver.manifest_yaml``) gives what PyYAML's
constructor with the manifest rules gives, refuses what ``check_bounds`` refuses with the
same error, and leaves every other document to them."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from yaml.constructor import SafeConstructor

from dra_driver.manifest_yaml import ManifestLoader, check_bounds


class ConstructorOnly(ManifestLoader):
    """The same loader with every document built by PyYAML's constructor."""

    def construct_document(self, node: yaml.Node) -> Any:
        check_bounds(node)
        return SafeConstructor.construct_document(self, node)


def both(text: str) -> tuple[list[Any], list[Any]]:
    fast = list(yaml.load_all(text, Loader=ManifestLoader))  # type: ignore[arg-type]
    slow = list(yaml.load_all(text, Loader=ConstructorOnly))  # type: ignore[arg-type]
    return fast, slow


DOCUMENTS = {
    "scalars": "a: 1\nb: -2\nc: 0x1f\nd: 1.5\ne: .inf\nf: null\ng: ~\nh: ''\ni: 'x'\nj: 010\n",
    "booleans as kubectl reads them": "a: y\nb: n\nc: yes\nd: Off\ne: true\nf: 'y'\n",
    "no base 60": "pci: 0000:3b:00.0\ntime: 12:30\n",
    "nested": "spec:\n  devices:\n  - name: gpu-0\n    attributes: {index: {int: 0}}\n  - []\n",
    "aliases": "a: &x {k: [1, 2]}\nb: *x\nc: &s text\nd: *s\n",
    "merge keys": "base: &b {x: 1, y: 2}\nd:\n  <<: *b\n  y: 3\n",
    "keys that are not strings": "1: a\ntrue: b\nnull: c\n1.5: d\n",
    "timestamp": "when: 2001-12-14\n",
    "explicit tags": "a: !!str 12\nb: !!int '7'\nc: !!float '1'\n",
    "several documents": "a: 1\n---\n---\n- x\n---\nplain\n",
    "json": '{"kind": "List", "items": [{"a": [1, 2.5, null, true, "s"]}]}',
}


@pytest.mark.parametrize("text", DOCUMENTS.values(), ids=DOCUMENTS.keys())
def test_same_documents_as_the_constructor(text: str) -> None:
    fast, slow = both(text)
    assert fast == slow
    assert [type(d) for d in fast] == [type(d) for d in slow]


def test_an_alias_is_the_same_object() -> None:
    (fast,), _ = both(DOCUMENTS["aliases"])
    assert fast["a"] is fast["b"]


def _alias_bomb(levels: int) -> str:
    lines = ["a0: &a0 [" + ", ".join(["xxxxxxxxxx"] * 10) + "]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


BOUNDS = {
    "alias bomb": _alias_bomb(7),
    "nested too deep": "a: " + "[" * 120 + "]" * 120 + "\n",
    "nested too deep through an alias": "a: &x "
    + "[" * 60
    + "]" * 60
    + "\nb: "
    + "[" * 50
    + "*x"
    + "]" * 50
    + "\n",
    "recursive alias": "a: &x [1, *x]\n",
    "a List item too large": "kind: List\nitems:\n- {a: " + "x" * (3 * 1024 * 1024) + "}\n",
}


@pytest.mark.parametrize(
    "text",
    [
        "a: 1\na: 2\n",
        "a: !custom 1\n",
        "a: !!binary aGk=\nb: {c: 1, c: 2}\n",
        *BOUNDS.values(),
    ],
    ids=[
        "duplicate key",
        "unknown tag",
        "duplicate key under a tag left to PyYAML",
        *BOUNDS.keys(),
    ],
)
def test_the_same_error_as_the_constructor(text: str) -> None:
    with pytest.raises(yaml.YAMLError) as fast:
        both(text)
    with pytest.raises(yaml.YAMLError) as slow:
        list(yaml.load_all(text, Loader=ConstructorOnly))  # type: ignore[arg-type]
    assert str(fast.value) == str(slow.value)

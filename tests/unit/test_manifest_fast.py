"""The fast reader (yaml_rs) gives ManifestLoader's documents or gives up: never others.

Each case reads the same text both ways: ``fast_load_all`` must return ``None`` or exactly
what ManifestLoader builds, and ``None`` wherever ManifestLoader refuses the text.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import pytest

from api.errors import InvalidInputError
from dra_driver.manifest_fast import fast_load_all
from dra_driver.manifest_read import _load_all, split_documents

REPO = Path(__file__).resolve().parents[2]


def _slow(text: str) -> list[Any] | None:
    try:
        return _load_all(text, "t.yaml")
    except InvalidInputError:
        return None


def _same(a: Any, b: Any) -> bool:
    """Equal, with types (1 is not True, 1.0 is not 1) and NaN equal to NaN."""
    if a.__class__ is not b.__class__:
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


def _agrees(text: str) -> list[Any] | None:
    fast = fast_load_all(text)
    if fast is not None:
        slow = _slow(text)
        assert slow is not None, f"fast read text that ManifestLoader refuses:\n{text}"
        assert _same(fast, slow), f"fast {fast!r}\nslow {slow!r}\ntext:\n{text}"
    return fast


# --- the files the project ships and tests with ------------------------------------------


def _corpus() -> list[Path]:
    roots = [REPO / "deploy", REPO / "e2e", REPO / "tests", REPO / "docs"]
    return sorted(
        p for root in roots for p in root.rglob("*") if p.suffix in (".yaml", ".yml", ".json")
    )


def test_every_manifest_of_the_project_reads_alike() -> None:
    files = _corpus()
    assert len(files) > 20
    fast = 0
    for path in files:
        if _agrees(path.read_text(encoding="utf-8")) is not None:
            fast += 1
    # Most of them take the fast way (Helm templates and tagged files do not).
    assert fast > len(files) // 2


# --- texts where the readers could differ: fast gives up ---------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "a: !!str 12\n",  # a tag
        "a: !custom x\n",
        "a: &x [1]\nb: *x\n",  # an alias
        "%YAML 1.1\n---\na: 1\n",  # a directive
        "a: 1\n...\n",  # a document end
        "a: 1\r\nb: 2\r\n",  # another line break
        "a: x\u2028y\n",
        "a: \x01\n",  # a character libyaml refuses
        "a: 1\na: 2\n",  # a key given twice
        "- a\n- b\n",  # not a mapping
        "on: 1\n",  # YAML 1.1 boolean key
        "1: x\n",  # a key that is not a string
        "a: yes\n",  # YAML 1.1 boolean, read as a string by YAML 1.2
        "a: n\n",
        'a: "yes"\n',  # quoted or not, yaml_rs gives a string: which it was is unknown
        "a: 2001-12-14\n",  # a timestamp
        "<<: {b: 1}\nc: 2\n",  # a merge key
        "a: 1e3\n",  # YAML 1.2 float, a string to YAML 1.1
        "a: 0777\n",  # octal to YAML 1.1, decimal to yaml_rs
        "a: 0o17\n",
        "a: -.5\n",
        "a: " + "[" * 150 + "]" * 150 + "\n",  # past the nesting bound
        "~\n---\na: 1\n",  # a null document before the first separator
    ],
)
def test_gives_up_where_the_readers_could_differ(text: str) -> None:
    assert fast_load_all(text) is None


def test_never_hands_a_deeply_nested_document_to_yaml_rs() -> None:
    # yaml_rs overflows its stack near 20,000 levels; the bound is counted first.
    assert fast_load_all("- " * 30_000 + "a\n") is None
    assert fast_load_all("".join("  " * i + f"k{i}:\n" for i in range(3_000))) is None


@pytest.mark.parametrize(
    "text",
    [
        'a: "1e3"\nb: \'0777\'\nc: "true"\nd: "1"\ne: "-.5"\n',  # quoted: strings to both
        "a: 1\nb: -2\nc: 1.5\nd: true\ne: null\nf: ~\ng:\nh: .inf\n",
        "pci: 0000:3b:00.0\nbus: 0000:08:00.0\nver: 550.54.15\nmem: 80Gi\n",
        "a: x != y && z\n",  # no tag: "!" is not where a node starts
        "# only a comment\n---\na: 1\n---\nb: 2\n",
        "---\na: 1\n---\n---\nb: [1, 2, {c: d}]\n",
        "a: |\n  line\n   more\nb: >-\n  folded\n  text\n\n  para\n",
        "a: \"tab\\there \\u00e9 \\x41\"\nb: 'it''s'\nc: caf\u00e9\n",
        "a:\n- b: 1\n  c: [x, 'w', \"z\"]\n- {d: e}\n",
    ],
)
def test_reads_what_both_read_alike(text: str) -> None:
    assert _agrees(text) is not None


def test_documents_and_labels_are_those_of_manifest_loader() -> None:
    text = "# header\n---\napiVersion: v1\nkind: A\n---\n---\napiVersion: v1\nkind: B\n"
    assert fast_load_all(text) is not None
    fast = split_documents(text, "f.yaml")
    assert [(d.source, d.data["kind"]) for d in fast] == [("f.yaml#0", "A"), ("f.yaml#2", "B")]


# --- generated documents -------------------------------------------------------------


_TOKENS = [
    "a", "gpu-0", "0", "1", "-1", "+1", "10", "007", "08", "0o17", "0x1F", "0b11", "1_000",
    "1e3", "1.5", "1.", "1.5e+3", "1.5e3", "-.5", ".5", ".inf", "-.inf", ".nan", "y", "n",
    "yes", "No", "on", "OFF", "true", "False", "TRUE", "null", "Null", "~", "2001-12-14",
    "2001-12-14 21:59:43.10 -5", "12:30", "0000:3b:00.0", "0000:08:00.0", "80Gi",
    "550.54.15", "9.0.0", "<<", "=", "a b", "a:b", "x-y_z", "caf\u00e9", "\u65e5\u672c",
    "99999999999999999999", "-0", "0.0", "+.5", "3e-2", "1E+2",
]  # fmt: skip


#: Tokens both read alike however written (most of a real manifest).
_COMMON = [
    "a", "gpu-0", "0", "1", "-1", "10", "1.5", "true", "False", "null", "~", "80Gi",
    "0000:3b:00.0", "550.54.15", "a b", "a:b", "x-y_z", "caf\u00e9", "99999999999999999999",
    "0.0", "nvidia.com/gpu", "a'b", 'say "hi"', "back\\slash", "line\nbreak",
]  # fmt: skip


def _scalar(rng: random.Random, flow: bool) -> str:
    token = rng.choice(_TOKENS if rng.random() < 0.1 else _COMMON)
    if "\n" in token or '"' in token or "\\" in token:
        return json.dumps(token)
    style = rng.randrange(4)
    if style == 0 and not (flow and any(c in token for c in ",[]{}")):
        return token
    if style == 1:
        return "'" + token.replace("'", "''") + "'"
    return json.dumps(token, ensure_ascii=rng.random() < 0.5)


def _key(rng: random.Random) -> str:
    if rng.random() < 0.05:
        return rng.choice(["on", "y", "1", "true", "null", '"y"', "<<"])
    return rng.choice(["name", "kind", "a b", "'q'", '"n-1"', "k", "x.y/z", "v"])


def _flow(rng: random.Random, depth: int) -> str:
    if depth > 2 or rng.random() < 0.4:
        return _scalar(rng, flow=True)
    if rng.random() < 0.5:
        return "[" + ", ".join(_flow(rng, depth + 1) for _ in range(rng.randrange(4))) + "]"
    pairs = {_key(rng): _flow(rng, depth + 1) for _ in range(rng.randrange(4))}
    return "{" + ", ".join(f"{k}: {v}" for k, v in pairs.items()) + "}"


def _block(rng: random.Random, depth: int, indent: str) -> list[str]:
    lines: list[str] = []
    for key in {_key(rng) for _ in range(rng.randrange(1, 5))}:
        choice = rng.random()
        if depth < 3 and choice < 0.3:
            lines.append(f"{indent}{key}:")
            lines += _block(rng, depth + 1, indent + "  ")
        elif depth < 3 and choice < 0.5:
            lines.append(f"{indent}{key}:")
            for _ in range(rng.randrange(1, 3)):
                item = _block(rng, depth + 1, indent + "  ")
                lines.append(f"{indent}- {item[0].lstrip()}")
                lines += item[1:]
        elif choice < 0.7:
            lines.append(f"{indent}{key}: {_flow(rng, depth)}")
        else:
            lines.append(f"{indent}{key}: {_scalar(rng, flow=False)}")
    return lines


def test_generated_documents_read_alike() -> None:
    rng = random.Random(20261207)
    fast = 0
    for _ in range(1500):
        docs = ["\n".join(_block(rng, 0, "")) for _ in range(rng.randrange(1, 4))]
        text = "\n---\n".join(docs) + "\n"
        if _agrees(text) is not None:
            fast += 1
    # The tokens are chosen to differ often; many documents still read fast.
    assert fast > 300

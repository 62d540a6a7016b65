"""``kubectl_complete-dra``: what kubectl's plugin completion gets for the words typed after
``kubectl dra`` (tests/cluster/test_cluster_kubectl_plugin.py runs it through kubectl)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import yaml

from dra_cli.completion import DIRECTIVE_DEFAULT, DIRECTIVE_NO_FILE, complete, kubectl_complete_main
from dra_cli.main import _COMMANDS


def values(words: list[str]) -> tuple[list[str], int]:
    candidates, directive = complete(words)
    return [c.split("\t")[0] for c in candidates], directive


def test_a_new_word_lists_every_verb_with_its_help() -> None:
    candidates, directive = complete([""])
    assert [c.split("\t")[0] for c in candidates] == list(_COMMANDS)
    assert f"gpus\t{_COMMANDS['gpus'][0]}" in candidates
    assert directive == DIRECTIVE_NO_FILE
    assert values([]) == (list(_COMMANDS), DIRECTIVE_NO_FILE)


def test_a_prefix_narrows_the_verbs() -> None:
    assert values(["ex"]) == (["explain"], DIRECTIVE_NO_FILE)
    assert values(["nothing-like-it"]) == ([], DIRECTIVE_NO_FILE)


def test_flags_of_the_verb_and_of_the_root() -> None:
    assert values(["gpus", "--no"]) == (["--node"], DIRECTIVE_NO_FILE)
    assert values(["--ver"]) == (["--version"], DIRECTIVE_NO_FILE)
    flags, _ = values(["allocate", "-"])
    assert {"-f", "--filename", "--policy", "-o", "--output", "--lenient"} <= set(flags)


def test_a_flag_value_from_its_choices() -> None:
    assert values(["allocate", "--policy", "bin"]) == (["binpack"], DIRECTIVE_NO_FILE)
    assert values(["gpus", "-o", ""]) == (["table", "wide", "json", "yaml"], DIRECTIVE_NO_FILE)
    assert values(["gpus", "--output=y"]) == (["--output=yaml"], DIRECTIVE_NO_FILE)


def test_a_flag_value_already_given_is_skipped() -> None:
    # `-o json` is consumed; the next word is a flag again.
    assert values(["gpus", "-o", "json", "--fr"]) == (["--free"], DIRECTIVE_NO_FILE)
    assert values(["gpus", "--output=json", "--fr"]) == (["--free"], DIRECTIVE_NO_FILE)


def test_file_values_are_left_to_the_shell() -> None:
    assert values(["allocate", "-f", ""]) == ([], DIRECTIVE_DEFAULT)
    assert values(["gpus", "--kubeconfig", "/tm"]) == ([], DIRECTIVE_DEFAULT)


def test_nested_actions_complete(tmp_path: Path) -> None:
    assert values(["taints", ""]) == (["clear"], DIRECTIVE_NO_FILE)
    flags, _ = values(["taints", "clear", "--a"])
    assert flags == ["--all"]
    assert values(["explain", ""]) == (["claim"], DIRECTIVE_NO_FILE)


def _kubeconfig(path: Path, *names: str) -> Path:
    path.write_text(yaml.safe_dump({"contexts": [{"name": n, "context": {}} for n in names]}))
    return path


def test_contexts_come_from_the_kubeconfig_the_command_would_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _kubeconfig(tmp_path / "a", "prod-a", "lab")
    second = _kubeconfig(tmp_path / "b", "prod-b", "prod-a")
    monkeypatch.setenv("KUBECONFIG", f"{first}:{tmp_path / 'missing'}:{second}")
    assert values(["gpus", "--context", "prod"]) == (["prod-a", "prod-b"], DIRECTIVE_NO_FILE)
    # --kubeconfig among the words wins over the environment.
    only = _kubeconfig(tmp_path / "c", "edge")
    assert values(["gpus", "--kubeconfig", str(only), "--context", ""]) == (
        ["edge"],
        DIRECTIVE_NO_FILE,
    )
    (tmp_path / "bad").write_text(": not yaml: [")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "bad"))
    assert values(["gpus", "--context", ""]) == ([], DIRECTIVE_NO_FILE)


def test_the_executable_prints_candidates_then_the_directive() -> None:
    out = io.StringIO()
    assert kubectl_complete_main(["gpus", "-o", "w"], out=out) == 0
    assert out.getvalue() == "wide\n:4\n"
    out = io.StringIO()
    kubectl_complete_main(["allocate", "-f", ""], out=out)
    assert out.getvalue() == ":0\n"

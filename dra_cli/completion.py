"""Shell completion of ``kubectl dra``: the ``kubectl_complete-dra`` executable.

kubectl (1.26 and later, ``pkg/cmd/plugin/plugin_completion.go`` in ``k8s.io/kubectl``)
completes a plugin's arguments by running ``kubectl_complete-<plugin>`` from ``PATH`` with
the words typed after the plugin's name, the last one being the word under the cursor (empty
when a new word starts). It prints one candidate per line, ``value<TAB>description``, and may
end with ``:<directive>``, a Cobra ShellCompDirective: 0 lets the shell complete file names,
4 (``NoFileComp``) does not. kubectl hands the result to the shell's own completion script
(``kubectl completion bash|zsh|fish``), so once both executables are on ``PATH`` there is
nothing else to install.

What is completed, from the same argparse parser as the command (nothing to keep in step):
subcommands (and ``taints``'s actions), each subcommand's flags, a flag's choices (``-o``,
``--policy``), ``--context`` from the kubeconfig's contexts, and file names for the other
flags' values (``-f``, ``--kubeconfig``). Reading the kubeconfig is the only I/O; no cluster
is called, so completion is instant and works offline.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TextIO

__all__ = ["DIRECTIVE_DEFAULT", "DIRECTIVE_NO_FILE", "complete", "kubectl_complete_main"]

#: Cobra's ShellCompDirective values kubectl reads from the last line.
DIRECTIVE_DEFAULT = 0
"""Let the shell complete file names (when no candidate fits)."""
DIRECTIVE_NO_FILE = 4
"""``ShellCompDirectiveNoFileComp``: offer only the candidates."""


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:  # type: ignore[type-arg]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def _option(parser: argparse.ArgumentParser, word: str) -> argparse.Action | None:
    return parser._option_string_actions.get(word.split("=", 1)[0])


def _takes_value(action: argparse.Action) -> bool:
    return action.nargs != 0


def _kubeconfig_contexts(words: Sequence[str]) -> list[str]:
    """The context names of the kubeconfig the command would read: ``--kubeconfig`` among
    the words, else each file of ``KUBECONFIG``, else ``~/.kube/config``."""
    import yaml

    paths: list[str] = []
    for i, word in enumerate(words):
        if word == "--kubeconfig" and i + 1 < len(words):
            paths = [words[i + 1]]
        elif word.startswith("--kubeconfig="):
            paths = [word.split("=", 1)[1]]
    if not paths:
        paths = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    if not paths:
        paths = [str(Path.home() / ".kube" / "config")]
    names: list[str] = []
    for path in paths:
        try:
            document = yaml.safe_load(Path(path).expanduser().read_text())
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(document, dict):
            for context in document.get("contexts") or []:
                name = context.get("name") if isinstance(context, dict) else None
                if isinstance(name, str) and name not in names:
                    names.append(name)
    return names


def _values(action: argparse.Action, prefix: str, words: Sequence[str]) -> tuple[list[str], int]:
    if action.choices is not None:
        return [str(c) for c in action.choices if str(c).startswith(prefix)], DIRECTIVE_NO_FILE
    if action.dest == "context":
        found = [name for name in _kubeconfig_contexts(words) if name.startswith(prefix)]
        return found, DIRECTIVE_NO_FILE
    # A file, a directory, a name: the shell's file completion is the best offer.
    return [], DIRECTIVE_DEFAULT


def _described(pairs: Iterable[tuple[str, str | None]], prefix: str) -> list[str]:
    return [
        f"{name}\t{' '.join(help_.split())}" if help_ else name
        for name, help_ in pairs
        if name.startswith(prefix)
    ]


def _complete_in(
    parser: argparse.ArgumentParser, words: Sequence[str], current: str, every_word: Sequence[str]
) -> tuple[list[str], int]:
    subparsers = _subparsers(parser)
    i = 0
    while i < len(words):
        word = words[i]
        if word.startswith("-") and word != "-":
            action = _option(parser, word)
            if action is not None and _takes_value(action) and "=" not in word:
                if i + 1 == len(words):
                    return _values(action, current, every_word)
                i += 1
        elif subparsers is not None and word in subparsers.choices:
            return _complete_in(subparsers.choices[word], words[i + 1 :], current, every_word)
        i += 1
    if current.startswith("-"):
        if current.startswith("--") and "=" in current:
            flag, _, prefix = current.partition("=")
            action = _option(parser, flag)
            if action is None or not _takes_value(action):
                return [], DIRECTIVE_NO_FILE
            found, directive = _values(action, prefix, every_word)
            return [f"{flag}={value}" for value in found], directive
        flags = [
            (flag, action.help)
            for action in parser._actions
            for flag in action.option_strings
            if action.help != argparse.SUPPRESS
        ]
        return _described(flags, current), DIRECTIVE_NO_FILE
    if subparsers is not None:
        helps = {a.dest: a.help for a in subparsers._choices_actions}
        return _described(((n, helps.get(n)) for n in subparsers.choices), current), (
            DIRECTIVE_NO_FILE
        )
    positionals = [a for a in parser._actions if not a.option_strings and a.choices]
    if positionals:
        return _described(((str(c), None) for c in positionals[0].choices or ()), current), (
            DIRECTIVE_NO_FILE
        )
    if parser.prog.endswith(" explain"):
        return _described([("claim", "a claim of the live cluster: claim NS/NAME")], current), (
            DIRECTIVE_NO_FILE
        )
    return [], DIRECTIVE_DEFAULT


def complete(words: Sequence[str]) -> tuple[list[str], int]:
    """The candidates for the last of ``words`` (the words after ``kubectl dra``; the last is
    the word being typed, empty for a new one) and the Cobra directive for the shell."""
    from dra_cli.main import _command_in, build_parser

    if not words:
        words = [""]
    *before, current = words
    parser = build_parser("kubectl dra", command=_command_in(before))
    return _complete_in(parser, before, current, words)


def kubectl_complete_main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """``kubectl_complete-dra WORD...``: print the candidates and ``:<directive>``."""
    words = sys.argv[1:] if argv is None else list(argv)
    stream = out or sys.stdout
    try:
        candidates, directive = complete(words)
    except Exception as error:  # a completion that fails must not break the shell
        print(f"kubectl_complete-dra: {error}", file=sys.stderr)
        candidates, directive = [], DIRECTIVE_DEFAULT
    for candidate in candidates:
        print(candidate, file=stream)
    print(f":{directive}", file=stream)
    return 0


def console_main() -> None:
    """The console script's entry point."""
    sys.exit(kubectl_complete_main())

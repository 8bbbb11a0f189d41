"""Every command line in README.md and docs/, and every --help example, parses with the real command-line parser:
options, choices and required arguments cannot drift from the docs again."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from dmfnet_edge.cli.examples import EXAMPLES
from dmfnet_edge.cli.main import build_parser
from dmfnet_edge.cli.registry import TOOLS
from tests.conftest import REPO

PROGS = ("dmfnet", "dmfnet-export")
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


INLINE = re.compile(r"`((?:\.venv/bin/)?dmfnet(?:-export)? [^`]+)`")


def _code_lines(path: Path) -> list[tuple[str, str]]:
    """(where, command) for every dmfnet / dmfnet-export line of the fenced code blocks (continuations joined)
    and of inline code."""
    found, fenced, pending = [], False, ""
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            found += [(f"{path.name}:{number} (inline)", re.sub(r"^\.venv/bin/", "", m))
                      for m in INLINE.findall(line)]
            continue
        text = pending + line.split(" #", 1)[0].strip()
        if text.endswith("\\"):
            pending = text[:-1] + " "
            continue
        pending = ""
        text = re.sub(r"^(\$ )?(\.venv/bin/)?", "", text)
        if text.split(" ", 1)[0] in PROGS:
            found.append((f"{path.name}:{number}", text))
    return found


def _normalised(command: str) -> list[str] | None:
    """Tokens to parse: optional [parts] included, 'a|b' choices take the first; None for summaries ('a / b',
    '...'), which are prose, not command lines."""
    if " / " in command or "..." in command:
        return None
    tokens = shlex.split(command.replace("[", " ").replace("]", " "))
    return [t.split("|", 1)[0] if "|" in t and not t.startswith("-") else t for t in tokens]


def _parsers():
    return {prog: build_parser(prog) for prog in TOOLS}


DOC_LINES = [line for doc in DOCS for line in _code_lines(doc) if _normalised(line[1]) is not None]
EXAMPLE_LINES = [(f"--help of {prog} {name}", line) for prog, commands in EXAMPLES.items()
                 for name, lines in commands.items() for line in lines]


def test_the_docs_have_command_lines_to_check():
    assert len(DOC_LINES) >= 30 and {t.split()[1] for _, t in DOC_LINES if t.startswith("dmfnet ")} >= {
        "fuse", "fuse-dir", "fuse-volume", "eval", "compare", "train", "info"}


@pytest.mark.parametrize("where, command", DOC_LINES + EXAMPLE_LINES, ids=[w for w, _ in DOC_LINES + EXAMPLE_LINES])
def test_documented_command_parses(where, command, capsys):
    tokens = _normalised(command)
    if where.endswith("(inline)"):  # a mention in prose: its command and option names must exist
        _check_names(where, tokens)
        return
    try:
        args = _parsers()[tokens[0]].parse_args(tokens[1:])
    except SystemExit as exc:
        pytest.fail(f"{where}: `{command}` does not parse: {capsys.readouterr().err.strip()} (exit {exc.code})")
    if args.command == "fuse-volume" and ".nii" in str(args.other):
        assert args.other_modality, f"{where}: a NIfTI file names no modality; `{command}` needs --other-modality"


def _check_names(where: str, tokens: list[str]) -> None:
    import argparse

    parser = _parsers()[tokens[0]]
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if len(tokens) < 2 or tokens[1].startswith("-"):
        return
    assert tokens[1] in sub.choices, f"{where}: no command '{tokens[0]} {tokens[1]}'"
    known = {o for a in sub.choices[tokens[1]]._actions for o in a.option_strings}
    unknown = [t for t in tokens[2:] if t.startswith("-") and t.split("=", 1)[0] not in known]
    assert not unknown, f"{where}: '{tokens[0]} {tokens[1]}' has no option {unknown}"


def test_every_command_has_examples_and_every_option_a_help_text():
    import argparse

    for prog, parser in _parsers().items():
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        for name, command in sub.choices.items():
            assert len(EXAMPLES[prog][name]) >= 1, f"{prog} {name} has no --help example"
            silent = [a.option_strings for a in command._actions if not a.help]
            assert not silent, f"{prog} {name}: options without help text: {silent}"

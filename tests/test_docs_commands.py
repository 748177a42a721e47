"""Every ``wardwatch ...`` command the READMEs and ``docs/`` show exists, with the options they show.

Each command (in a code block or an inline code span) is run as ``wardwatch SUBCOMMANDS --help``
in-process; the help must succeed and name every ``--option`` the document uses with it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
from importlib.metadata import entry_points
from pathlib import Path
from typing import NamedTuple

import pytest

from wardwatch.core.cli import COMMAND_GROUP, main

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = sorted([ROOT / "README.md", *ROOT.glob("*/README.md"), *(ROOT / "docs").glob("*.md")])
_INLINE = re.compile(r"`(?:\.venv/bin/)?wardwatch ([^`]+)`")
_IN_BLOCK = re.compile(r"(?:^|[\s/$])wardwatch ([a-z][^#]*)")
_WORD = re.compile(r"^[a-z][a-z0-9-]*$")
_OPTION = re.compile(r"--[a-z][a-z0-9-]*")
_COMMANDS = {"gatt", "broker", "bench", *(ep.name for ep in entry_points(group=COMMAND_GROUP))}


class DocCommand(NamedTuple):
    where: str
    words: tuple[str, ...]  # the subcommand path: wardwatch alerting user add
    options: tuple[str, ...]


def _parse(where: str, text: str) -> DocCommand:
    words: list[str] = []
    for token in (t.rstrip("),.;:") for t in text.split()):
        if not _WORD.match(token):
            break
        words.append(token)
    return DocCommand(where, tuple(words), tuple(dict.fromkeys(_OPTION.findall(text))))


def _doc_commands() -> list[DocCommand]:
    found: list[DocCommand] = []
    for path in DOCUMENTS:
        text = path.read_text(encoding="utf-8")
        name = path.relative_to(ROOT)
        for match in _INLINE.finditer(text):
            found.append(_parse(f"{name}:{text[: match.start()].count(chr(10)) + 1}", match.group(1)))
        in_block = False
        for number, line in enumerate(text.splitlines(), 1):
            if line.lstrip().startswith("```"):
                in_block = not in_block
            elif in_block and (command := _IN_BLOCK.search(line)) and not line.lstrip().startswith("#"):
                found.append(_parse(f"{name}:{number}", command.group(1)))
    return [c for c in found if c.words and c.words[0] in _COMMANDS]  # not prose: "wardwatch is up"


def _help(words: tuple[str, ...]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            code = main([*words, "--help"])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue()


COMMANDS = _doc_commands()


def test_the_documents_show_commands() -> None:
    assert len(COMMANDS) > 40  # the extraction still finds them


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: f"{c.where} wardwatch {' '.join(c.words)}")
def test_documented_command_exists_with_its_options(command: DocCommand) -> None:
    words = command.words
    code, text = _help(words)
    while code != 0 and len(words) > 1:  # a trailing word may be an argument (`gatt decode 2a37`)
        words = words[:-1]
        code, text = _help(words)
    assert code == 0, f"{command.where}: `wardwatch {' '.join(command.words)} --help` fails:\n{text}"
    missing = [option for option in command.options if option not in text]
    assert missing == [], f"{command.where}: `wardwatch {' '.join(words)}` has no {', '.join(missing)}"


def test_documented_python_modules_exist() -> None:
    """``python -m wardwatch...`` in the documents names a module that exists (benchmarks moved into packages)."""
    shown = {
        (path.relative_to(ROOT), match.group(1))
        for path in DOCUMENTS
        for match in re.finditer(r"python3? -m (wardwatch[a-z0-9_.]*)", path.read_text(encoding="utf-8"))
    }
    assert shown
    assert [(where, name) for where, name in sorted(shown) if importlib.util.find_spec(name) is None] == []

"""The README is a front page (at most 250 lines) and the docs/ pages hold the rest:
every relative link in them resolves, and every `tcpceiling …` command they show
parses (its options exist and its values convert; nothing runs), as the --help
examples are checked in test_help.py."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from tcpceiling.cli import main

ROOT = Path(__file__).parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```(\w*)\s*$")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
#: where a shell line stops being tcpceiling's arguments
ENDS = {"|", ">", ">>", "&&", "||", ";", "2>&1"}


def code_lines(text: str) -> Iterator[str]:
    """Lines inside fenced code blocks, continuation lines joined."""
    inside, pending = False, ""
    for line in text.splitlines():
        if FENCE.match(line):
            inside, pending = not inside, ""
            continue
        if not inside:
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        yield pending + line
        pending = ""


def commands(text: str) -> Iterator[str]:
    """The tcpceiling command lines a page shows: after a `$ ` prompt, alone on a
    line of a shell block, or quoted as a comment (`# tcpceiling rate …`)."""
    for line in code_lines(text):
        bare = re.sub(r"^(\$ |# )?(sudo )?", "", line.strip())
        if bare.startswith("tcpceiling ") or bare == "tcpceiling":
            yield bare


def words(command: str) -> list[str]:
    out = []
    for w in shlex.split(command, comments=True):
        if w in ENDS:
            break
        out.append(w)
    return out


def all_commands() -> list[tuple[str, str]]:
    return [(p.relative_to(ROOT).as_posix(), c) for p in PAGES for c in commands(p.read_text())]


def test_the_readme_is_a_front_page() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


def test_every_command_has_a_page_the_readme_links() -> None:
    readme = (ROOT / "README.md").read_text()
    for name in main.commands:
        assert (ROOT / "docs" / f"{name}.md").exists(), name
        assert f"](docs/{name}.md)" in readme, name


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(page: Path) -> None:
    for target in LINK.findall(page.read_text()):
        if re.match(r"^[a-z]+:", target):
            continue  # http:, https:, mailto:
        assert (page.parent / target).exists(), f"{page.name}: {target}"


def test_the_pages_show_commands() -> None:
    shown = {words(c)[1] for _, c in all_commands() if len(words(c)) > 1}
    assert shown >= {"tour", "analyze", "probe", "rate", "tune", "doctor", "trace", "exporter"}


@pytest.mark.parametrize(("page", "command"), all_commands())
def test_every_command_shown_parses(
    page: str, command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = words(command)
    for w in argv:
        if w.endswith(".json") and "/" not in w:
            (tmp_path / w).write_text("{}")  # a result file the command reads
    assert argv[0] == "tcpceiling", command
    if len(argv) == 1:
        return
    cmd = main.commands.get(argv[1])
    assert cmd is not None, f"{page}: no command {argv[1]!r}: {command}"
    try:
        with cmd.make_context(argv[1], argv[2:]) as ctx:
            assert ctx.params is not None
    except click.UsageError as exc:
        pytest.fail(f"{page}: {command}: {exc.format_message()}")

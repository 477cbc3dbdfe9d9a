"""--help teaches: every option of every command says what it is, every command has
examples (that parse) and its exit codes, and shell completion works."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from tcpceiling.cli import USAGE, main


def commands(
    cmd: click.Command = main, path: tuple[str, ...] = ("tcpceiling",)
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    yield path, cmd
    if isinstance(cmd, click.Group):
        for name, sub in sorted(cmd.commands.items()):
            yield from commands(sub, (*path, name))


def test_every_option_has_help() -> None:
    missing = [
        f"{' '.join(path)} {p.opts[0]}"
        for path, cmd in commands()
        for p in cmd.params
        if isinstance(p, click.Option) and not p.hidden and not (p.help or "").strip()
    ]
    assert not missing, missing


def test_every_command_has_examples_and_exit_codes() -> None:
    for path, cmd in commands():
        if isinstance(cmd, click.Group):
            continue
        text = cmd.get_help(click.Context(cmd, info_name=path[-1]))
        assert "Examples:" in text and "Exit codes: 0" in text, path


def test_every_example_parses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each example's options exist and their values convert (nothing runs; the
    result files an example reads are made, empty, in a scratch directory)."""
    monkeypatch.chdir(tmp_path)
    for name, (examples, _exits) in USAGE.items():
        for word in (w for e in examples for w in shlex.split(e) if w.endswith(".json")):
            (tmp_path / word).touch()
        for example in examples:
            words = shlex.split(example)
            assert words[:2] == ["tcpceiling", name], example
            cmd = main.commands[name]
            with cmd.make_context(name, words[2:]) as ctx:
                assert ctx.params is not None


def test_shell_completion() -> None:
    env = {
        **os.environ,
        "_TCPCEILING_COMPLETE": "bash_complete",
        "COMP_WORDS": "tcpceiling pro",
        "COMP_CWORD": "1",
    }
    out = subprocess.run(
        [sys.executable, "-m", "tcpceiling"], env=env, capture_output=True, text=True, timeout=60
    )
    assert "plain,probe" in out.stdout.splitlines(), out  # bash_complete: TYPE,VALUE lines

"""The progress bar, seen as a user sees it: in a pseudo-terminal (util-linux
`script`), and absent when stderr is not a terminal or with --quiet."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys

import pytest

from tests.conftest import needs_root

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
TCPCEILING = [sys.executable, "-m", "tcpceiling"]


def in_a_terminal(args: list[str]) -> str:
    """Run in a pty; what the terminal showed, escape codes removed, one line per redraw."""
    cmd = shlex.join([*TCPCEILING, *args])
    out = subprocess.run(
        ["script", "-qfec", cmd, "/dev/null"], capture_output=True, text=True, timeout=300,
        env={"TERM": "xterm", "COLUMNS": "100", "PATH": "/usr/bin:/bin"},
    ).stdout  # fmt: skip
    return ANSI.sub("", out).replace("\r", "\n")


@needs_root
@pytest.mark.skipif(shutil.which("script") is None, reason="needs script (util-linux)")
def test_probe_in_a_terminal_shows_a_bar_with_eta() -> None:
    shown = in_a_terminal(["probe", "--target", "200000"])
    bars = [line for line in shown.splitlines() if line.startswith("opening")]
    assert bars, shown[-2000:]
    assert any(re.search(r"\d+/200000 +\d+% +[\d,]+/s ETA \d+:\d\d:\d\d", b) for b in bars), bars[
        -3:
    ]
    quiet = in_a_terminal(["probe", "--target", "20000", "--quiet"])
    assert "ETA" not in quiet and "established" in quiet  # the result, without a bar


@needs_root
def test_no_bar_when_stderr_is_not_a_terminal() -> None:
    proc = subprocess.run(
        [*TCPCEILING, "probe", "--target", "20000"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0 and "ETA" not in proc.stderr

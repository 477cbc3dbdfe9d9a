"""Regenerate the two report pictures the README shows (docs/*.svg) from fresh runs
on this machine: analyze here next to the stock-distro fixture tree, and the memory
curve of a 200,000-connection probe. One command: python docs/pictures.py (root)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
TREE = HERE.parent / "tests" / "fixtures" / "stock-distro"


def run(*args: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-m", "tcpceiling", *args, "--json"], capture_output=True, text=True
    )
    return dict(json.loads(out.stdout))


def figure(page: str, plot: str) -> str:
    """The inline SVG of one figure of a report page."""
    m = re.search(rf'data-plot="{plot}">(<svg.*?</svg>)', page, re.S)
    assert m, plot
    return '<?xml version="1.0" encoding="utf-8"?>\n' + m.group(1) + "\n"


def main() -> None:
    from tcpceiling.report.html import page

    here = run("analyze", "--role", "server")
    other = run(
        "analyze", "--role", "server", "--procfs", str(TREE / "proc"), "--sysfs", str(TREE / "sys")
    )
    two = page([("this VM (2 cores, 24 GB)", here), ("stock distro (16 GB, uid 1000)", other)])
    (HERE / "report-limits.svg").write_text(figure(two, "limits-server"))
    probe = run("probe", "--target", "200000")
    (HERE / "report-memory.svg").write_text(figure(page([("probe 200k", probe)]), "memory"))


if __name__ == "__main__":
    main()

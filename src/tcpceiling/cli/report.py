"""tcpceiling report: parses its options, calls the library, renders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from tcpceiling import results
from tcpceiling.cli.common import errors_to_exit, main, report_target, stderr
from tcpceiling.errors import InputError


@main.command("report")
@click.argument(
    "results_in",
    nargs=-1,
    required=True,
    metavar="RESULT.json...",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    metavar="FILE.html",
    help="The HTML file to write.",
)
@errors_to_exit
def report_cmd(results_in: tuple[Path, ...], output: Path) -> None:
    """One HTML report from saved results (`--json` of analyze, probe, compare-io,
    rate): results of one kind are drawn in the same figures, so two machines, or a
    host before and after `tune`, overlay.

    Example: tcpceiling report before.json after.json -o tune.html"""
    from tcpceiling.report.html import SECTIONS, write_page

    report_target(output)
    named = []
    for path in results_in:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: not a JSON result ({exc})") from exc
        kind = data.get("kind") if isinstance(data, dict) else None
        if kind not in SECTIONS:
            raise InputError(f"{path}: not an analyze, probe, compare-io, rate or tune result")
        named.append((path.stem, results.check_document(data, kind, str(path))))
    try:
        write_page(output, named)
    except (KeyError, TypeError, IndexError, ValueError) as exc:
        raise InputError(incomplete(named, results_in, exc)) from exc
    stderr.print(f"wrote {output}")


def incomplete(
    named: list[tuple[str, dict[str, Any]]], paths: tuple[Path, ...], exc: Exception
) -> str:
    """Which result could not be drawn, and what it lacks (each one alone, in order)."""
    from tcpceiling.report.html import page

    for (_name, doc), path in zip(named, paths, strict=True):
        try:
            page([(path.stem, doc)])
        except (KeyError, TypeError, IndexError, ValueError) as own:
            return f"{path}: not a complete {doc.get('kind')} result (missing or bad: {own})"
    return f"the results do not fit in one report: {exc}"

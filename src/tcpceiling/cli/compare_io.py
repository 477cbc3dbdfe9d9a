"""tcpceiling compare-io: parses its options, calls the library, renders."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from tcpceiling import results
from tcpceiling.cli.common import (
    EXIT_LIMIT,
    EXIT_OK,
    QUIET_OPTION,
    REPORT_OPTION,
    emit,
    errors_to_exit,
    main,
    report_target,
    stderr,
)
from tcpceiling.host.read import read_identity
from tcpceiling.host.roots import Roots


@main.command("compare-io")
@click.option(
    "--connections",
    type=click.IntRange(min=1),
    default=5000,
    show_default=True,
    help="Connections each model holds (the same number for both).",
)
@click.option(
    "--wake-samples",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="Round trips on random held connections, per client worker.",
)
@REPORT_OPTION
@QUIET_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON on stdout.")
@errors_to_exit
def compare_io_cmd(
    connections: int, wake_samples: int, as_json: bool, report_path: Path | None, quiet: bool
) -> None:
    """Threads vs epoll at the same N: memory, setup time, CPU and wake-up latency."""
    report_target(report_path)
    from tcpceiling.compare.compare import compare_io
    from tcpceiling.report.compare import render_comparison
    from tcpceiling.report.progress import LiveProgress

    with LiveProgress(stderr, False, live=sys.stderr.isatty() and not quiet) as progress:
        result = compare_io(connections, wake_samples, progress)
    emit(
        "compare-io", result, results.host_block(read_identity(Roots()), None), as_json, report_path
    )
    render_comparison(result, stderr)
    sys.exit(EXIT_OK if result.memory_ratio is not None else EXIT_LIMIT)

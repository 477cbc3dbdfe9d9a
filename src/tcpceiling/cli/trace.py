"""tcpceiling trace: parses its options, calls the library, renders."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console

from tcpceiling import results
from tcpceiling.cli.common import (
    EXIT_LIMIT,
    EXIT_OK,
    FiniteRange,
    errors_to_exit,
    fail,
    main,
    roots_options,
)
from tcpceiling.host.roots import Roots


@main.command("trace")
@click.argument("seconds", type=FiniteRange(min=0.1, max=3600), default=5.0)
@roots_options
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@errors_to_exit
def trace_cmd(
    seconds: float, procfs: Path, sysfs: Path, cgroupfs: Path | None, as_json: bool
) -> None:
    """Who is hitting a ceiling right now: every process's failing socket, connect,
    accept, bind, epoll_ctl and clone calls for SECONDS, with the limit each errno
    means, and connects refused or timed out with their destination. A tracefs
    instance of its own, removed on every exit path (root)."""
    from tcpceiling.observe.trace import trace
    from tcpceiling.report.watch import render_trace
    from tcpceiling.signals import ended_by_signal

    try:
        # taken from here, before tracefs is looked at or mounted: a signal at any
        # moment of the start ends the run (and is remembered if its interrupt is lost)
        with ended_by_signal():
            result = trace(seconds, Roots(procfs, sysfs, cgroupfs))
    except KeyboardInterrupt:
        fail("interrupted: the trace instance was removed", 130)
    if as_json:
        click.echo(results.dumps(results.document("trace", result, {})))
    else:
        render_trace(result, Console(width=200))
    sys.exit(EXIT_LIMIT if result.rows else EXIT_OK)

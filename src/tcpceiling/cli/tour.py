"""tcpceiling tour: parses its options, runs the walk, renders each step as it ends."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from tcpceiling import results
from tcpceiling.cli.common import (
    EXIT_LIMIT,
    EXIT_OK,
    REPORT_OPTION,
    emit,
    errors_to_exit,
    main,
    report_target,
    stderr,
)
from tcpceiling.errors import HostError
from tcpceiling.host.read import read_identity
from tcpceiling.host.roots import Roots


@main.command("tour")
@REPORT_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print every step as JSON on stdout.")
@errors_to_exit
def tour_cmd(report_path: Path | None, as_json: bool) -> None:
    """How many TCP connections can this machine hold? The classic answer, replayed
    here step by step: the 4-tuple and its ports, file descriptors, a thread per
    connection against epoll, memory, CPU, and capacity against rate. Each step is
    predicted by analyze and proven with real connections, in namespaces and cgroups
    of its own that it removes (root; about 65 s, the last minute waiting out
    TIME_WAIT)."""
    report_target(report_path)
    if os.geteuid() != 0:  # before the probe's modules load
        raise HostError("tour needs root: namespaces and cgroups of its own")
    from tcpceiling.report.tour import render_step, render_table
    from tcpceiling.tour.run import tour

    result = tour(on_step=lambda s: render_step(s, stderr))
    render_table(result, stderr)
    host = results.host_block(read_identity(Roots()), None)
    emit("tour", result, host, as_json, report_path)
    agreed = all(t.agrees is not False for s in result.steps for t in s.trials)
    sys.exit(EXIT_OK if agreed else EXIT_LIMIT)

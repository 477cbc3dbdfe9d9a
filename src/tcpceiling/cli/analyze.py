"""tcpceiling analyze: parses its options, calls the library, renders."""

from __future__ import annotations

from typing import Any

import click

from tcpceiling import results
from tcpceiling.analysis.analyze import analyze
from tcpceiling.cli.common import (
    REPORT_OPTION,
    SET_OPTION,
    emit,
    errors_to_exit,
    main,
    report_target,
    roots_options,
    scenario_options,
    scenarios_from,
    stderr,
)
from tcpceiling.host.read import read_identity
from tcpceiling.host.roots import Roots
from tcpceiling.report.analysis import render_analysis


@main.command("analyze")
@scenario_options
@SET_OPTION
@roots_options
@REPORT_OPTION
@click.option("--all", "every", is_flag=True, help="Also list the limits that do not bind here.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
@errors_to_exit
def analyze_cmd(**o: Any) -> None:
    """Predict the connection ceiling from every limit on this machine."""
    report_target(o["report_path"])
    scenarios = scenarios_from(o)
    roots = Roots(o["procfs"], o["sysfs"], o["cgroupfs"])
    netns = o["netns"]
    result = analyze(scenarios, roots, o["pid"] or "self", netns, o["settings"])
    host = results.host_block(read_identity(roots), netns)
    emit("analyze", result, host, o["as_json"], o["report_path"])
    if not o["as_json"]:
        render_analysis(result, stderr, o["every"])

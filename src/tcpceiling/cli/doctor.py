"""tcpceiling doctor: parses its options, calls the library, renders."""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console

from tcpceiling import results
from tcpceiling.cli.common import UNKNOWN, FiniteRange, errors_to_exit, fail, main
from tcpceiling.cli.observe_options import observe_options, scope_from, thresholds
from tcpceiling.errors import HostError, InputError
from tcpceiling.host.roots import Roots

if TYPE_CHECKING:
    from tcpceiling.observe.trace import TraceResult


@main.command("doctor")
@observe_options
@thresholds
@click.option(
    "--interval",
    type=FiniteRange(min=0.1, max=600),
    default=2.0,
    show_default=True,
    help="Seconds between the two samples the rates come from.",
)
@click.option(
    "--kmsg",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("/dev/kmsg"),
    show_default=True,
    help="The kernel log to read (a file of /dev/kmsg records for tests).",
)
@click.option(
    "--since",
    type=FiniteRange(min=0),
    default=600.0,
    show_default=True,
    help="Kernel messages of the last this many seconds count.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the diagnosis as JSON on stdout.")
@click.option(
    "--trace",
    type=FiniteRange(min=0.1, max=3600),
    default=None,
    metavar="SECONDS",
    help="Between the samples, trace the kernel's failures per process for SECONDS (the "
    "interval becomes the trace's): who fails, on what errno, toward where (root; without "
    "tracefs doctor goes on without it).",
)
@errors_to_exit
def doctor_cmd(**o: Any) -> None:
    """Why are connections failing right now? Samples the counters twice, reads the
    kernel log, every process's fds and every destination's ports, and names the most
    likely cause with its evidence and fix.

    A Nagios/Icinga plugin: the first line is the status and perfdata; exit 0 ok,
    1 warning, 2 critical, 3 unknown (bad input or an unreadable host)."""
    from tcpceiling.observe import kmsg
    from tcpceiling.observe.doctor import diagnose
    from tcpceiling.observe.sample import take
    from tcpceiling.report.watch import render_diagnosis

    if o["warn"] >= o["crit"]:
        fail("--warn must be below --crit", UNKNOWN)
    try:
        scope = scope_from(o)
        before = take(scope)
    except InputError as exc:
        fail(str(exc), UNKNOWN)
    traced, note = between_samples(o["interval"], o["trace"], scope.roots)
    after = take(scope)
    since = kmsg.uptime(scope.roots.procfs) - o["since"]
    hits = kmsg.hits(kmsg.read(o["kmsg"]), since)
    d = diagnose(before, after, hits, o["warn"], o["crit"], traced)
    if note:
        d = dataclasses.replace(d, notes=(*d.notes, note))
    if o["as_json"]:
        click.echo(results.dumps(results.document("doctor", d, {})))
    else:
        render_diagnosis(d, Console(width=200))
    sys.exit(d.exit_code)


def between_samples(
    interval: float, seconds: float | None, roots: Roots
) -> tuple[TraceResult | None, str | None]:
    """The wait between doctor's samples: a trace of `seconds` when asked for (and
    then the interval is the trace's), else a sleep. A trace that cannot run is a
    note, and doctor goes on without it."""
    from tcpceiling.observe.trace import trace

    if seconds is None:
        time.sleep(interval)
        return None, None
    try:
        return trace(seconds, roots), None
    except HostError as exc:
        time.sleep(interval)
        return None, f"no trace: {exc}"

"""tcpceiling rate: parses its options, calls the library, renders."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import cast

import click

from tcpceiling import results
from tcpceiling.analysis.model import (
    expand_sources,
    parse_endpoint,
    resolve,
)
from tcpceiling.cli.common import (
    CHECK_HELP,
    CHECK_SPEC,
    EXIT_LIMIT,
    EXIT_OK,
    QUIET_OPTION,
    REPORT_OPTION,
    FiniteRange,
    emit,
    errors_to_exit,
    main,
    report_target,
    stderr,
)
from tcpceiling.cli.load_options import ENGINE_OPTION, RUN_NETNS_OPTION, SYSCTL_OPTION
from tcpceiling.errors import InputError
from tcpceiling.host.read import read_identity
from tcpceiling.host.roots import Roots
from tcpceiling.probe.uring.engine import EngineChoice


@main.command("rate")
@click.option(
    "--rate",
    "rate_",
    default="max",
    show_default=True,
    metavar="R|max",
    help="New connections per second to hold for --duration, or 'max': as fast as "
    "the workers go (the plateau).",
)
@click.option(
    "--duration",
    type=FiniteRange(min=0, max=3600, min_open=True),
    default=5.0,
    show_default=True,
    help="Seconds of connect -> close cycles.",
)
@click.option(
    "--close",
    type=click.Choice(["client", "server", "rst"]),
    default="client",
    show_default=True,
    help="Who closes first, and so keeps TIME_WAIT (rst: SO_LINGER 0, none).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1, max=64),
    default=None,
    help="Worker processes: with --rate R, that many (default 1); with --rate max, "
    "the most the ramp tries, doubling from 1 (default: twice the CPUs).",
)
@SYSCTL_OPTION
@click.option(
    "--connect",
    default=None,
    metavar="HOST:PORT",
    help="A real server instead of the built-in sink.",
)
@click.option(
    "--check",
    type=CHECK_SPEC,
    default="none",
    show_default=True,
    help="With --connect: a request whose valid reply makes the cycle count "
    "(http with --close server asks for Connection: close). " + CHECK_HELP,
)
@click.option(
    "--source-ip",
    multiple=True,
    metavar="IP|CIDR",
    help="Source addresses the cycles rotate over (repeatable): each adds its own "
    "ports per TIME_WAIT period (default: the kernel's pick).",
)
@RUN_NETNS_OPTION
@ENGINE_OPTION
@REPORT_OPTION
@QUIET_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@errors_to_exit
def rate_cmd(
    rate_: str,
    duration: float,
    close: str,
    workers: int | None,
    sysctls: tuple[str, ...],
    connect: str | None,
    check: str,
    source_ip: tuple[str, ...],
    netns: str | None,
    engine: str,
    report_path: Path | None,
    quiet: bool,
    as_json: bool,
) -> None:
    """How many new connections per second, and what stops the rate: connect ->
    close cycles against a sink of its own, in a private network namespace (root).

    Exit codes: 0 the asked rate was held, 1 a limit stopped it (or --rate max), 2 bad
    input, 3 the host could not be read."""
    from tcpceiling.probe.run.config import parse_sysctl
    from tcpceiling.rate.config import ChurnConfig, CloseMode
    from tcpceiling.rate.run import run_churn
    from tcpceiling.report.churn import render_churn

    report_target(report_path)

    rate = None if rate_ == "max" else _positive_float(rate_, "--rate")
    cfg = ChurnConfig(
        rate=rate,
        duration=duration,
        close=cast(CloseMode, close),
        workers=workers or (1 if rate else 2 * (os.cpu_count() or 1)),
        ramp=rate is None,
        sysctls=tuple(parse_sysctl(s) for s in sysctls),
        connect=resolve(parse_endpoint(connect)) if connect else None,
        check=check,
        netns=netns,
        sources=expand_sources(source_ip),
        engine=cast(EngineChoice, engine),
    )
    from tcpceiling.report.progress import LiveProgress

    with LiveProgress(stderr, False, live=sys.stderr.isatty() and not quiet) as progress:
        result = run_churn(cfg, progress)
    host = results.host_block(read_identity(Roots()), result.netns)
    emit("rate", result, host, as_json, report_path)
    render_churn(result, stderr)
    sys.exit(EXIT_OK if result.stop.reason == "target" else EXIT_LIMIT)


def _positive_float(text: str, option: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise InputError(f"{option} must be a positive number or 'max', not {text!r}") from exc
    if not value > 0 or value == float("inf"):
        raise InputError(f"{option} must be a positive number or 'max', not {text!r}")
    return value

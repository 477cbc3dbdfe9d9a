"""tcpceiling probe: parses its options, calls the library, renders."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import cast

import click

from tcpceiling import results
from tcpceiling.analysis.model import (
    IoModel,
    expand_sources,
    parse_endpoint,
)
from tcpceiling.cli.common import (
    BYTES,
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
from tcpceiling.cli.load_options import (
    ENGINE_OPTION,
    SYSCTL_OPTION,
    activity_options,
    server_options,
)
from tcpceiling.errors import InputError
from tcpceiling.host.read import read_identity
from tcpceiling.host.roots import Roots
from tcpceiling.probe.uring.engine import EngineChoice


@main.command("probe")
@click.option(
    "--target",
    default="100000",
    show_default=True,
    metavar="N|max",
    help="Connections to open, or 'max' for until the first limit or guard.",
)
@click.option(
    "--hold",
    type=FiniteRange(min=0),
    default=0.0,
    show_default=True,
    help="Seconds to hold the connections before releasing them.",
)
@click.option(
    "--rate",
    type=FiniteRange(min=0, min_open=True),
    default=None,
    help="Open exactly R connections per second (default: as fast as possible).",
)
@click.option(
    "--source-ip",
    multiple=True,
    metavar="IP|CIDR",
    help="Source addresses to rotate over (default: the kernel's pick, or as many "
    "127.0.0.x as needed when --sink-ports is given).",
)
@click.option(
    "--sink-ports",
    type=click.IntRange(min=1),
    default=None,
    help="Sink listening ports (default: as many as keep each port pair 1/8 full, "
    "or 1 when --source-ip is given).",
)
@click.option(
    "--sink-host",
    default="127.0.0.1",
    show_default=True,
    help="The address the built-in sink listens on (a loopback address).",
)
@click.option(
    "--isolate/--no-isolate",
    default=None,
    help="Run inside a private network namespace (default: on when root).",
)
@SYSCTL_OPTION
@click.option(
    "--memory-floor",
    type=BYTES,
    default=None,
    help="Stop before MemAvailable falls below this many bytes (1G, 512MiB; "
    "default max(1 GiB, 10% of MemTotal)).",
)
@click.option(
    "--cgroup-floor",
    type=BYTES,
    default=None,
    help="Stop before any memory cgroup of the run has less than this many bytes free "
    "(default max(32 MiB, 10% of its limit)): other processes live there.",
)
@click.option(
    "--max-duration",
    type=FiniteRange(min=0),
    default=600.0,
    show_default=True,
    help="Seconds of opening before the duration guard stops the run.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="At most this many client worker processes.",
)
@click.option(
    "--worker-nofile",
    type=click.IntRange(min=16),
    default=None,
    help="RLIMIT_NOFILE of each client worker (default: its hard limit).",
)
@click.option(
    "--parallel",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Client workers opening at the same time.",
)
@click.option(
    "--connect-timeout",
    type=FiniteRange(min=0.1),
    default=5.0,
    show_default=True,
    help="Seconds a connect() may take before it counts as a timeout (ETIMEDOUT).",
)
@server_options
@activity_options
@ENGINE_OPTION
@click.option(
    "--scheduler",
    metavar="tcp://HOST:PORT",
    default=None,
    help="With --connect: open from the client hosts of this Dask scheduler, one worker "
    "per host, each running this probe with its share of the target.",
)
@click.option(
    "--hosts",
    type=click.IntRange(min=1),
    default=None,
    help="With --scheduler: how many client hosts (default: every host with a worker).",
)
@REPORT_OPTION
@QUIET_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the final result as JSON on stdout.")
@click.option("--json-lines", is_flag=True, help="Print progress as JSON lines on stdout.")
@click.option(
    "--record-messages",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    metavar="FILE",
    help="Write every worker message to FILE (a new file), as JSON lines: a run to "
    "replay when reporting a wrong stop reason.",
)
@errors_to_exit
def probe_cmd(
    target: str,
    hold: float,
    rate: float | None,
    source_ip: tuple[str, ...],
    sink_ports: int | None,
    sink_host: str,
    isolate: bool | None,
    sysctls: tuple[str, ...],
    memory_floor: int | None,
    cgroup_floor: int | None,
    max_duration: float,
    workers: int | None,
    worker_nofile: int | None,
    parallel: int,
    connect_timeout: float,
    connect: tuple[str, ...],
    check: str,
    check_timeout: float,
    check_every: float | None,
    settle: float,
    server_pid: int | None,
    path_netns: str | None,
    netns: str | None,
    max_pending: int,
    io_model: str,
    engine: str,
    message_rate: float,
    message_bytes: int,
    wake_samples: int,
    measure_cpu: bool,
    scheduler: str | None,
    hosts: int | None,
    report_path: Path | None,
    quiet: bool,
    as_json: bool,
    json_lines: bool,
    record_messages: Path | None,
) -> None:
    """Prove the ceiling: open real connections to a built-in loopback sink, or with
    --connect to real servers, and name the limit (and the side) that stopped them;
    with --scheduler, from many client hosts at once."""
    report_target(report_path)
    if scheduler is not None:
        probe_hosts(
            connect, source_ip, target, check, connect_timeout, scheduler, hosts, hold, as_json
        )
        return
    if hosts is not None:
        raise InputError("--hosts needs --scheduler")
    from tcpceiling.probe.run.config import ProbeConfig, parse_sysctl, parse_target
    from tcpceiling.probe.run.coordinator import run
    from tcpceiling.report.probe import render_probe
    from tcpceiling.report.progress import LiveProgress

    cfg = ProbeConfig(
        target=parse_target(target),
        hold=hold,
        rate=rate,
        sources=expand_sources(source_ip),
        sink_ports=sink_ports,
        sink_host=sink_host,
        isolate=isolate,
        sysctls=tuple(parse_sysctl(s) for s in sysctls),
        memory_floor=memory_floor,
        cgroup_floor=cgroup_floor,
        max_duration=max_duration,
        workers=workers,
        worker_nofile=worker_nofile,
        parallel=parallel,
        connect_timeout=connect_timeout,
        connect=tuple(parse_endpoint(c) for c in connect),
        check=check,
        check_timeout=check_timeout,
        check_every=check_every,
        settle=settle,
        server_pid=server_pid,
        path_netns=path_netns,
        netns=netns,
        max_pending=max_pending,
        io_model=cast(IoModel, io_model),
        engine=cast(EngineChoice, engine),
        message_rate=message_rate or (1.0 if measure_cpu else 0.0),
        message_bytes=message_bytes,
        wake_samples=wake_samples,
        record=record_messages,
    )
    with LiveProgress(stderr, json_lines, live=sys.stderr.isatty() and not quiet) as progress:
        result = run(cfg, progress)
    host = results.host_block(read_identity(Roots()), result.netns)
    emit("probe", result, host, as_json, report_path)
    render_probe(result, stderr)
    sys.exit(EXIT_OK if result.target_reached else EXIT_LIMIT)


def probe_hosts(
    connect: tuple[str, ...],
    source_ip: tuple[str, ...],
    target: str,
    check: str,
    connect_timeout: float,
    scheduler: str,
    hosts: int | None,
    hold: float,
    as_json: bool,
) -> None:
    """probe --scheduler: the client engine on each Dask worker host, one result."""
    from tcpceiling.probe.run.config import parse_target
    from tcpceiling.probe.run.hosts import HostSpec, run_hosts
    from tcpceiling.report.hosts import render_hosts

    if not connect:
        raise InputError("--scheduler needs --connect HOST:PORT (a server the hosts reach)")
    for c in connect:
        parse_endpoint(c)
    spec = HostSpec(connect, None, check, source_ip, connect_timeout)
    result = run_hosts(spec, parse_target(target), scheduler, hosts, hold)
    if as_json:
        click.echo(results.dumps(results.document("probe-hosts", result, {})))
    render_hosts(result, stderr)
    sys.exit(EXIT_OK if result.stop == "target" else EXIT_LIMIT)

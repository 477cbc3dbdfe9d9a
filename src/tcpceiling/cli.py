"""Command line: parses arguments, calls the library, renders. No logic lives here.

Exit codes: 0 success (probe: target reached), 1 a limit or guard stopped a probe,
2 bad input, 3 the host could not be read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click
from rich.console import Console

from tcpceiling import __version__, results
from tcpceiling.analysis import whatif
from tcpceiling.analysis.analyze import analyze, with_measured_cost
from tcpceiling.analysis.model import (
    IoModel,
    RoleChoice,
    Scenario,
    build_scenarios,
    expand_sources,
    parse_endpoint,
    resolve,
)
from tcpceiling.errors import HostError, InputError, ParseError
from tcpceiling.host.read import read_identity
from tcpceiling.host.roots import Roots
from tcpceiling.probe import checks
from tcpceiling.report.analysis import render_analysis
from tcpceiling.units import parse_bytes

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK, EXIT_LIMIT, EXIT_USAGE, EXIT_HOST = 0, 1, 2, 3

stderr = Console(stderr=True, width=None if sys.stderr.isatty() else 120)


def fail(message: str, code: int) -> None:
    click.echo(f"tcpceiling: error: {message}", err=True)
    sys.exit(code)


def errors_to_exit(fn: F) -> F:
    """Bad input -> one line and exit 2; unreadable host -> exit 3."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except InputError as exc:
            fail(str(exc), EXIT_USAGE)
        except (ParseError, HostError) as exc:
            fail(f"cannot read the host: {exc}", EXIT_HOST)
        except OSError as exc:  # a file of the host missing or unreadable
            where = f" {exc.filename}" if exc.filename else ""
            fail(f"cannot read the host:{where} {exc.strerror or exc}", EXIT_HOST)

    return wrapper  # type: ignore[return-value]


def roots_options(fn: F) -> F:
    """--procfs/--sysfs/--cgroupfs: point every reader at another tree (e.g. a fixture)."""
    fn = click.option(
        "--cgroupfs",
        type=click.Path(path_type=Path),
        default=None,
        help="cgroup mount (default SYSFS/fs/cgroup).",
    )(fn)
    fn = click.option(
        "--sysfs",
        type=click.Path(path_type=Path),
        default=Path("/sys"),
        show_default=True,
        help="The sysfs to read (a fixture tree's sys/, or a snapshot's).",
    )(fn)
    return click.option(
        "--procfs",
        type=click.Path(path_type=Path),
        default=Path("/proc"),
        show_default=True,
        help="The procfs to read (a fixture tree's proc/, or a snapshot's).",
    )(fn)


if TYPE_CHECKING:  # generic in click >= 8.2 only; plain at run time
    from tcpceiling.observe.trace import TraceResult

    _Param = click.ParamType[Any]
else:
    _Param = click.ParamType


class Parsed(_Param):
    """An option value read by one of the library's parsers; its InputError becomes
    click's one-line usage error. Values that are not text (defaults) pass as they are."""

    def __init__(self, name: str, parse: Callable[[str], Any]) -> None:
        self.name, self.parse = name, parse

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return self.parse(value)
        except InputError as exc:
            self.fail(str(exc), param, ctx)


class FiniteRange(click.FloatRange):
    """click's FloatRange, refusing infinities and NaN: 1e309 parses as inf (a hold
    or a duration that never ends) and NaN passes every range check."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return rv


#: A byte count with an optional binary unit (tcpceiling.units.parse_bytes).
BYTES = Parsed("BYTES", parse_bytes)
#: A byte count, or 'auto' (None): the memory guard's own floor.
BYTES_OR_AUTO = Parsed("BYTES|auto", lambda text: None if text == "auto" else parse_bytes(text))
#: A service check SPEC (tcpceiling.probe.checks), validated, passed on as text.
CHECK_SPEC = Parsed("SPEC", lambda text: checks.parse(text).spec)
#: KEY=VALUE for the what-if model (tcpceiling.analysis.whatif).
SETTING = Parsed("KEY=VALUE", whatif.parse_setting)

CHECK_HELP = (
    "Request sent on each new connection; a valid reply means served. SPEC: "
    + checks.FORMS
    + ". Examples: 'websocket:/chat', 'mqtt:60', 'expect:^220 ,refuse:^4' (an SMTP banner)."
)


class OneLineErrors(click.Group):
    """click's own usage errors become one line on stderr (exit 2), like every other
    error of the tool; Ctrl-C before a run starts is exit 130."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            code = super().main(*args, **kwargs)
        except click.ClickException as exc:
            message = " ".join(exc.format_message().split())
            click.echo(f"tcpceiling: error: {message}", err=True)
            sys.exit(UNKNOWN if _is_doctor(exc) else exc.exit_code)
        except click.exceptions.Abort:
            click.echo("tcpceiling: interrupted", err=True)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else EXIT_OK)


#: doctor is a monitoring plugin: its bad input is UNKNOWN (3), never CRITICAL (2).
UNKNOWN = 3


def _is_doctor(exc: click.ClickException) -> bool:
    ctx = getattr(exc, "ctx", None)
    return ctx is not None and ctx.command.name == "doctor"


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__)
def main() -> None:
    """How many TCP connections can this machine hold, and what stops it?"""


REPORT_OPTION = click.option(
    "--report",
    "report_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    metavar="FILE.html",
    help="Also write a self-contained HTML report: figures as inline SVG, no JavaScript, "
    "no network.",
)


def report_target(path: Path | None) -> None:
    """Checked before any work: the report's directory must exist."""
    if path is not None and not path.parent.is_dir():
        raise InputError(f"--report {path}: no directory {path.parent}")


def emit(
    kind: results.Kind, result: Any, host: dict[str, Any], as_json: bool, report: Path | None
) -> None:
    """The result as JSON on stdout and/or an HTML report (the same document)."""
    doc = results.document(kind, result, host)
    if as_json:
        click.echo(results.dumps(doc))
    if report is not None:
        from tcpceiling.report.html import write_page

        write_page(report, [("", doc)])


QUIET_OPTION = click.option(
    "--quiet",
    "-q",
    is_flag=True,
    help="No progress bar (there is none either when stderr is not a terminal).",
)
SET_OPTION = click.option(
    "--set",
    "settings",
    multiple=True,
    type=SETTING,
    help="What if: analyse as if this sysctl, rlimit (nofile=SOFT[:HARD], nproc) or cgroup "
    "limit (memory.max, pids.max) had this value (repeatable; nothing is changed).",
)


def scenario_options(fn: F) -> F:
    """The workload a prediction is for: analyze's and tune's options."""
    options = [
        click.option(
            "--role",
            type=click.Choice(["server", "client", "both", "nat"]),
            default="both",
            show_default=True,
            help="Which side's ceiling: the server's, the client's, or both; nat: a host "
            "that forwards (NATs, firewalls) --connect destinations for other hosts.",
        ),
        click.option(
            "--connect",
            multiple=True,
            metavar="HOST:PORT",
            help="Client destination (repeatable). Default: one remote ip:port.",
        ),
        click.option(
            "--source-ip",
            multiple=True,
            metavar="IP|CIDR",
            help="Client source address or CIDR (repeatable). Default: the kernel's pick.",
        ),
        click.option("--listen", multiple=True, metavar="IP:PORT", help="Server listen endpoint."),
        click.option(
            "--clients",
            type=click.IntRange(min=1),
            default=None,
            help="Server: distinct client IPs expected (bounds the port term).",
        ),
        click.option(
            "--io-model",
            type=click.Choice(["epoll", "threads"]),
            default="epoll",
            show_default=True,
            help="An event loop (epoll) or a thread per connection.",
        ),
        click.option(
            "--processes",
            type=click.IntRange(min=1),
            default=1,
            show_default=True,
            help="Processes sharing the connections (each has its own fd limit).",
        ),
        click.option(
            "--buffered-bytes",
            type=BYTES,
            default=0,
            help="Bytes queued per connection, or with a unit (16K) (makes tcp_mem count).",
        ),
        click.option(
            "--app-bytes-per-conn",
            type=BYTES,
            default=0,
            help="The application's own bytes per connection (buffers, session state).",
        ),
        click.option(
            "--backlog",
            type=click.IntRange(min=0),
            default=None,
            help="The server's listen() backlog (default: as somaxconn allows).",
        ),
        click.option(
            "--churn",
            type=FiniteRange(min=0),
            default=0.0,
            help="Connections closed per second (TIME_WAIT).",
        ),
        click.option(
            "--memory-floor",
            type=BYTES,
            default=0,
            help="MemAvailable to keep free, in bytes or with a unit (1G, 512MiB), as probe's "
            "guard.",
        ),
        click.option(
            "--cgroup-floor",
            type=BYTES_OR_AUTO,
            default=0,
            help="Bytes to keep free in the memory cgroup; 'auto' is probe's guard "
            "(max(32 MiB, 10% of the limit)).",
        ),
        click.option(
            "--peer-local",
            is_flag=True,
            help="The other end of every connection is a process on this host in the same "
            "cgroup (a local load generator, a sidecar): memory counts both ends.",
        ),
        click.option(
            "--message-rate",
            type=FiniteRange(min=0),
            default=0.0,
            metavar="R",
            help="Messages per connection per second (0.033 = a heartbeat every 30 s).",
        ),
        click.option(
            "--message-bytes",
            type=click.IntRange(min=1),
            default=64,
            show_default=True,
            help="Bytes per message, with --message-rate.",
        ),
        click.option(
            "--cpu-target",
            type=FiniteRange(min=0, max=1, min_open=True),
            default=0.7,
            show_default=True,
            help="Share of all CPUs the connections may use.",
        ),
        click.option(
            "--cpu-us-per-message",
            type=FiniteRange(min=0, min_open=True),
            default=None,
            help="Server CPU microseconds per message (default: from --cost-from).",
        ),
        click.option("--pid", default=None, help="Analyse this process's limits and fds."),
        click.option("--netns", default=None, help="Read per-netns values inside this namespace."),
        click.option(
            "--client-hosts",
            type=click.IntRange(min=1),
            default=1,
            show_default=True,
            help="Client: the connections come from this many hosts like this one "
            "(probe --scheduler); their ceilings add up.",
        ),
        click.option(
            "--cost-from",
            type=click.Path(path_type=Path, dir_okay=False),
            default=None,
            help="Use the kernel cost per connection measured by `probe --json`.",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def scenarios_from(o: dict[str, Any]) -> list[Scenario]:
    """The scenarios scenario_options describe (popping their values from `o`)."""
    scenarios = build_scenarios(
        cast(RoleChoice, o.pop("role")),
        o.pop("connect"),
        o.pop("source_ip"),
        o.pop("listen"),
        clients=o.pop("clients"),
        io_model=o.pop("io_model"),
        processes=o.pop("processes"),
        buffered_bytes=o.pop("buffered_bytes"),
        app_bytes_per_conn=o.pop("app_bytes_per_conn"),
        backlog=o.pop("backlog"),
        churn_per_s=o.pop("churn"),
        memory_floor=o.pop("memory_floor"),
        cgroup_floor=o.pop("cgroup_floor"),
        peer_local=o.pop("peer_local"),
        message_rate=o.pop("message_rate"),
        message_bytes=o.pop("message_bytes"),
        cpu_target=o.pop("cpu_target"),
        cpu_us_per_message=o.pop("cpu_us_per_message"),
        client_hosts=o.pop("client_hosts"),
    )
    return with_measured_cost(scenarios, o.pop("cost_from"))


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


@main.command("tune")
@click.option(
    "--target",
    "target_text",
    metavar="N",
    default=None,
    help="Connections to hold (1000000, 1_000_000 or 1,000,000); needed except with --restore.",
)
@click.option(
    "--headroom",
    type=FiniteRange(min=0, max=10),
    default=0.1,
    show_default=True,
    help="Raise every limit to target x (1 + headroom).",
)
@click.option(
    "--service",
    metavar="UNIT",
    default=None,
    help="The systemd service whose limits to raise (a drop-in).",
)
@click.option(
    "--verify",
    is_flag=True,
    help="Prove the net.* part first: hold the target in a private namespace with the "
    "plan's values.",
)
@click.option(
    "--apply",
    "do_apply",
    is_flag=True,
    help="Write the files (backups and a manifest kept) and load the sysctls (live root only).",
)
@click.option(
    "--restore", "do_restore", is_flag=True, help="Put back exactly what the last --apply replaced."
)
@click.option(
    "--root",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("/"),
    show_default=True,
    help="Write under this root instead (an image, a container's tree, a test).",
)
@scenario_options
@roots_options
@REPORT_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@errors_to_exit
def tune_cmd(**o: Any) -> None:
    """Plan the settings that take every limit to a target, show them as files with
    their diffs, prove them in a namespace, write them, or put back what was there.

    Exit 0: the plan reaches the target (and --verify held it); 1: it cannot (the
    memory it needs, a limit no setting moves) or --verify fell short; 2: bad input.
    """
    from tcpceiling.probe.config import parse_target
    from tcpceiling.report.tune import render_restored, render_tune
    from tcpceiling.tune import run as tune

    root, procfs = o.pop("root"), o["procfs"]
    if o.pop("do_restore"):
        restored = tune.restore(root, procfs)
        if o["as_json"]:
            click.echo(results.dumps(results.document("tune", restored, {})))
        else:
            render_restored(restored, stderr)
        return
    report_target(o["report_path"])
    text = o.pop("target_text")
    target = parse_target(text) if text not in (None, "max") else None
    if target is None:
        raise InputError("tune needs --target N, a number of connections (or --restore)")
    scenarios = scenarios_from(o)
    if len(scenarios) != 1:
        raise InputError("tune plans one side: --role server, client or nat")
    roots = Roots(o["procfs"], o["sysfs"], o["cgroupfs"])
    result, snap = tune.build(
        scenarios[0],
        target,
        o["headroom"],
        o["service"],
        roots,
        o["pid"] or "self",
        o["netns"],
        root,
    )
    if o["verify"] and result.reachable:
        result = tune.verify(result, snap)
    if o["do_apply"] and result.reachable:  # else: the plan says what it needs, no files
        result = tune.apply(result, root, procfs)
    host = results.host_block(read_identity(roots), o["netns"])
    emit("tune", result, host, o["as_json"], o["report_path"])
    if not o["as_json"]:
        render_tune(result, stderr)
    held = result.verified is None or result.verified.reached
    sys.exit(EXIT_OK if result.reachable and held else EXIT_LIMIT)


@main.command("snapshot")
@click.argument("out", type=click.Path(path_type=Path, file_okay=False), required=False)
@click.option(
    "--tar",
    "archive",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    metavar="FILE.tar.gz",
    help="Write one compressed archive instead of a directory (a new file only).",
)
@click.option(
    "--force", is_flag=True, help="Replace OUT when it holds a snapshot of tcpceiling's own."
)
@click.option("--pid", default="self", help="Process whose limits and fds to copy.")
@click.option("--netns", default=None, help="Copy per-netns values from this namespace.")
@errors_to_exit
def snapshot_cmd(
    out: Path | None, archive: Path | None, force: bool, pid: str, netns: str | None
) -> None:
    """Copy every file analyze reads into OUT, a new or empty directory (read back
    with --procfs OUT/proc --sysfs OUT/sys), or into one --tar archive."""
    from tcpceiling.host import capture, sockets
    from tcpceiling.host import netns as netns_mod

    if (out is None) == (archive is None):
        raise InputError("give a directory OUT or --tar FILE.tar.gz (one of them)")
    with netns_mod.inside(netns):
        entries = sockets.live_entries()
    if archive is not None:
        capture.capture_tar(archive, pid=pid, sockets=entries)
        stderr.print(
            f"wrote {archive}; unpack it and analyze with --procfs DIR/proc --sysfs DIR/sys"
        )
        return
    assert out is not None
    capture.capture(out, pid=pid, sockets=entries, force=force)
    stderr.print(f"wrote {out}; analyze it with --procfs {out}/proc --sysfs {out}/sys")


#: Options that mean the same for probe and rate.
SYSCTL_OPTION = click.option(
    "--sysctl",
    "sysctls",
    multiple=True,
    metavar="KEY=VALUE",
    help="A net.* sysctl set inside the run's namespace only.",
)
RUN_NETNS_OPTION = click.option(
    "--netns", default=None, help="Run inside this existing network namespace."
)


def server_options(fn: F) -> F:
    """probe's options for real servers."""
    options = [
        click.option(
            "--connect",
            multiple=True,
            metavar="HOST:PORT",
            help="Probe this server instead of the built-in sink (repeatable; IPv4, "
            "[IPv6]:port or a hostname).",
        ),
        click.option(
            "--check",
            type=CHECK_SPEC,
            default="none",
            show_default=True,
            help=CHECK_HELP,
        ),
        click.option(
            "--check-timeout",
            type=FiniteRange(min=0.05),
            default=2.0,
            show_default=True,
            help="Seconds to wait for the check's reply before a connection counts as silent.",
        ),
        click.option(
            "--check-every",
            type=FiniteRange(min=0.05),
            default=None,
            metavar="SECONDS",
            help="Re-check a sample of held connections this often.",
        ),
        click.option(
            "--settle",
            type=FiniteRange(min=0.0, max=60.0),
            default=0.1,
            show_default=True,
            metavar="SECONDS",
            help="A connection whose check passed counts as served only if the server neither "
            "refuses nor closes it within this time (and 4 round trips of the check): a "
            "greeting followed by an error line is a refusal.",
        ),
        click.option(
            "--server-pid",
            type=click.IntRange(min=1),
            default=None,
            help="The server's pid, for fd-limit evidence (default: the listener's owner).",
        ),
        click.option(
            "--path-netns",
            default=None,
            metavar="NAME",
            help="A network namespace on the path (a NAT, a firewall, the server's): its "
            "NAT ports, connection caps and conntrack counters explain timeouts and refusals.",
        ),
        RUN_NETNS_OPTION,
        click.option(
            "--max-pending",
            type=click.IntRange(min=1),
            default=1024,
            show_default=True,
            help="Handshakes and checks in flight per worker.",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def activity_options(fn: F) -> F:
    """probe's options for the sink's I/O model and traffic."""
    options = [
        click.option(
            "--io-model",
            type=click.Choice(["epoll", "threads"]),
            default="epoll",
            show_default=True,
            help="The sink's model: one event loop, or one thread per connection.",
        ),
        click.option(
            "--message-rate",
            type=FiniteRange(min=0),
            default=0.0,
            metavar="R",
            help="Messages per held connection per second, echoed by the sink, "
            "for --hold seconds (5 if not given).",
        ),
        click.option(
            "--message-bytes",
            type=click.IntRange(min=1),
            default=64,
            show_default=True,
            help="Bytes per message, with --message-rate.",
        ),
        click.option(
            "--wake-samples",
            type=click.IntRange(min=0),
            default=0,
            help="Per client worker: one-byte round trips on random held connections.",
        ),
        click.option(
            "--measure-cpu",
            is_flag=True,
            help="Measure the server's CPU per message (--message-rate 1 unless given); "
            "feed the JSON to `analyze --cost-from`.",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


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
    from tcpceiling.probe.config import ProbeConfig, parse_sysctl, parse_target
    from tcpceiling.probe.coordinator import run
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
    from tcpceiling.probe.config import parse_target
    from tcpceiling.probe.hosts import HostSpec, run_hosts
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
    from tcpceiling.probe.compare import compare_io
    from tcpceiling.report.compare import render_comparison
    from tcpceiling.report.progress import LiveProgress

    with LiveProgress(stderr, False, live=sys.stderr.isatty() and not quiet) as progress:
        result = compare_io(connections, wake_samples, progress)
    emit(
        "compare-io", result, results.host_block(read_identity(Roots()), None), as_json, report_path
    )
    render_comparison(result, stderr)
    sys.exit(EXIT_OK if result.memory_ratio is not None else EXIT_LIMIT)


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
    report_path: Path | None,
    quiet: bool,
    as_json: bool,
) -> None:
    """How many new connections per second, and what stops the rate: connect ->
    close cycles against a sink of its own, in a private network namespace (root).

    Exit codes: 0 the asked rate was held, 1 a limit stopped it (or --rate max), 2 bad
    input, 3 the host could not be read."""
    from tcpceiling.probe.churn import ChurnConfig, CloseMode, run_churn
    from tcpceiling.probe.config import parse_sysctl
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


@main.command("serve")
@click.option(
    "--listen",
    multiple=True,
    required=True,
    metavar="IP:PORT",
    help="Endpoint to listen on (repeatable).",
)
@click.option(
    "--shards",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Sink processes sharing the endpoints (each holds up to its fd limit).",
)
@click.option("--echo", is_flag=True, help="Echo what clients send (default: read and discard).")
@click.option(
    "--backlog",
    type=click.IntRange(min=1),
    default=4096,
    show_default=True,
    help="listen() backlog of each shard (the kernel clamps it to net.core.somaxconn).",
)
@click.option(
    "--duration",
    type=FiniteRange(min=0),
    default=None,
    help="Stop after this many seconds (default: until Ctrl-C).",
)
@click.option(
    "--json-lines",
    is_flag=True,
    help="Print the connections accepted so far as a JSON line each second on stdout.",
)
@errors_to_exit
def serve_cmd(
    listen: tuple[str, ...],
    shards: int,
    echo: bool,
    backlog: int,
    duration: float | None,
    json_lines: bool,
) -> None:
    """Run the probe's sink alone, for probing this machine from other ones (probe
    --connect, or probe --scheduler from many hosts); it says how many it accepted, so
    both ends can be compared."""
    from tcpceiling.probe.progress import RunProgress
    from tcpceiling.probe.serve import serve

    endpoints = tuple(parse_endpoint(x, default_host="0.0.0.0") for x in listen)
    last, said = [-1.0], [""]

    def show(e: RunProgress) -> None:
        if last[0] < 0:
            eps = ", ".join(map(str, endpoints))
            stderr.print(f"serving {eps} with {shards} shard(s); Ctrl-C stops")
        if e.label and not said[0]:
            said[0] = e.label
            stderr.print(e.label)
        if e.elapsed - last[0] >= 1.0 or last[0] < 0:
            last[0] = e.elapsed
            if json_lines:
                line = {"accepted": int(e.done), "elapsed": round(e.elapsed, 1)}
                click.echo(json.dumps(line | ({"guard": e.label} if e.label else {})))

    done = serve(endpoints, shards, backlog, "echo" if echo else "discard", duration, show)
    if json_lines:
        final = {"accepted": done.accepted, "final": True}
        click.echo(json.dumps(final | ({"guard": done.guard} if done.guard else {})))
    stderr.print(f"accepted {done.accepted:,} connections")


def run() -> None:
    """The console entry point (see OneLineErrors); named tcpceiling also under
    `python -m tcpceiling`, so shell completion's variable is _TCPCEILING_COMPLETE."""
    main(prog_name="tcpceiling")


def observe_options(fn: F) -> F:
    """What watch, doctor and the exporter look at."""
    options = [
        click.option(
            "--pid",
            "pids",
            multiple=True,
            type=click.IntRange(min=1),
            help="Only this process (repeatable). Default: every process holding TCP sockets.",
        ),
        click.option(
            "--port",
            "ports",
            multiple=True,
            type=click.IntRange(min=1, max=65535),
            help="Only the processes listening on this port (repeatable).",
        ),
        click.option(
            "--service", metavar="UNIT", default=None, help="Only this systemd service's processes."
        ),
        click.option(
            "--netns", default=None, help="Read sockets and counters inside this network namespace."
        ),
        click.option(
            "--top-destinations",
            type=click.IntRange(min=1, max=1000),
            default=10,
            show_default=True,
            help="(source, destination) tuples shown: the most ports in use first.",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return roots_options(fn)


def scope_from(o: dict[str, Any]) -> Any:
    from tcpceiling.observe.sample import Scope

    return Scope(
        pids=o["pids"],
        ports=o["ports"],
        service=o["service"],
        top_destinations=o["top_destinations"],
        netns=o["netns"],
        roots=Roots(o["procfs"], o["sysfs"], o["cgroupfs"]),
    )


def thresholds(fn: F) -> F:
    fn = click.option(
        "--crit",
        type=FiniteRange(0, 1, min_open=True),
        default=0.95,
        show_default=True,
        help="Critical at this share of any limit.",
    )(fn)
    return click.option(
        "--warn",
        type=FiniteRange(0, 1, min_open=True),
        default=0.8,
        show_default=True,
        help="Warning at this share of any limit.",
    )(fn)


@main.command("watch")
@observe_options
@thresholds
@click.option(
    "--interval",
    type=FiniteRange(min=0.2, max=3600),
    default=1.0,
    show_default=True,
    help="Seconds between frames (and the window of the rates).",
)
@click.option(
    "--count", type=click.IntRange(min=1), default=None, help="Stop after this many frames."
)
@click.option("--once", is_flag=True, help="Print one frame (rates over --interval) and exit.")
@click.option(
    "--trace",
    is_flag=True,
    help="A panel of the kernel's failures per process since the last frame, from a "
    "tracefs instance of its own (root).",
)
@errors_to_exit
def watch_cmd(**o: Any) -> None:
    """A live view of every limit on this host, the smallest headroom first: each
    process's fds and threads, each listener's accept queue, the ephemeral ports
    toward each destination, and the host-wide limits; rows turn yellow at --warn and
    red at --crit. q or Ctrl-C leaves."""
    from tcpceiling.observe import live
    from tcpceiling.observe.feed import Feed

    scope = scope_from(o)
    with contextlib.ExitStack() as stack:
        feed = stack.enter_context(Feed(scope.roots)) if o["trace"] else None
        if o["once"]:
            live.once(scope, o["interval"], o["warn"], o["crit"], stderr, feed)
            return
        live.loop(scope, o["interval"], o["count"], o["warn"], o["crit"], stderr, feed)


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

    try:
        result = trace(seconds, Roots(procfs, sysfs, cgroupfs))
    except KeyboardInterrupt:
        fail("interrupted: the trace instance was removed", 130)
    if as_json:
        click.echo(results.dumps(results.document("trace", result, {})))
    else:
        render_trace(result, Console(width=200))
    sys.exit(EXIT_LIMIT if result.rows else EXIT_OK)


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


@main.command("exporter")
@observe_options
@click.option(
    "--listen",
    metavar="[HOST]:PORT",
    default=":9877",
    show_default=True,
    help="Serve /metrics here (an empty host: every address).",
)
@click.option(
    "--textfile",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write the metrics once to this file (node_exporter's textfile collector) and exit.",
)
@click.option(
    "--trace",
    is_flag=True,
    help="Also count the kernel's failures per limit and process (tcpceiling_failures_total) "
    "from a tracefs instance of its own (root).",
)
@errors_to_exit
def exporter_cmd(**o: Any) -> None:
    """Prometheus metrics of every limit: analyze's ceilings, host-wide limits and use,
    each process's fds, each destination's ephemeral ports (the top K), listeners'
    accept queues, and the kernel's counters. Runs until SIGINT or SIGTERM."""
    from tcpceiling.observe import exporter
    from tcpceiling.observe.feed import Feed
    from tcpceiling.observe.sample import take

    scope = scope_from(o)
    if o["textfile"]:
        if o["trace"]:
            raise InputError("--trace counts failures while serving: not with --textfile")
        if not o["textfile"].parent.is_dir():
            raise InputError(f"--textfile: no directory {o['textfile'].parent}")
        exporter.textfile(exporter.registry(lambda: take(scope)), o["textfile"])
        return
    host, port = listen_address(o["listen"])
    block_signals()  # before any thread starts: every thread inherits the mask
    with contextlib.ExitStack() as stack:
        feed = stack.enter_context(Feed(scope.roots)) if o["trace"] else None
        reg = exporter.registry(lambda: take(scope), feed)
        try:
            stop = exporter.serve(reg, host, port)
        except OSError as exc:
            raise InputError(f"--listen {o['listen']}: {exc.strerror or exc}") from exc
        stderr.print(f"serving http://{host or '0.0.0.0'}:{port}/metrics (Ctrl-C stops)")
        wait_for_signal()
        stop()


def listen_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"--listen {text!r}: expected [HOST]:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


def block_signals() -> None:
    """SIGINT and SIGTERM blocked in this thread and every thread it starts after, so
    that they wait for wait_for_signal() instead of reaching another thread."""
    import signal

    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})


def wait_for_signal() -> None:
    """Until SIGINT or SIGTERM (both end the exporter cleanly, exit 0)."""
    import signal

    block_signals()
    signal.sigwait({signal.SIGINT, signal.SIGTERM})


#: Each command's --help ends with examples and its exit codes.
USAGE: dict[str, tuple[tuple[str, ...], str]] = {
    "analyze": (
        (
            "tcpceiling analyze",
            "tcpceiling analyze --role client --connect 10.0.0.5:5432 --source-ip 10.0.1.0/28",
            "tcpceiling analyze --role server --io-model threads --pid 1234",
            "tcpceiling analyze --role server --set nofile=1048576 --report ceiling.html",
            "tcpceiling analyze --role nat --netns nat --connect 198.18.6.2:9000",
        ),
        "0 predicted, 2 bad input, 3 the host could not be read",
    ),
    "report": (
        ("tcpceiling report before.json after.json -o tune.html",),
        "0 written, 2 bad input (a file that is not a result)",
    ),
    "tune": (
        (
            "tcpceiling tune --role server --target 1000000 --service myapp",
            "tcpceiling tune --role client --connect 10.0.0.5:443 --target 100000 --verify",
            "tcpceiling tune --role server --target 1000000 --apply --root /srv/image",
            "tcpceiling tune --restore",
        ),
        "0 the plan reaches the target, 1 it cannot (or --verify fell short), 2 bad input, "
        "3 the host could not be read",
    ),
    "snapshot": (
        ("tcpceiling snapshot ./host-a", "tcpceiling snapshot --tar host-a.tar.gz"),
        "0 written, 2 bad input (a directory that is not a snapshot), 3 unreadable host",
    ),
    "probe": (
        (
            "tcpceiling probe --target 200000",
            "tcpceiling probe --target max --hold 30 --report proof.html",
            "tcpceiling probe --connect 127.0.0.1:6379 --check redis --target 20000",
            "tcpceiling probe --connect 127.0.0.1:443 --check 'expect:^220 ' --target 500",
        ),
        "0 the target was reached, 1 a limit or a guard stopped it, 2 bad input, "
        "3 the host could not be read",
    ),
    "compare-io": (
        ("tcpceiling compare-io --connections 10000 --report io.html",),
        "0 compared, 1 a run stopped short, 2 bad input, 3 the host could not be read",
    ),
    "rate": (
        (
            "tcpceiling rate",
            "tcpceiling rate --rate 20000 --duration 10 --close server",
            "tcpceiling rate --connect 127.0.0.1:80 --check http --close server",
        ),
        "0 the asked rate was held, 1 a limit stopped it (or --rate max), 2 bad input, "
        "3 the host could not be read",
    ),
    "serve": (
        ("tcpceiling serve --listen 0.0.0.0:9000 --shards 4",),
        "0 stopped (Ctrl-C or --duration), 2 bad input",
    ),
    "watch": (
        ("tcpceiling watch", "tcpceiling watch --port 443 --warn 0.7", "tcpceiling watch --once"),
        "0 left with q or Ctrl-C, 2 bad input, 3 the host could not be read",
    ),
    "trace": (
        ("tcpceiling trace", "tcpceiling trace 10 --json"),
        "0 no failure seen, 1 failures seen, 2 bad input, 3 no tracefs or not root, "
        "130 interrupted (the instance is removed)",
    ),
    "doctor": (
        (
            "tcpceiling doctor",
            "tcpceiling doctor --service nginx --warn 0.7 --crit 0.9",
            "tcpceiling doctor --netns blue --json",
        ),
        "0 ok, 1 warning, 2 critical, 3 unknown (bad input, an unreadable host)",
    ),
    "exporter": (
        (
            "tcpceiling exporter --listen :9877",
            "tcpceiling exporter --textfile /var/lib/node_exporter/textfile/tcpceiling.prom",
        ),
        "0 stopped by SIGINT or SIGTERM, 2 bad input (or the port in use), 3 unreadable host",
    ),
}


def _epilog(examples: tuple[str, ...], exits: str) -> str:
    lines = "\n".join(f"  {e}" for e in examples)
    return f"\b\nExamples:\n{lines}\n\n\b\nExit codes: {exits}"


for _name, (_examples, _exits) in USAGE.items():
    main.commands[_name].epilog = _epilog(_examples, _exits)
main.epilog = (
    "\b\nEach command has examples and its exit codes in its --help.\n"
    "Shell completion (bash; zsh and fish alike):\n"
    '  eval "$(_TCPCEILING_COMPLETE=bash_source tcpceiling)"'
)

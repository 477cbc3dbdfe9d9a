"""What every command shares: the group, exit codes, errors as one line, the roots
and report options, and rendering a result as JSON or HTML."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click
from rich.console import Console

from tcpceiling import __version__, results
from tcpceiling.analysis import whatif
from tcpceiling.analysis.analyze import with_measured_cost
from tcpceiling.analysis.model import (
    RoleChoice,
    Scenario,
    build_scenarios,
)
from tcpceiling.errors import HostError, InputError, ParseError
from tcpceiling.probe.serving import checks
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
#: A service check SPEC (tcpceiling.probe.serving.checks), validated, passed on as text.
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

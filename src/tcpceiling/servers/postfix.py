"""Postfix: the process limit of the master.cf service that listens on the port.
Each smtpd process serves one client at a time, and the master runs at most the
service's `maxproc` of them (its 7th field; `-` is main.cf's
`default_process_limit`, 100; `0` is no limit). With every process busy and the
limit reached, the master stops watching the listener (master_avail_listen,
src/master/master_avail.c): new connections wait unanswered in the listen queue,
with no greeting, until a process is free.

Behind postscreen (`smtp inet ... postscreen`), postscreen takes every connection
and hands each client that passes to the `smtpd pass` service: its maxproc is the
cap, and past it postscreen answers "421 4.3.2 All server ports are busy".

Not the server's cap but a client's: smtpd_client_connection_count_limit (default 50)
connections from one address (anvil), answered "421 4.7.0 ... too many connections
from ..."; $mynetworks is exempt by default (smtpd_client_event_limit_exceptions).

Where it is read: the master's configuration directory (MAIL_CONFIG in its
environment, as postfix(1) starts it, else `-c DIR`, else /etc/postfix): main.cf and
master.cf, read by the master when it starts and on `postfix reload`."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from tcpceiling.host.roots import Roots
from tcpceiling.servers import text
from tcpceiling.servers.model import AppLimit, Found

NAME = "postfix"
DEFAULT_DIR = "/etc/postfix"
DEFAULT_PROCESS_LIMIT = 100
DEFAULT_CLIENT_LIMIT = 50
BANNER_CHECK = "expect:^220 ,refuse:^4[0-9][0-9] "
BUSY = "421 4.3.2 All server ports are busy"


@dataclass(frozen=True)
class Service:
    """One master.cf entry: `service type private unpriv chroot wakeup maxproc command`."""

    name: str
    kind: str
    maxproc: str
    command: str


def matches(comm: str, exe: str) -> bool:
    """Postfix's master has the plain comm 'master': its executable says whose."""
    return exe.endswith("/postfix/sbin/master") or (comm == "master" and not exe)


def logical_lines(body: str) -> list[str]:
    """master.cf and main.cf: '#' lines are comments, a line that starts with white
    space continues the one before (master(5), postconf(5))."""
    out: list[str] = []
    for raw in body.splitlines():
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        if raw[0].isspace() and out:
            out[-1] += " " + raw.strip()
        else:
            out.append(raw.strip())
    return out


def parse_main(body: str) -> dict[str, str]:
    out = {}
    for line in logical_lines(body):
        key, eq, value = line.partition("=")
        if eq:
            out[key.strip()] = value.strip()
    return out


def parse_master(body: str) -> list[Service]:
    out = []
    for line in logical_lines(body):
        f = line.split()
        if len(f) >= 8:
            out.append(Service(f[0], f[1], f[6], f[7]))
    return out


def service_port(name: str) -> int | None:
    """An inet service's `[host:]port`, the port by number or /etc/services name."""
    port = name.rpartition(":")[2]
    if port.isdigit():
        return int(port)
    try:
        return socket.getservbyname(port, "tcp")
    except OSError:
        return None


def maxproc(field: str, main: dict[str, str]) -> int | None:
    """The 7th field: `-` is default_process_limit; 0 is no limit (None)."""
    given = main.get("default_process_limit") if field.rstrip("?") == "-" else field.rstrip("?")
    value = text.to_int(given)
    value = DEFAULT_PROCESS_LIMIT if value is None else value
    return value or None


def config_dir(found: Found, roots: Roots) -> str:
    env = text.process_environ(roots, found.main.pid)
    return env.get("MAIL_CONFIG") or text.flag(found.main.cmdline, "-c") or DEFAULT_DIR


def serving(services: list[Service], port: int) -> tuple[Service | None, Service | None]:
    """The inet service on the port, and the one whose processes serve its clients
    (itself, or `smtpd pass` behind postscreen)."""
    inet = next((s for s in services if s.kind == "inet" and service_port(s.name) == port), None)
    if inet is None or inet.command != "postscreen":
        return inet, inet
    return inet, next((s for s in services if s.kind == "pass" and s.command == "smtpd"), None)


def read(found: Found, roots: Roots) -> AppLimit:
    where = config_dir(found, roots)
    main = parse_main(text.host_file(roots, f"{where}/main.cf"))
    inet, server = serving(parse_master(text.host_file(roots, f"{where}/master.cf")), found.port)
    value = maxproc(server.maxproc, main) if server else None
    name = server.name if server else "?"
    screened = inet is not None and inet is not server
    per_client = text.to_int(main.get("smtpd_client_connection_count_limit"))
    return AppLimit(
        server=NAME,
        pid=found.main.pid,
        listen=f"{found.host}:{found.port}",
        setting="maxproc",
        value=value,
        source="config" if server else "default",
        source_detail=f"{where}/master.cf: {name} {server.kind} ... {server.maxproc} "
        f"{server.command}"
        if server
        else f"{where}/master.cf: no inet service on this port",
        capacity=value,
        in_use=found.established,
        arithmetic=_arithmetic(name, value, screened, per_client),
        symptom=BUSY
        if screened
        else "no greeting: new clients wait in the listen queue until an smtpd is free",
        raise_=f"the maxproc field of `{name}` in master.cf ({2 * (value or 50)}), or "
        "default_process_limit in main.cf, then `postfix reload`",
        check=BANNER_CHECK,
        nofile=found.main.nofile,
    )


def _arithmetic(name: str, value: int | None, screened: bool, per_client: int | None) -> str:
    who = f"the `{name}` service" + (" behind postscreen" if screened else "")
    cap = f"{who}: maxproc {value} smtpd processes, one client each (master_avail.c)"
    if value is None:
        cap = f"{who}: maxproc 0, no process limit"
    limit = DEFAULT_CLIENT_LIMIT if per_client is None else per_client
    return (
        f"{cap}; one client address may hold {limit} (smtpd_client_connection_count_limit, "
        "$mynetworks exempt)"
    )

"""MariaDB / MySQL: `max_connections` (default 151) client connections, and one more
kept for a user with CONNECTION ADMIN (SUPER). The count is checked when a
connection is accepted, before any login: past max_connections + 1 the server sends
"Too many connections" (ER_CON_COUNT_ERROR, 1040) instead of its handshake; on the
extra slot an ordinary user is refused at login. So an ordinary user gets
max_connections; the server hands out max_connections + 1 handshakes. The running
value comes from the server itself (SHOW VARIABLES through its own client over its
unix socket, as root: socket authentication), after any SET GLOBAL; else its
command line (--max-connections / --max_connections), else the default."""

from __future__ import annotations

import shutil
import subprocess

from tcpceiling.host.roots import Roots
from tcpceiling.servers import text
from tcpceiling.servers.model import AppLimit, Found

NAME = "mariadb"
DEFAULT = 151
QUERY = (
    "SHOW GLOBAL VARIABLES LIKE 'max_connections'; SHOW GLOBAL STATUS WHERE Variable_name "
    "IN ('Threads_connected', 'Connection_errors_max_connections')"
)


def matches(comm: str, exe: str) -> bool:
    return comm in ("mariadbd", "mysqld") or exe.endswith(("/mariadbd", "/mysqld"))


def parse_rows(out: str) -> dict[str, str]:
    """`name<TAB>value` rows of the client's batch output (-N -B)."""
    rows = (line.split("\t") for line in out.splitlines())
    return {r[0].lower(): r[1] for r in rows if len(r) == 2}


def ask(found: Found) -> dict[str, str]:
    """The server's own variables and counters, or {} when it would not say."""
    client = shutil.which("mariadb") or shutil.which("mysql")
    sock = text.flag(found.main.cmdline, "--socket") or "/run/mysqld/mysqld.sock"
    if client is None:
        return {}
    try:
        done = subprocess.run(
            [client, "-uroot", "-S", sock, "-N", "-B", "-e", QUERY],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return parse_rows(done.stdout) if done.returncode == 0 else {}


def read(found: Found, roots: Roots) -> AppLimit:
    got = ask(found) if roots.live else {}
    value, source, detail = text.running_or_flag(
        text.to_int(got.get("max_connections")),
        "SHOW GLOBAL VARIABLES (its client, as root on its unix socket)",
        found.main.cmdline,
        ("--max-connections", "--max_connections"),
        DEFAULT,
    )
    refused = text.to_int(got.get("connection_errors_max_connections"))
    connected = text.to_int(got.get("threads_connected"))
    return AppLimit(
        server=NAME,
        pid=found.main.pid,
        listen=f"{found.host}:{found.port}",
        setting="max_connections",
        value=value,
        source=source,
        source_detail=detail,
        capacity=value,
        in_use=connected - 1 if connected is not None and source == "server" else found.established,
        arithmetic=f"max_connections {value} for ordinary users; one more for a user with "
        f"CONNECTION ADMIN: {value + 1} handshakes before 'Too many connections'",
        symptom="ERROR 1040: Too many connections",
        raise_=f"SET GLOBAL max_connections = {value * 2} (and max_connections in my.cnf); "
        "its open_files_limit must cover them",
        check="expect:MariaDB|mysql,refuse:Too many connections",
        nofile_needed=value,
        nofile=found.main.nofile,
        evidence=f"Connection_errors_max_connections {refused}" if refused else "",
    )

"""PgBouncer: `max_client_conn` (default 100) client connections, counted when a
client is accepted: past it PgBouncer logs "no more connections allowed
(max_client_conn)" and closes the new one (its pooler error), before any startup
packet. The setting is read from the ini file given on its command line; a RELOAD
(SIGHUP) applies a changed value, so the file is the running value once reloaded."""

from __future__ import annotations

from tcpceiling.host.roots import Roots
from tcpceiling.servers import text
from tcpceiling.servers.model import AppLimit, Found, Source

NAME = "pgbouncer"
DEFAULT = 100


def matches(comm: str, exe: str) -> bool:
    return comm == "pgbouncer" or exe.endswith("/pgbouncer")


def parse_ini(body: str) -> dict[str, str]:
    """The [pgbouncer] section's 'key = value' lines (';' and '#' start comments)."""
    out: dict[str, str] = {}
    section = ""
    for raw in body.splitlines():
        line = raw.split(";", 1)[0].split("#", 1)[0].strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip().lower()
        elif section == "pgbouncer" and "=" in line:
            key, _, value = line.partition("=")
            out[key.strip().lower()] = value.strip()
    return out


def config_file(cmdline: tuple[str, ...]) -> str | None:
    """The ini file: pgbouncer's last argument that is not an option."""
    files = [a for a in cmdline[1:] if not a.startswith("-")]
    return files[-1] if files else None


def read(found: Found, roots: Roots) -> AppLimit:
    ini = config_file(found.main.cmdline)
    conf = parse_ini(text.host_file(roots, ini)) if ini else {}
    value = text.to_int(conf.get("max_client_conn"))
    source: Source = "config" if value is not None else "default"
    value = value if value is not None else DEFAULT
    return AppLimit(
        server=NAME,
        pid=found.main.pid,
        listen=f"{found.host}:{found.port}",
        setting="max_client_conn",
        value=value,
        source=source,
        source_detail=ini or "PgBouncer default max_client_conn 100",
        capacity=value,
        in_use=found.established,
        arithmetic=f"max_client_conn {value}: client connections, counted at accept",
        symptom="no more connections allowed (max_client_conn)",
        raise_=f"max_client_conn = {value * 2} in [pgbouncer], then RELOAD; its RLIMIT_NOFILE "
        "must cover clients + server connections",
        check="none",
        nofile_needed=value,
        nofile=found.main.nofile,
    )

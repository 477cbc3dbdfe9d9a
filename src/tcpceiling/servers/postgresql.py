"""PostgreSQL: `max_connections` (default 100) backends, of which
`superuser_reserved_connections` (default 3) and, from 16 on, `reserved_connections`
(default 0) are kept for superusers and roles with pg_use_reserved_connections
(InitPostgres, src/backend/utils/init/postinit.c). Past them a new backend says
"FATAL: sorry, too many clients already" (InitProcess, src/backend/storage/lmgr/
proc.c). max_connections is read at start only: a changed file (ALTER SYSTEM, an
edit) waits for a restart, so the postmaster's command line wins, then the files as
they were when it started."""

from __future__ import annotations

import os
import socket
import struct

from tcpceiling.host.roots import Roots
from tcpceiling.probe.serving.protocols import Verdict
from tcpceiling.servers import text
from tcpceiling.servers.model import AppLimit, Found, Source, WireCheck


# -- PostgreSQL (protocol 3.0) -----------------------------------------------------------
def pg_startup(user: str = "postgres", database: str = "postgres") -> bytes:
    """StartupMessage: length, 196608 (3.0), then user and database."""
    params = f"user\0{user}\0database\0{database}\0\0".encode()
    return struct.pack(">II", 8 + len(params), 196608) + params


def postgres_reply(data: bytes) -> Verdict:
    """'R' (AuthenticationOk, or a request for a password: either way a backend took
    the connection) is served; 'E' is an ErrorResponse, its severity and message the
    server's words."""
    if len(data) < 5:
        return Verdict("more")
    kind, length = data[0:1], struct.unpack(">I", data[1:5])[0]
    if kind == b"R":
        return Verdict("ok") if len(data) >= 9 else Verdict("more")
    if kind != b"E":
        return Verdict("error", f"unexpected message {kind!r}")
    if len(data) < 1 + length:
        return Verdict("more")
    fields = {
        f[:1]: f[1:].decode("utf-8", "replace") for f in data[5 : 1 + length].split(b"\0") if f
    }
    return Verdict("error", f"{fields.get(b'S', 'ERROR')}: {fields.get(b'M', '')}".strip())


#: `--check postgres`: a StartupMessage; an authentication request counts as served.
CHECK = WireCheck(
    pg_startup(),
    postgres_reply,
    "postgres: an authentication request counts as served: the postmaster forks "
    "a backend for the connection before it asks for a password (none is sent)",
)


NAME = "postgresql"
DEFAULTS = {"max_connections": 100, "superuser_reserved_connections": 3, "reserved_connections": 0}


def matches(comm: str, exe: str) -> bool:
    return comm in ("postgres", "postmaster") or exe.endswith(("/postgres", "/postmaster"))


def command_line(args: tuple[str, ...]) -> dict[str, str]:
    """`-c name=value`, `--name=value` and `-N n` settings of the postmaster."""
    out: dict[str, str] = {}
    for i, arg in enumerate(args):
        if arg == "-c" and i + 1 < len(args) and "=" in args[i + 1]:
            key, _, value = args[i + 1].partition("=")
            out[key.replace("-", "_")] = value
        elif arg.startswith("--") and "=" in arg:
            key, _, value = arg[2:].partition("=")
            out[key.replace("-", "_")] = value
        elif arg == "-N" and i + 1 < len(args):
            out["max_connections"] = args[i + 1]
    return out


def parse_messages(data: bytes) -> list[tuple[bytes, bytes]]:
    """Backend messages (type byte, int32 length, payload) in `data`, whole ones only."""
    out, off = [], 0
    while off + 5 <= len(data):
        kind, length = data[off : off + 1], struct.unpack(">I", data[off + 1 : off + 5])[0]
        if off + 1 + length > len(data):
            break
        out.append((kind, data[off + 5 : off + 1 + length]))
        off += 1 + length
    return out


def data_row_value(payload: bytes) -> str | None:
    """The first column of a DataRow ('D': int16 columns, int32 length, bytes)."""
    if len(payload) < 6:
        return None
    size = struct.unpack(">i", payload[2:6])[0]
    return None if size < 0 else payload[6 : 6 + size].decode(errors="replace")


def _until(s: socket.socket, kind: bytes) -> list[tuple[bytes, bytes]]:
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return parse_messages(data)
        data += chunk
        messages = parse_messages(data)
        if any(k == kind for k, _ in messages) or any(k == b"E" for k, _ in messages[:1]):
            return messages


def show(host: str, port: int, names: tuple[str, ...]) -> dict[str, str] | None:
    """SHOW each setting on the running server, as user postgres; None unless the
    server lets that user in without a password (trust or peer authentication)."""
    try:
        with socket.create_connection((host, port), timeout=3) as s:
            s.sendall(pg_startup())
            first = _until(s, b"Z")
            if not any(k == b"R" and p[:4] == b"\0\0\0\0" for k, p in first):
                return None
            out = {}
            for name in names:
                q = f"SHOW {name}\0".encode()
                s.sendall(b"Q" + struct.pack(">I", 4 + len(q)) + q)
                rows = [data_row_value(p) for k, p in _until(s, b"Z") if k == b"D"]
                if rows and rows[0] is not None:
                    out[name] = rows[0]
            s.sendall(b"X" + struct.pack(">I", 4))
            return out
    except OSError:
        return None


def _data_dir(found: Found) -> str | None:
    return text.flag(found.main.cmdline, "-D")


def _files(found: Found, roots: Roots) -> tuple[dict[str, str], list[str], float]:
    """postgresql.conf then postgresql.auto.conf of the data directory (the later wins),
    and the newest mtime among them."""
    data = _data_dir(found)
    merged: dict[str, str] = {}
    used, newest = [], 0.0
    for name in ("postgresql.conf", "postgresql.auto.conf"):
        if data is None:
            break
        path = f"{data}/{name}"
        body = text.host_file(roots, path)
        if body:
            merged |= text.key_values(body, sep="=")
            used.append(path)
            newest = max(newest, _mtime(roots, path))
    return merged, used, newest


def _mtime(roots: Roots, path: str) -> float:
    try:
        return os.stat(path if roots.live else roots.procfs.parent / path.lstrip("/")).st_mtime
    except OSError:
        return 0.0


def settings(found: Found, roots: Roots) -> tuple[dict[str, int], Source, str, str]:
    """The three settings, where max_connections came from, and a caveat: the running
    server's SHOW when it lets us in, else its command line, then its files."""
    running = show(text.reachable(found.host), found.port, tuple(DEFAULTS)) if roots.live else None
    if running and "max_connections" in running:
        values = {k: text.to_int(running.get(k)) for k in DEFAULTS}
        got = {k: v if v is not None else DEFAULTS[k] for k, v in values.items()}
        return got, "server", "SHOW max_connections (as user postgres)", ""
    cli = command_line(found.main.cmdline)
    files, used, newest = _files(found, roots)
    started = _mtime(roots, f"{_data_dir(found)}/postmaster.pid") if _data_dir(found) else 0.0
    out = {}
    for key, default in DEFAULTS.items():
        given = [text.to_int(cli.get(key)), text.to_int(files.get(key)), default]
        out[key] = next(v for v in given if v is not None)
    if "max_connections" in cli:
        source: Source = "command line"
        detail = f"-c max_connections={cli['max_connections']}"
    elif "max_connections" in files:
        source, detail = "config", " then ".join(used)
    else:
        source, detail = "default", "PostgreSQL default max_connections"
    caveat = ""
    if source == "config" and started and newest > started:
        caveat = (
            "; the files changed after the server started: a new max_connections waits "
            "for a restart"
        )
    return out, source, detail, caveat


def read(found: Found, roots: Roots) -> AppLimit:
    s, source, detail, caveat = settings(found, roots)
    most = s["max_connections"]
    reserved = s["superuser_reserved_connections"] + s["reserved_connections"]
    ordinary = max(0, most - reserved)
    return AppLimit(
        server=NAME,
        pid=found.main.pid,
        listen=f"{found.host}:{found.port}",
        setting="max_connections",
        value=most,
        source=source,
        source_detail=detail + caveat,
        capacity=ordinary,
        in_use=found.established,
        arithmetic=f"max_connections {most} - {reserved} reserved (superuser_reserved_"
        f"connections {s['superuser_reserved_connections']} + reserved_connections "
        f"{s['reserved_connections']}) = {ordinary} for ordinary roles; a superuser may use "
        f"all {most} (InitPostgres, src/backend/utils/init/postinit.c)",
        symptom="FATAL: sorry, too many clients already",
        raise_=f"ALTER SYSTEM SET max_connections = {most * 2}; then restart (or a pooler: "
        "PgBouncer in front)",
        check="postgres",
        nofile_needed=None,
        nofile=found.main.nofile,
        offset=-reserved,
    )

"""redis-server: `maxclients` (default 10000). Past it redis accepts, replies
`-ERR max number of clients reached` and closes (acceptCommonHandler,
src/networking.c); its listeners are not clients, so the cap is maxclients exactly.
At start redis lowers maxclients to RLIMIT_NOFILE - 32 when the fds are short
(adjustOpenFilesLimit, src/server.c): the running value is read with CONFIG GET."""

from __future__ import annotations

import socket

from tcpceiling.host.roots import Roots
from tcpceiling.servers import text
from tcpceiling.servers.model import AppLimit, Found, LineCheck, Source

#: `--check redis`: PING as a RESP array; +PONG (a simple string) is served, a RESP
#: error ("-ERR max number of clients reached") is redis refusing.
CHECK = LineCheck(b"*1\r\n$4\r\nPING\r\n", (b"+PONG",), (b"-",))

NAME = "redis"
DEFAULT = 10_000
RESERVED_FDS = 32  # CONFIG_MIN_RESERVED_FDS, src/server.h


def matches(comm: str, exe: str) -> bool:
    return comm.startswith("redis-server") or exe.endswith("/redis-server")


def parse_config_get(reply: bytes) -> int | None:
    """`*2 $10 maxclients $N VALUE` (RESP array of bulk strings) -> VALUE."""
    lines = reply.decode(errors="replace").split("\r\n")
    return text.to_int(lines[4]) if len(lines) > 4 and lines[0] == "*2" else None


def parse_info(reply: str) -> dict[str, str]:
    """INFO's 'key:value' lines."""
    return dict(line.split(":", 1) for line in reply.splitlines() if ":" in line)


def resp_complete(data: bytes) -> bool:
    """Is this a whole RESP reply: an error or status line, a bulk string ($N, then N
    bytes and CRLF), or an array of bulk strings (*N of them)?"""
    head, sep, rest = data.partition(b"\r\n")
    if not sep:
        return False
    if head[:1] in (b"-", b"+", b":"):
        return True
    if head[:1] == b"$":
        size = int(head[1:])
        return size < 0 or len(rest) >= size + 2
    if head[:1] == b"*":
        remaining = rest
        for _ in range(int(head[1:])):
            if not resp_complete(remaining):
                return False
            length, _, after = remaining.partition(b"\r\n")
            remaining = after[int(length[1:]) + 2 :] if length[:1] == b"$" else after
        return True
    return True  # not RESP: nothing more to wait for


def _ask(host: str, port: int, command: bytes) -> bytes:
    with socket.create_connection((host, port), timeout=2) as s:
        s.sendall(command)
        data = b""
        while not resp_complete(data):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data


AT_CAP = b"-ERR max number of clients reached"


def live(found: Found) -> tuple[int | None, int | None, str]:
    """(maxclients, connected clients less this one, its words) from the running
    server; None where it would not say (a password). At its cap redis refuses the
    query itself, and only then: its clients now are its maxclients."""
    host = text.reachable(found.host)
    try:
        reply = _ask(host, found.port, b"CONFIG GET maxclients\r\n")
        if reply.startswith(AT_CAP) and found.established is not None:
            said = f"{AT_CAP.decode()[1:]} (to our CONFIG GET): its {found.established} are all"
            return found.established, found.established, said
        value = parse_config_get(reply)
        info = parse_info(_ask(host, found.port, b"INFO\r\n").decode(errors="replace"))
    except OSError:
        return None, None, ""
    clients = text.to_int(info.get("connected_clients", "").strip())
    rejected = text.to_int(info.get("rejected_connections", "").strip())
    said = f"rejected_connections {rejected} (INFO stats)" if rejected else ""
    return value, None if clients is None else clients - 1, said


def configured(found: Found, roots: Roots) -> tuple[int, Source, str]:
    """--maxclients on the command line, else `maxclients` in the config file given
    as its first argument, else the default."""
    args = found.main.cmdline
    value = text.to_int(text.flag(args, "--maxclients"))
    if value is not None:
        return value, "command line", "--maxclients"
    conf = next((a for a in args[1:2] if a.endswith(".conf")), None)
    if conf:
        value = text.to_int(text.key_values(text.host_file(roots, conf)).get("maxclients"))
        if value is not None:
            return value, "config", conf
    return DEFAULT, "default", "redis default maxclients"


def read(found: Found, roots: Roots) -> AppLimit:
    value, clients, said = live(found)
    source: Source = "server"
    detail = (
        "refused our CONFIG GET: at maxclients"
        if said.startswith("ERR")
        else ("CONFIG GET maxclients")
    )
    if value is None:
        value, source, detail = configured(found, roots)
    return AppLimit(
        server=NAME,
        pid=found.main.pid,
        listen=f"{found.host}:{found.port}",
        setting="maxclients",
        value=value,
        source=source,
        source_detail=detail,
        capacity=value,
        in_use=clients if clients is not None else found.established,
        arithmetic="maxclients: clients only, listeners not counted "
        "(acceptCommonHandler, src/networking.c)",
        symptom="-ERR max number of clients reached",
        raise_=f"CONFIG SET maxclients {value * 2} (and maxclients in redis.conf); "
        f"redis needs RLIMIT_NOFILE >= maxclients + {RESERVED_FDS}",
        check="redis",
        nofile_needed=value + RESERVED_FDS,
        nofile=found.main.nofile,
        nofile_offset=RESERVED_FDS,
        evidence=said,
    )

"""memcached: `-c`/`--conn-limit` (max_connections, default 1024) bounds fd
numbers, not clients: a new connection whose fd is max_connections - 1 or more gets
"ERROR Too many open connections" and is closed (`reject = sfd >= settings.maxconns
- 1`, drive_machine, memcached.c). accept() hands out the lowest free fd, so it
serves max_connections - 1 less the fds below that line it holds for itself
(listeners, each worker thread's event base and notify pipe, stdio). With -c 100 and
2 or 8 threads it holds 15 or 39 such fds and serves 84 or 60 (tests/test_servers.py)."""

from __future__ import annotations

import os
import socket

from tcpceiling.host.roots import Roots
from tcpceiling.servers import text
from tcpceiling.servers.model import AppLimit, Found, LineCheck

#: `--check memcached`: the text protocol's `version`; "VERSION x" is served, its
#: error lines (protocol.txt: ERROR, CLIENT_ERROR, SERVER_ERROR) are its refusal.
CHECK = LineCheck(b"version\r\n", (b"VERSION ",), (b"SERVER_ERROR", b"ERROR", b"CLIENT_ERROR"))

NAME = "memcached"
DEFAULT = 1024


def matches(comm: str, exe: str) -> bool:
    return comm == "memcached" or exe.endswith("/memcached")


def parse_stats(reply: str) -> dict[str, str]:
    """`STAT name value` lines of the stats command."""
    out = {}
    for line in reply.splitlines():
        words = line.split()
        if len(words) >= 3 and words[0] == "STAT":
            out[words[1]] = words[2]
    return out


def stats(host: str, port: int) -> dict[str, str]:
    try:
        with socket.create_connection((host, port), timeout=2) as s:
            s.sendall(b"stats\r\n")
            data = b""
            while not data.endswith(b"END\r\n") and not data.startswith(b"ERROR"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return {}
    return parse_stats(data.decode(errors="replace"))


def own_fds(roots: Roots, found: Found, limit: int) -> int:
    """Its fds numbered below limit - 1 that are not its connections (/proc/PID/fd,
    whose entries are the fd numbers); 0 when they cannot be listed."""
    try:
        names = os.listdir(roots.procfs / str(found.main.pid) / "fd")
    except OSError:
        return 0
    low = sum(1 for n in names if n.isdigit() and int(n) < limit - 1)
    return max(0, low - (found.established or 0))


def read(found: Found, roots: Roots) -> AppLimit:
    got = stats(text.reachable(found.host), found.port) if roots.live else {}
    value, source, detail = text.running_or_flag(
        text.to_int(got.get("max_connections")),
        "stats: max_connections",
        found.main.cmdline,
        ("-c", "--conn-limit"),
        DEFAULT,
    )
    own = own_fds(roots, found, value)
    rejected = text.to_int(got.get("rejected_connections"))
    return AppLimit(
        server=NAME,
        pid=found.main.pid,
        listen=f"{found.host}:{found.port}",
        setting="max_connections",
        value=value,
        source=source,
        source_detail=detail,
        capacity=max(0, value - 1 - own),
        in_use=found.established,
        arithmetic=f"-c {value} bounds fd numbers: {value} - 1 less the {own} fds below it "
        "that it holds for itself (drive_machine, memcached.c)",
        symptom="ERROR Too many open connections",
        raise_=f"memcached -c {value * 2} (its RLIMIT_NOFILE follows -c)",
        check="memcached",
        nofile_needed=value,
        nofile=found.main.nofile,
        offset=-1 - own,
        evidence=f"rejected_connections {rejected} (stats)" if rejected else "",
    )

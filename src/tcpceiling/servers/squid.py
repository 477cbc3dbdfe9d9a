"""Squid: its file descriptors less those it keeps free. Squid counts the
descriptors it uses (Number_FD) against Squid_MaxFD, with RESERVED_FD = min(100,
Squid_MaxFD / 4) kept in reserve (comm_init, src/comm.cc) and fdNFree() = Squid_MaxFD -
Number_FD - Opening_FD (src/fd.cc). Two lines follow from them:

- keep-alive: a reply keeps its client's connection open only while fdUsageHigh() is
  false, that is while free >= 2 x RESERVED_FD and free >= Number_FD / 4 (src/fd.cc;
  clientBuildReplyHeader drops keep-alive otherwise). Past it each reply ends with
  Connection: close, so idle clients are held up to that line, less the descriptors
  Squid uses for itself;
- accept: Squid accepts while free >= RESERVED_FD (Comm::TcpAcceptor::okToAccept,
  src/comm/TcpAcceptor.cc), then defers accept() (AcceptLimiter): new clients wait
  unanswered in the listen queue and cache.log says "WARNING! Your cache is running
  out of filedescriptors" (at most every 15 s).

A client with a request in flight to an origin costs one more descriptor (its
server connection), and idle server connections kept for reuse count too.

Where it is read: Squid_MaxFD is `max_filedescriptors` (0: the build's default, at
most the hard RLIMIT_NOFILE), and Squid sets its own soft RLIMIT_NOFILE to it
(setMaxFD, src/main.cc): the cache manager's info page says it, else the running
process's limit does. The descriptors in use come from the same page (`Number of
file desc currently in use`, less the connection that asks), else /proc/PID/fd, which
also lists descriptors Squid does not count (its epoll fd...). With `workers N` each
kid has its own descriptors and the kernel spreads clients over the kids."""

from __future__ import annotations

import re
import socket

from tcpceiling.host.roots import Roots
from tcpceiling.servers import text
from tcpceiling.servers.model import AppLimit, Found, Source

NAME = "squid"
DEFAULT_CONF = "/etc/squid/squid.conf"
RESERVED_MAX = 100
RUNNING_OUT = "Your cache is running out of filedescriptors"
#: a page Squid serves itself (no origin, kept alive): what a held client asks
CHECK = "http:/squid-internal-static/icons/SN.png"
INFO_PATH = "/squid-internal-mgr/info"
_IN_USE = re.compile(r"Number of file desc currently in use:\s*(\d+)")
_MAX = re.compile(r"Maximum number of file descriptors:\s*(\d+)")


def matches(comm: str, exe: str) -> bool:
    return comm == "squid" or exe.endswith("/squid")


def reserved(max_fd: int) -> int:
    """RESERVED_FD = min(100, Squid_MaxFD / 4) (comm_init, src/comm.cc)."""
    return min(RESERVED_MAX, max_fd // 4)


def keep_alive_line(max_fd: int) -> int:
    """The most descriptors in use at which a reply still keeps its connection alive:
    free >= 2 x RESERVED_FD and free >= in use / 4 (fdUsageHigh, src/fd.cc)."""
    used = min(max_fd - 2 * reserved(max_fd), max_fd * 4 // 5 + 4)
    while used > 0 and max_fd - used < used >> 2:  # at most a few steps
        used -= 1
    return max(0, used)


def accept_line(max_fd: int) -> int:
    """The most descriptors in use once accept() stops: it runs while free >=
    RESERVED_FD, and each accepted client adds one (okToAccept)."""
    return max(0, max_fd - reserved(max_fd) + 1)


def parse_info(page: str) -> tuple[int | None, int | None]:
    """(Squid_MaxFD, Number_FD) from the cache manager's info page."""
    most, used = _MAX.search(page), _IN_USE.search(page)
    return (int(most.group(1)) if most else None, int(used.group(1)) if used else None)


def info(host: str, port: int, timeout: float = 2.0) -> str:
    """The info page, asked on a connection of its own ('' when Squid does not answer:
    at its cap it does not accept)."""
    req = f"GET {INFO_PATH} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(req.encode())
            data = b""
            while len(data) < 1 << 20 and (chunk := s.recv(65536)):
                data += chunk
    except OSError:
        return ""
    return data.decode(errors="replace") if data.startswith(b"HTTP/1.1 200") else ""


def read(found: Found, roots: Roots) -> AppLimit:
    conf_file = text.flag(found.main.cmdline, "-f") or DEFAULT_CONF
    conf = text.key_values(text.host_file(roots, conf_file))
    page = info(text.reachable(found.host), found.port) if roots.live else ""
    most, used = parse_info(page)
    configured = text.to_int(conf.get("max_filedescriptors", "").split(" ")[0])
    max_fd, source, detail = _max_fd(most, found.main.nofile, configured, conf_file)
    held = found.established or 0
    own = (
        max(0, used - 1 - held)
        if used is not None
        else text.own_fds(roots, found.main.pid, found.established)
    )
    counted = "the cache manager's count" if used is not None else "/proc/PID/fd"
    log = text.tail(roots, conf.get("cache_log", "/var/log/squid/cache.log").split(" ")[0])
    said = text.last_line(log, RUNNING_OUT)
    res = reserved(max_fd)
    return AppLimit(
        server=NAME,
        pid=found.main.pid,
        listen=f"{found.host}:{found.port}",
        setting="max_filedescriptors",
        value=max_fd,
        source=source,
        source_detail=detail,
        capacity=max(0, keep_alive_line(max_fd) - own) if max_fd else None,
        in_use=found.established,
        arithmetic=f"of {max_fd} descriptors (RESERVED_FD {res}), replies keep clients alive "
        f"up to {keep_alive_line(max_fd)} in use (free >= 2 x {res} and >= in use / 4: "
        f"fdUsageHigh), less {own} of its own ({counted}); it accepts up to "
        f"{accept_line(max_fd)} in use, answering those past the first line with "
        "Connection: close; a client with a request in flight to an origin costs 2",
        symptom=f"clients wait unanswered in the listen queue; cache.log: 'WARNING! {RUNNING_OUT}'",
        raise_=f"max_filedescriptors {2 * (max_fd or 1024)} in squid.conf (and the service's "
        "LimitNOFILE), then restart",
        check=CHECK,
        nofile=found.main.nofile,
        # planning (tune): from 1,000 descriptors on in use / 4 binds, about 4/5 of them
        kept_free_share=5,
        offset=-own,
        evidence=said,
    )


def _max_fd(
    running: int | None, nofile: int | None, configured: int | None, conf_file: str
) -> tuple[int, Source, str]:
    if running is not None:
        return running, "server", "cache manager info: Maximum number of file descriptors"
    if nofile is not None:
        return nofile, "server", "its RLIMIT_NOFILE, which Squid sets to Squid_MaxFD"
    if configured:
        return configured, "config", f"{conf_file}: max_filedescriptors"
    return 1024, "default", "default 1024"

"""From a listener (or a process) to the server behind it: the listener's socket
inode (sock_diag) to the processes holding it (/proc/PID/fd, as ss -p does), and
each one's comm, exe, command line and nofile, read under the Roots' procfs."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from tcpceiling.host import diag, parse, route, sockets
from tcpceiling.host import netns as netns_mod
from tcpceiling.host.read import socket_inodes, socket_owners
from tcpceiling.host.roots import Roots
from tcpceiling.servers.model import Found, ServerProcess

ESTABLISHED = 1 << sockets.STATE_NUMBERS["ESTABLISHED"]


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def parse_ppid(stat: str) -> int:
    """The 4th field of /proc/PID/stat, after the parenthesised comm (which may hold
    spaces and parentheses: split at the last ')')."""
    return int(stat.rpartition(")")[2].split()[1]) if ")" in stat else 0


def read_server_process(roots: Roots, pid: int) -> ServerProcess:
    base = roots.procfs / str(pid)
    try:
        exe = os.readlink(base / "exe")
    except OSError:
        exe = ""
    limits = _text(base / "limits")
    nofile = parse.parse_limits(limits).nofile.soft if limits else None
    return ServerProcess(
        pid=pid,
        ppid=parse_ppid(_text(base / "stat")),
        comm=_text(base / "comm").strip(),
        exe=exe,
        cmdline=tuple(a for a in _text(base / "cmdline").split("\0") if a),
        nofile=nofile,
    )


def _covers(listen_host: str, asked: str) -> bool:
    """A listener on the wildcard address covers every address asked about."""
    if asked in ("", "0.0.0.0", "::") or listen_host == asked:
        return True
    try:
        return ipaddress.ip_address(listen_host).is_unspecified
    except ValueError:
        return False


def established_on(port: int) -> int:
    """ESTABLISHED sockets whose local port is `port`: the server's connections
    (selected by the kernel: sock_diag with a source-port condition)."""
    return len(diag.dump(ESTABLISHED, program=diag.sport_range(port, port)))


def find_listener(
    roots: Roots, host: str, port: int, listeners: list[sockets.Listener] | None = None
) -> Found | None:
    """The server listening on host:port in the calling thread's netns, or None
    (`listeners`: the LISTEN sockets, when the caller read them already)."""
    every = sockets.all_listeners() if listeners is None else listeners
    found = [ln for ln in every if ln.port == port and _covers(ln.host, host)]
    if not found:
        return None
    pids = set(socket_owners({ln.inode for ln in found}, roots))
    owners = [read_server_process(roots, p) for p in sorted(pids)]
    if not owners:
        return None
    main = next((o for o in owners if o.ppid not in pids), owners[0])
    by_inode = {ln.inode: ln for ln in every}
    mine = _endpoints(by_inode, _first_sockets(roots, main.pid, set(by_inode)))
    return Found(main, tuple(owners), found[0].host, port, mine, established_on(port))


def _endpoints(by_inode: dict[int, sockets.Listener], inodes: Iterable[int]) -> int:
    """Listening endpoints among these inodes: nginx spends a connection on each in
    every worker; with `reuseport` the master holds a socket per worker for one
    endpoint, and each worker uses only its own."""
    return len({(by_inode[i].host, by_inode[i].port) for i in inodes})


def find_pid(roots: Roots, pid: int) -> Found | None:
    """The server a process belongs to, through its first listening socket (listeners
    are opened first: low fds, so a server holding a million fds is not read whole)."""
    every = sockets.all_listeners()
    by_inode = {ln.inode: ln for ln in every}
    fd_dir = roots.procfs / str(pid) / "fd"
    inode = next((i for i in socket_inodes(fd_dir) if i in by_inode), 0)
    if not inode:
        return None
    ln = by_inode[inode]
    return find_listener(roots, ln.host, ln.port, every)


#: Listening sockets are opened when a server starts, so they are among its first
#: fds: only this many are read per candidate process (a worker holding a million
#: connections is not read whole).
FIRST_FDS = 1024


def _first_sockets(roots: Roots, pid: int, wanted: set[int]) -> set[int]:
    """Which of `wanted` the process holds among its first FIRST_FDS fds."""
    return {i for i in socket_inodes(roots.procfs / str(pid) / "fd", FIRST_FDS) if i in wanted}


def candidates(roots: Roots, known: Callable[[str], bool]) -> list[int]:
    """Processes whose comm a module of the registry recognises (one small read each)."""
    pids = []
    for entry in os.scandir(roots.procfs):
        if entry.name.isdigit() and known(_text(Path(entry.path) / "comm").strip()):
            pids.append(int(entry.name))
    return pids


def found_all(
    roots: Roots, listeners: list[sockets.Listener], known: Callable[[str], bool]
) -> list[Found]:
    """Every listener owned by a process the registry may know, as a Found per
    (main process, port); `established` is left for the caller, who counts every
    port in the walk of the established hash it makes anyway (sockets.client_sockets)."""
    by_inode = {ln.inode: ln for ln in listeners if ln.inode}
    holders: dict[int, set[int]] = {}
    for pid in candidates(roots, known):
        for inode in _first_sockets(roots, pid, set(by_inode)):
            holders.setdefault(inode, set()).add(pid)
    groups: dict[tuple[int, int], Found] = {}
    for inode, pids in holders.items():
        ln = by_inode[inode]
        owners = [read_server_process(roots, p) for p in sorted(pids)]
        main = next((o for o in owners if o.ppid not in pids), owners[0])
        if (main.pid, ln.port) in groups:
            continue
        mine = _endpoints(by_inode, (i for i, ps in holders.items() if main.pid in ps))
        groups[(main.pid, ln.port)] = Found(main, tuple(owners), ln.host, ln.port, mine)
    return list(groups.values())


def namespaces(roots: Roots) -> dict[str, int]:
    """One process per network namespace of the host, keyed by the namespace's link
    (`net:[INODE]` of /proc/PID/ns/net): the lowest pid in each."""
    seen: dict[str, int] = {}
    for entry in os.scandir(roots.procfs):
        if entry.name.isdigit():
            try:
                link = os.readlink(Path(entry.path) / "ns" / "net")
            except OSError:
                continue
            seen.setdefault(link, int(entry.name))
    return seen


def find_elsewhere(roots: Roots, host: str, port: int) -> tuple[int, Found] | None:
    """The server listening on host:port in another network namespace of this host
    (a namespace where `host` is a local address), and a pid in that namespace to
    enter it by; None when no namespace here holds it (a remote server)."""
    try:
        own = os.readlink(roots.procfs / "thread-self" / "ns" / "net")
    except OSError:
        own = ""
    for link, pid in sorted(namespaces(roots).items(), key=lambda kv: kv[1]):
        if link == own:
            continue
        try:
            with netns_mod.of_process(pid, roots):
                if not route.is_local(host):
                    continue
                found = find_listener(roots, host, port)
        except OSError:
            continue
        if found is not None:
            return pid, found
    return None

"""SYNs dropped at a full accept queue, per listening port, for `trace`.

A SYN that finds its listener's accept queue full is counted in ListenOverflows and
ListenDrops and then consumed, not freed with a drop reason: tcp_conn_request()
(net/ipv4/tcp_input.c) takes `goto drop` after sk_acceptq_is_full(), and
tcp_rcv_state_process() calls consume_skb() when conn_request() returns 0. So
`skb:kfree_skb` with the reason TCP_LISTEN_OVERFLOW does not see them (a listener of
backlog 2 flooded by 30 clients: ListenOverflows +135, that event 0 times), and it
has no port; and its probe would run on every skb freed on the host. trace does not
enable it.
What counts the SYNs is the counter, per network namespace; the port is the
listener of that namespace whose queue is full (sock_diag: idiag_rqueue is the
accept queue, idiag_wqueue its backlog), and the process is the one that holds it.

Every namespace is read through a process in it: /proc/PID/net/netstat is PID's
namespace's counters (no setns), so a start and an end cost one read per namespace.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tcpceiling.errors import HostError, ParseError
from tcpceiling.host import netns as netns_mod
from tcpceiling.host import parse, sockets
from tcpceiling.host.read import read_comm, socket_inodes
from tcpceiling.host.roots import Roots

COUNTER = "TcpExt.ListenOverflows"


@dataclass(frozen=True)
class ListenDrop:
    """SYNs a full accept queue dropped during the trace, and who owns the queue."""

    host: str
    port: int
    drops: int  # the namespace's ListenOverflows over the trace
    queue: int
    backlog: int
    comm: str
    pid: int


def namespaces(procfs: Path) -> dict[str, list[int]]:
    """Every network namespace (its ns/net link) with the pids in it."""
    out: dict[str, list[int]] = {}
    for entry in os.scandir(procfs):
        if not entry.name.isdigit():
            continue
        try:
            link = os.readlink(f"{entry.path}/ns/net")
        except OSError:
            continue  # gone, or a kernel thread
        out.setdefault(link, []).append(int(entry.name))
    return out


def overflows(procfs: Path, pids: list[int]) -> int | None:
    """The namespace's ListenOverflows, read through the first of its pids still alive."""
    for pid in pids:
        try:
            text = (procfs / str(pid) / "net" / "netstat").read_text()
        except OSError:
            continue
        try:
            return parse.parse_netstat(text).get(COUNTER, 0)
        except ParseError:
            return None
    return None


def moved(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Namespaces whose counter rose, by how much (a namespace new since the start
    counts from 0)."""
    return {ns: n - before.get(ns, 0) for ns, n in after.items() if n > before.get(ns, 0)}


class Overflows:
    """ListenOverflows of every namespace at the start; `drops()` at the end."""

    def __init__(self, roots: Roots) -> None:
        self.roots = roots
        self.start = self._read()

    def _read(self) -> dict[str, int]:
        self.pids = namespaces(self.roots.procfs)
        counts = {ns: overflows(self.roots.procfs, p) for ns, p in self.pids.items()}
        return {ns: n for ns, n in counts.items() if n is not None}

    def drops(self) -> list[ListenDrop]:
        out = []
        for ns, n in moved(self.start, self._read()).items():
            out.extend(self._where(self.pids[ns], n))
        return sorted(out, key=lambda d: -d.drops)

    def _where(self, pids: list[int], n: int) -> list[ListenDrop]:
        """The full listeners of the namespace (each given the namespace's count), or
        the namespace itself when none is full any more."""
        try:
            with netns_mod.of_process(pids[0], self.roots):
                full = [ln for ln in sockets.all_listeners() if ln.full]
        except (OSError, HostError):
            full = []
        if not full:
            return [ListenDrop("?", 0, n, 0, 0, read_comm(self.roots, pids[0]) or "?", pids[0])]
        owners = owners_in(pids, {ln.inode for ln in full}, self.roots)
        return [
            ListenDrop(ln.host, ln.port, n, ln.queue, ln.backlog, *owners.get(ln.inode, ("?", 0)))
            for ln in full
        ]


def owners_in(pids: list[int], inodes: set[int], roots: Roots) -> dict[int, tuple[str, int]]:
    """inode -> (comm, pid) of the processes of one namespace that hold these sockets."""
    out: dict[int, tuple[str, int]] = {}
    for pid in pids:
        held = inodes.intersection(socket_inodes(roots.procfs / str(pid) / "fd"))
        if not held:
            continue
        comm = read_comm(roots, pid)
        if comm is None:
            continue
        for inode in held - out.keys():
            out[inode] = (comm, pid)
        if out.keys() >= inodes:
            break
    return out

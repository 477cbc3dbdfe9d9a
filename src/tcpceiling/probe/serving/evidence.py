"""Whose limit stopped a probe of a real server, and the evidence for it.

When the server runs on this machine (its address is local in the probe's netns),
the kernel shows its side too: the listener's accept queue (sock_diag), the netns
counters ListenOverflows / ListenDrops / TCPSynRetrans (/proc/net/netstat),
conntrack drops (/proc/net/stat/nf_conntrack), and the server process's open fds
against its RLIMIT_NOFILE (/proc/PID). `sample()` reads them; `attribute()` is a
pure function from the workers' failure kind and two samples to a Stop.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from tcpceiling.analysis.model import Endpoint
from tcpceiling.errors import ParseError
from tcpceiling.host import sockets
from tcpceiling.host.read import read_comm, read_net_counters, read_process, socket_owners
from tcpceiling.host.roots import Roots
from tcpceiling.probe.run.result import Stop, StopReason
from tcpceiling.servers.model import AppLimit

NETSTAT_KEYS = (
    "TcpExt.ListenOverflows",
    "TcpExt.ListenDrops",
    "TcpExt.TCPSynRetrans",
    "TcpExt.TCPReqQFullDrop",
)
CONNTRACK_KEYS = ("drop", "early_drop", "insert_failed")
FD_SLACK = 2  # a server "at" its fd limit may keep a spare fd or two (e.g. asyncio)


@dataclass(frozen=True)
class ServerProcess:
    pid: int
    name: str
    open_fds: int
    nofile_soft: int | None
    nofile_hard: int | None

    @property
    def at_fd_limit(self) -> bool:
        return self.nofile_soft is not None and self.open_fds >= self.nofile_soft - FD_SLACK


@dataclass(frozen=True)
class ServerSample:
    counters: dict[str, int] = field(default_factory=dict)
    listeners: tuple[sockets.Listener, ...] = ()
    processes: tuple[ServerProcess, ...] = ()


def _counters(roots: Roots) -> dict[str, int]:
    """Netns counters of the calling thread (the netns it entered)."""
    netstat, conntrack = read_net_counters(roots)
    out: dict[str, int] = {}
    if netstat:
        out.update({k.split(".", 1)[1]: netstat.get(k, 0) for k in NETSTAT_KEYS})
    if conntrack:
        out.update({f"conntrack_{k}": conntrack.get(k, 0) for k in CONNTRACK_KEYS})
    return out


def _process(pid: int, roots: Roots) -> ServerProcess | None:
    try:
        view = read_process(roots, str(pid))
    except (OSError, ParseError):
        return None
    name = read_comm(roots, pid)
    if name is None:
        return None
    nofile = view.limits.nofile
    return ServerProcess(pid, name, view.open_fds, nofile.soft, nofile.hard)


def sample(
    endpoints: tuple[Endpoint, ...], server_pid: int | None, roots: Roots | None = None
) -> ServerSample:
    """Read the server side on this host, in the calling thread's netns."""
    roots = roots or Roots()
    found = tuple(ln for e in {e.port for e in endpoints} for ln in sockets.listeners(e))
    hosts = {e.host for e in endpoints}
    mine = tuple(ln for ln in found if ln.host in hosts or ln.host in ("0.0.0.0", "::")) or found
    pids = [server_pid] if server_pid else socket_owners((ln.inode for ln in mine), roots)
    procs = tuple(p for p in (_process(pid, roots) for pid in pids) if p is not None)
    return ServerSample(_counters(roots), mine, procs)


def deltas(before: ServerSample, after: ServerSample) -> dict[str, int]:
    return {k: v - before.counters.get(k, 0) for k, v in after.counters.items()}


def evidence_data(before: ServerSample, after: ServerSample) -> dict[str, Any]:
    """The evidence as plain data for the result's `server` field."""
    return {
        "deltas": deltas(before, after),
        "listeners": [asdict(ln) | {"full": ln.full} for ln in after.listeners],
        "processes": [asdict(p) | {"at_fd_limit": p.at_fd_limit} for p in after.processes],
    }


def _fd_limit_detail(procs: list[ServerProcess]) -> str:
    p = procs[0]
    return (
        f"server process {p.name} (pid {p.pid}) holds {p.open_fds} fds of its "
        f"RLIMIT_NOFILE {p.nofile_soft}: it cannot accept more (accept() fails with EMFILE)"
    )


def _queue_detail(after: ServerSample, d: dict[str, int]) -> str:
    queues = ", ".join(f"{ln.queue}/{ln.backlog}" for ln in after.listeners) or "not visible"
    return (
        f"the listener's accept queue is full (queued/backlog {queues}); "
        f"ListenOverflows +{d.get('ListenOverflows', 0)}: the server does not accept "
        "fast enough (or at all), so new handshakes are dropped"
    )


def _silent(silent: int, after: ServerSample) -> tuple[StopReason, str] | None:
    """Silent connections the listener's accept queue cannot hold were accepted: the
    server keeps them, unanswered, in a queue of its own. None when the listener is
    not visible (a remote server), so nothing tells the two apart."""
    if not after.listeners or not silent:
        return None
    queued = sum(ln.queue for ln in after.listeners)
    if queued >= silent:
        return "server_silent", (
            f"{silent} connections established and unanswered, {queued} waiting in the "
            "listener's accept queue: the server is not calling accept()"
        )
    return "server_queued", (
        f"{silent} connections established and unanswered, only {queued} in the listener's "
        f"accept queue: the server accepted {silent - queued} or more and holds them without "
        "answering, a queue of its own (a proxy past its backends' connection caps; a "
        "worker pool with every worker busy)"
    )


def _overflow_note(d: dict[str, int], after: ServerSample) -> str:
    """A queue that overflowed beside the server's own answer: the probe's pace, noted."""
    n = d.get("ListenOverflows", 0)
    if not n and not any(ln.full for ln in after.listeners):
        return ""
    return (
        f"; note: ListenOverflows +{n}: new handshakes also found the listener's accept "
        "queue full (the opening's own pace), which is not the limit"
    )


def _reason(
    kind: str, reply: str, after: ServerSample, d: dict[str, int], silent: int = 0
) -> tuple[StopReason, str]:
    """(reason, detail) for the failure kind that ended opening, given the evidence."""
    at_limit = [p for p in after.processes if p.at_fd_limit]
    overflowed = d.get("ListenOverflows", 0) > 0 or any(ln.full for ln in after.listeners)
    conntrack = sum(d.get(f"conntrack_{k}", 0) for k in CONNTRACK_KEYS)
    if reply and kind in ("error_reply", "closed", "reset", "evicted"):
        said = "evicted connections with" if kind == "evicted" else "refused with"
        return "server_reply" if kind != "evicted" else "server_evicted", (
            f'the server {said} "{reply}" and closed' + _overflow_note(d, after)
        )
    if kind in ("silent", "timeout") and at_limit:
        return "server_nofile", _fd_limit_detail(at_limit)
    if kind == "timeout" and conntrack:
        return "conntrack", f"conntrack dropped {conntrack} packets (table full)"
    if kind in ("silent", "timeout", "reset") and overflowed:
        return "backlog", _queue_detail(after, d)
    if kind == "silent" and (queue := _silent(silent, after)):
        return queue
    if kind == "closed":
        if at_limit:
            return "server_nofile", _fd_limit_detail(at_limit)
        return "server_closed", (
            "the server accepted and closed at once: it is at a connection limit of its "
            "own (a setting such as maxconn, maxclients or max_connections)"
        )
    by_kind: dict[str, tuple[StopReason, str]] = {
        "evicted": (
            "server_evicted",
            "the server closed connections it had served to make room for new ones: "
            "'served' is the most it holds at once" + _overflow_note(d, after),
        ),
        "refused": ("server_refused", "connection refused: nothing listens, or it stopped"),
        "reset": ("server_reset", "the server reset connections"),
        "silent": ("server_silent", "established but never answered: the server is stuck"),
        "timeout": ("server_timeout", "SYNs unanswered: a full queue elsewhere or a firewall"),
    }
    return by_kind.get(kind, ("server", f"connections kept failing: {kind}"))


def attribute(
    kind: str,
    replies: dict[str, int],
    before: ServerSample,
    after: ServerSample,
    silent: int = 0,
    server: AppLimit | None = None,
) -> Stop:
    """The server-side Stop for the workers' dominant failure kind (watch.py); `silent`
    is how many established connections were waiting for an answer at the end;
    `server` is the server behind the listener as tcpceiling.servers read it, whose
    own setting and words name the limit when it is one the registry knows."""
    reply = max(replies, key=lambda r: replies[r]) if replies else ""
    d = deltas(before, after)
    reason, detail = _reason(kind, reply, after, d, silent)
    evidence = evidence_data(before, after) | {
        "failure": kind,
        "reply": reply or None,
        "silent": silent,
    }
    if server is not None and server.known and reason != "server_nofile":
        detail += (
            f"; {server.server} (pid {server.pid}) {server.setting} {server.value} serves "
            f"{server.capacity} at once ({server.source}): {server.symptom}"
        )
        evidence["server"] = {
            "name": server.server,
            "setting": server.setting,
            "value": server.value,
            "capacity": server.capacity,
            "source": server.source,
        }
    return Stop(reason, side="server", detail=detail, evidence=evidence)

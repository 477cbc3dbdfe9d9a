"""One look at a running host, through the same readers and model as `analyze`:
processes holding TCP sockets (fds of RLIMIT_NOFILE, threads of their task limit),
every listener's accept queue, ephemeral ports per (source, destination) with the
usable count analysis.limits.ports computes, host-wide limits, the kernel's
counters, and analyze's ceiling per role. Per-netns parts are read inside `netns`."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field, replace

from tcpceiling.analysis.analyze import evaluate, prepare
from tcpceiling.analysis.limits.ports import TIME_WAIT_SECONDS, usable_ports
from tcpceiling.analysis.limits.upstream import rows_for
from tcpceiling.analysis.model import build_scenarios, total_ceiling
from tcpceiling.errors import InputError, ParseError
from tcpceiling.host import diag, parse, read, sockets
from tcpceiling.host import netns as netns_mod
from tcpceiling.host.cgroups import read_cgroup
from tcpceiling.host.nat import CapUse, NatUse, cap_uses, nat_uses
from tcpceiling.host.read import HostSnapshot
from tcpceiling.host.roots import Roots
from tcpceiling.servers import registry
from tcpceiling.servers.find import found_all
from tcpceiling.servers.model import AppLimit, Found

#: The servers' limits, read again every 30 s at most (watch, the exporter).
LIMITS = registry.LimitCache()

#: Counters whose rates tell that connections fail now (TcpExt: /proc/net/netstat,
#: Tcp: /proc/net/snmp, conntrack: /proc/net/stat/nf_conntrack).
COUNTERS = (
    "Tcp.ActiveOpens",
    "Tcp.PassiveOpens",
    "TcpExt.ListenOverflows",
    "TcpExt.ListenDrops",
    "TcpExt.TCPTimeWaitOverflow",
    "TcpExt.TCPSynRetrans",
    "TcpExt.TCPAbortOnMemory",
    "TcpExt.TCPReqQFullDrop",
    "TcpExt.TCPReqQFullDoCookies",
    "TcpExt.TCPMemoryPressures",
    "conntrack.drop",
    "conntrack.early_drop",
    "conntrack.insert_failed",
    "neigh.table_fulls",
)


@dataclass(frozen=True)
class Scope:
    """What to look at: every process holding TCP sockets, or these pids, the
    owners of listeners on these ports, or a systemd service's processes."""

    pids: tuple[int, ...] = ()
    ports: tuple[int, ...] = ()
    service: str | None = None
    top_destinations: int = 10
    netns: str | None = None
    roots: Roots = field(default_factory=Roots)


@dataclass(frozen=True)
class ProcessUse:
    pid: int
    comm: str
    open_fds: int
    max_fds: int | None  # the soft RLIMIT_NOFILE (None: unlimited)
    threads: int
    task_limit: int | None  # its cgroup's pids.max, else kernel.threads-max
    task_limit_name: str


@dataclass(frozen=True)
class PortUse:
    src: str
    dst: str
    dport: int
    in_use: int  # TIME_WAIT included: it holds the port toward this tuple
    time_wait: int
    usable: int  # per tuple (analysis.limits.ports.usable_ports)
    #: the process holding them, named for a tuple at OWNER_AT of its ports or more
    #: ("caddy (pid 812)"), and the ports it listens on (a proxy: a server and a client)
    owner: str | None = None
    listens: tuple[int, ...] = ()


@dataclass(frozen=True)
class UpstreamUse:
    """A known proxy's ports toward one server of the upstream a listener sends its
    clients to (analysis.limits.upstream.rows_for): used of allowed, TIME_WAIT of
    them, and the TIME_WAIT rate that would keep them all busy without keep-alive."""

    server: str
    pid: int
    listen: str
    upstream: str
    address: str
    used: int
    allowed: int
    time_wait: int
    keepalive: int
    fix: str
    words: str = ""

    @property
    def time_wait_rate(self) -> float:
        """Requests per second toward it that TIME_WAIT alone lets through (ports / 60 s)."""
        return self.allowed / TIME_WAIT_SECONDS


@dataclass(frozen=True)
class HostLimit:
    limit: str
    used: float | None
    capacity: float | None
    unit: str
    source: str


@dataclass(frozen=True)
class Ceiling:
    """analyze's ceiling for one limit of one role, on this host now."""

    role: str
    limit: str
    ceiling: int | None
    capacity: float | None
    in_use: float | None
    per_connection: float | None = None


@dataclass(frozen=True)
class Sample:
    time: float
    processes: tuple[ProcessUse, ...]
    listeners: tuple[sockets.Listener, ...]
    ports: tuple[PortUse, ...]
    host: tuple[HostLimit, ...]
    counters: dict[str, int]
    ceilings: tuple[Ceiling, ...]
    netns: str | None = None
    tcp_sockets: int = 0  # sockstat inuse of the netns
    destinations: int = 0  # (src, dst, dport) tuples seen, before the top K
    servers: tuple[AppLimit, ...] = ()  # listeners of servers the registry knows
    nat: tuple[NatUse, ...] = ()  # NATed flows per destination (host.nat)
    caps: tuple[CapUse, ...] = ()  # firewall connection caps per port (host.nat)
    upstreams: tuple[UpstreamUse, ...] = ()  # known proxies' ports toward their upstreams


def counters(roots: Roots) -> dict[str, int]:
    """The COUNTERS of the calling thread's netns (absent ones left out)."""
    netstat, conntrack = read.read_net_counters(roots)
    values = dict(netstat)
    snmp = roots.procfs / "thread-self" / "net" / "snmp"  # Tcp.ActiveOpens, PassiveOpens
    with contextlib.suppress(OSError, ParseError):
        values.update(parse.parse_netstat(snmp.read_text()))
    values.update({f"conntrack.{k}": v for k, v in conntrack.items()})
    arp = roots.procfs / "thread-self" / "net" / "stat" / "arp_cache"
    with contextlib.suppress(OSError, ParseError):
        values.update(
            {f"neigh.{k}": v for k, v in parse.parse_percpu_stat(arp.read_text()).items()}
        )
    return {k: values[k] for k in COUNTERS if k in values}


def service_pids(roots: Roots, service: str) -> tuple[int, ...]:
    """The processes of a systemd service: cgroup.procs of its unit's cgroup (v2,
    system.slice/UNIT; v1 under the systemd or pids hierarchy)."""
    unit = service if "." in service else f"{service}.service"
    for base in (roots.cgroup, roots.cgroup / "systemd", roots.cgroup / "pids"):
        procs = base / "system.slice" / unit / "cgroup.procs"
        if procs.is_file():
            return tuple(int(x) for x in procs.read_text().split())
    # elsewhere: a user's service (user.slice/user-UID.slice/user@UID.service/...)
    for procs in roots.cgroup.glob(f"**/{unit}/cgroup.procs"):
        return tuple(int(x) for x in procs.read_text().split())
    raise InputError(f"--service {service}: no cgroup for {unit} under {roots.cgroup}")


def _process(roots: Roots, pid: int, threads_max: int) -> ProcessUse | None:
    try:
        view = read.read_process(roots, str(pid))
        cg = read_cgroup(roots, view)
    except (OSError, ParseError, InputError):
        return None  # gone since it was listed
    comm = read.read_comm(roots, pid)
    if comm is None:
        return None
    limit, name = (cg.pids_max, "pids.max") if cg.pids_max else (threads_max, "threads-max")
    return ProcessUse(
        pid, comm, view.open_fds, view.limits.nofile.soft, view.status.threads, limit, name
    )


def _pids(scope: Scope, listeners: list[sockets.Listener], inodes: frozenset[int]) -> list[int]:
    if scope.pids:
        return list(scope.pids)
    if scope.service:
        return list(service_pids(scope.roots, scope.service))
    mine = [ln for ln in listeners if not scope.ports or ln.port in scope.ports]
    wanted = {ln.inode for ln in mine} | (inodes if not scope.ports else set())
    return read.socket_owners(wanted, scope.roots)


#: A destination tuple this full (of its usable ports) has its process named.
OWNER_AT = 0.5


def _ports(
    scope: Scope,
    snap: HostSnapshot,
    client: sockets.ClientSockets,
    listeners: list[sockets.Listener],
) -> tuple[PortUse, ...]:
    usable = usable_ports(snap)[3]
    ranked = client.toward.most_common(scope.top_destinations)
    rows = [
        PortUse(src, dst, dport, n, client.time_wait.get((src, dst, dport), 0), usable)
        for (src, dst, dport), n in ranked
    ]
    if scope.roots.live:
        rows = [_owned(scope, r, listeners) if r.in_use >= OWNER_AT * usable else r for r in rows]
    return tuple(rows)


def _owned(scope: Scope, row: PortUse, listeners: list[sockets.Listener]) -> PortUse:
    """The process that holds a nearly full tuple (the first whose fds hold one of its
    sockets: /proc/*/fd, as ss -p), and the ports it listens on. Read only for such
    tuples: a scan of every process's fds costs what ss -p does."""
    with netns_mod.inside(scope.netns):
        rows = diag.dump(sockets.CONNECTED, (diag.Destination(row.dst, row.dport),))
    inodes = {r[diag.INODE] for r in rows if diag.address(r[diag.FAMILY], r[diag.SRC]) == row.src}
    pids = read.socket_owners(inodes - {0}, scope.roots)
    if not pids:
        return row
    pid = pids[0]
    comm = read.read_comm(scope.roots, pid) or "?"
    mine = set(read.socket_inodes(scope.roots.procfs / str(pid) / "fd", 1024))
    listens = tuple(sorted({ln.port for ln in listeners if ln.inode in mine}))
    return replace(row, owner=f"{comm} (pid {pid})", listens=listens)


def _outside(own: tuple[int, int] | None, kernel: tuple[int, int]) -> bool:
    """A range of the proxy's own reaching outside the kernel's ephemeral range."""
    return own is not None and not (kernel[0] <= own[0] and own[1] <= kernel[1])


def _upstreams(
    scope: Scope, servers: tuple[AppLimit, ...], net: read.NetView, client: sockets.SocketTable
) -> tuple[UpstreamUse, ...]:
    """Each known proxy's ports toward the servers of its listeners' upstreams. A
    proxy that takes its ports from the kernel's range holds client sockets, which the
    sample counted already in its one walk (`client`); only servers the proxy binds
    ports of its own range for, outside the kernel's, are read apart (sock_diag,
    filtered by their addresses)."""
    proxies = [a for a in servers if a.upstreams]
    if not proxies or not scope.roots.live:
        return ()
    apart = sorted({(u.host, u.port) for a in proxies for up in a.upstreams for u in up.servers
                    if _outside(u.port_range, net.port_range)})  # fmt: skip
    table = client
    if apart:
        with netns_mod.inside(scope.netns):
            more = sockets.read_live(apart)
        table = replace(client, toward=client.toward + more.toward,
                        time_wait=client.time_wait + more.time_wait)  # fmt: skip
    out = []
    for a in proxies:
        for up in a.upstreams:
            rows, _allowed = rows_for(up, net, table)
            fix = registry.raise_upstream(a, up)
            out += [
                UpstreamUse(a.server, a.pid, a.listen, up.name, r.address, r.used, r.allowed,
                            r.time_wait, up.keepalive, fix, a.upstream_words)
                for r in rows
            ]  # fmt: skip
    return tuple(out)


def _host(snap: HostSnapshot) -> tuple[HostLimit, ...]:
    sysv, net, p = snap.system, snap.net, "/proc/"
    mem = sysv.meminfo
    rows = [
        HostLimit(
            "file_max", sysv.file_nr.allocated, sysv.file_nr.maximum, "files", p + "sys/fs/file-nr"
        ),
        HostLimit(
            "tcp_mem",
            net.sockstat.mem_pages,
            sysv.tcp_mem[2] if sysv.tcp_mem else None,  # not visible inside a netns
            "pages",
            p + "net/sockstat mem, tcp_mem[2]",
        ),
        HostLimit(
            "time_wait",
            net.sockstat.tw,
            net.max_tw_buckets,
            "entries",
            p + "net/sockstat tw, tcp_max_tw_buckets",
        ),
        HostLimit(
            "threads", sysv.tasks, sysv.threads_max, "tasks", p + "loadavg, kernel/threads-max"
        ),
        HostLimit(
            "memory", mem.mem_total - mem.mem_available, mem.mem_total, "bytes", p + "meminfo"
        ),
        HostLimit(
            "epoll_watches",
            None,
            sysv.epoll_max_user_watches,
            "watches",
            p + "sys/fs/epoll/max_user_watches (per user)",
        ),
    ]
    if net.conntrack_max:
        rows.append(
            HostLimit(
                "conntrack",
                net.conntrack_count,
                net.conntrack_max,
                "entries",
                p + "sys/net/netfilter/nf_conntrack_count",
            )
        )
    return tuple(rows) + _quiet(snap)


def _quiet(snap: HostSnapshot) -> tuple[HostLimit, ...]:
    """Orphans against tcp_max_orphans (the kernel compares them shifted left by 1 or
    2 under retransmission or memory pressure: tcp_too_many_orphans, include/net/tcp.h;
    global), socket memory against tcp_mem[1] (pressure: buffers are pruned), and
    the neighbour table against gc_thresh3 (past it: "neighbour table overflow")."""
    net, p = snap.net, "/proc/"
    rows = [
        HostLimit("orphans", net.sockstat.orphan, net.max_orphans, "sockets",
                  p + "net/sockstat orphan, sys/net/ipv4/tcp_max_orphans"),
        HostLimit("tcp_mem_pressure", net.sockstat.mem_pages,
                  snap.system.tcp_mem[1] if len(snap.system.tcp_mem) > 1 else None, "pages",
                  p + "net/sockstat mem, tcp_mem[1]"),
    ]  # fmt: skip
    if net.neigh_gc_thresh3 and "entries" in net.neigh:
        rows.append(
            HostLimit("neighbours", net.neigh["entries"], net.neigh_gc_thresh3, "entries",
                      p + "net/stat/arp_cache entries, neigh/default/gc_thresh3")
        )  # fmt: skip
    return tuple(r for r in rows if r.capacity)


def _ceilings(
    roots: Roots, netns: str | None, table: sockets.SocketTable
) -> tuple[tuple[Ceiling, ...], HostSnapshot]:
    """analyze's server and client scenarios, evaluated on this host now, on the
    socket table the sample read already (no second walk of the kernel's tables)."""
    scenarios, snap, routes = prepare(build_scenarios("both"), roots, "self", netns, table)
    out = [
        Ceiling(r.role, c.id, total_ceiling(c), c.capacity, c.in_use, c.per_connection)
        for r in (evaluate(snap, s, routes) for s in scenarios)
        for c in r.constraints
        if c.kind == "total"
    ]
    return tuple(out), snap


def _sockets(
    scope: Scope, low: int, high: int
) -> tuple[list[sockets.Listener], sockets.ClientSockets, tuple[AppLimit, ...]]:
    """Listeners, client sockets and the known servers (their connections counted in
    the same walk as the client sockets): sock_diag on a live host, sockets.json of a
    fixture tree otherwise (no servers)."""
    if scope.roots.live:
        with netns_mod.inside(scope.netns):
            listeners = sockets.all_listeners()
            found = _known(scope, listeners)
            ports = tuple(sorted({f.port for f in found}))
            client = sockets.client_sockets(low, high, ports)
        counted = [replace(f, established=client.serving.get(f.port, 0)) for f in found]
        return listeners, client, tuple(LIMITS.read(f, scope.roots) for f in counted)
    path = scope.roots.procfs.parent / "sockets.json"
    entries = sockets.parse_sockets_json(path.read_text()) if path.is_file() else []
    return sockets.listeners_from(entries), sockets.clients_from(entries, low, high), ()


def take(scope: Scope) -> Sample:
    """One Sample of the host (per-netns parts inside scope.netns)."""
    with netns_mod.inside(scope.netns):
        low, high = read.read_net(scope.roots).port_range
    listeners, client, servers = _sockets(scope, low, high)
    table = sockets.SocketTable(
        frozenset(ln.port for ln in listeners),
        client.toward,
        client.time_wait,
        sockets.SOURCE if scope.roots.live else "sockets.json",
    )
    ceilings, snap = _ceilings(scope.roots, scope.netns, table)
    with netns_mod.inside(scope.netns):
        counted = counters(scope.roots)
    pids = _pids(scope, listeners, client.inodes)
    procs = (_process(scope.roots, pid, snap.system.threads_max) for pid in pids)
    return Sample(
        time=time.monotonic(),
        processes=tuple(p for p in procs if p is not None),
        listeners=tuple(listeners),
        ports=_ports(scope, snap, client, listeners),
        host=_host(snap),
        counters=counted,
        ceilings=ceilings,
        netns=scope.netns,
        tcp_sockets=snap.net.sockstat.inuse,
        destinations=len(client.toward),
        servers=servers,
        nat=nat_uses(snap.path),
        caps=cap_uses(snap.path),
        upstreams=_upstreams(scope, servers, snap.net, table),
    )


def _known(scope: Scope, listeners: list[sockets.Listener]) -> list[Found]:
    """Each listening server the registry knows, limited to --port and --pid."""
    mine = [ln for ln in listeners if not scope.ports or ln.port in scope.ports]
    found = found_all(scope.roots, mine, registry.knows)
    found = [f for f in found if registry.module_for(f) is not None]  # an interpreter's
    if scope.pids:
        found = [f for f in found if {o.pid for o in f.owners} & set(scope.pids)]
    return found

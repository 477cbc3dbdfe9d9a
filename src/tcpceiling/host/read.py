"""Read a HostSnapshot from procfs, sysfs and cgroupfs rooted at a Roots.

I/O only: every value goes through a pure parser in tcpceiling.host.parse.
Per-network-namespace values (ip_local_port_range, somaxconn, sockstat, ...)
are those of the namespace the calling thread is in when read_net() runs;
see tcpceiling.host.netns for entering one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from tcpceiling.errors import HostError, ParseError
from tcpceiling.host import parse
from tcpceiling.host.nat import PathView
from tcpceiling.host.roots import Roots
from tcpceiling.host.sockets import SocketTable
from tcpceiling.servers.model import AppLimit

T = TypeVar("T")

#: Slab caches whose geometry sets the kernel cost of one socket (docs/limits.md §4).
SOCKET_SLABS = (
    "TCP",
    "TCPv6",
    "sock_inode_cache",
    "filp",
    "dentry",
    "lsm_inode_cache",
    "lsm_file_cache",
    "eventpoll_epi",
    "eventpoll_pwq",
    "tcp_bind_bucket",
    "tcp_bind2_bucket",
    "tw_sock_TCP",
    "request_sock_TCP",
)


@dataclass(frozen=True)
class ProcessView:
    """The process whose limits the workload lives under (/proc/PID)."""

    pid: str
    limits: parse.Limits
    status: parse.ProcStatus
    open_fds: int
    map_count: int
    cgroups: dict[str, str]


@dataclass(frozen=True)
class NetView:
    """Per-network-namespace sysctls and counters (docs/limits.md §1-2)."""

    port_range: tuple[int, int]
    reserved_ports: frozenset[int]
    somaxconn: int
    tw_reuse: int
    max_tw_buckets: int
    sockstat: parse.Sockstat
    conntrack_max: int | None
    conntrack_count: int | None
    #: the quieter ones (None: not readable): orphans (tcp_max_orphans, global), the
    #: SYN queue's bound, the neighbour table's hard limit and its entries (arp_cache)
    max_orphans: int | None = None
    max_syn_backlog: int | None = None
    syncookies: int | None = None
    neigh_gc_thresh3: int | None = None
    neigh: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class SystemView:
    """Machine-wide values: memory, file table, tasks, slab geometry, tcp_mem."""

    meminfo: parse.Meminfo
    file_nr: parse.FileNr
    nr_open: int
    epoll_max_user_watches: int | None
    threads_max: int
    pid_max: int
    max_map_count: int
    tasks: int
    tcp_mem: tuple[int, ...]
    slabs: dict[str, parse.SlabCache]
    cpus: int | None = None  # online CPUs (/sys/devices/system/cpu/online)
    #: pids (thread ids) in use in the pid namespace the procfs belongs to; None
    #: when the tree lists no tasks (a snapshot copies loadavg, not every task)
    pids: tuple[int, ...] | None = None


@dataclass(frozen=True)
class CgroupView:
    """Effective cgroup limits (minimum over the ancestors) for memory and pids."""

    version: int
    memory_limit: int | None
    memory_usage: int | None
    pids_max: int | None
    pids_current: int | None
    memory_path: str = ""
    pids_path: str = ""
    #: inactive file cache of the memory cgroup: reclaimed before an OOM kill
    memory_reclaimable: int = 0
    #: an accepted socket's struct sock is charged to the cgroup (cgroups.sockets_charged)
    sockets_charged: bool = False


@dataclass(frozen=True)
class HostSnapshot:
    """Everything analyze needs, read at one moment."""

    process: ProcessView
    net: NetView
    system: SystemView
    cgroup: CgroupView
    sockets: SocketTable
    roots: Roots = field(default_factory=Roots)
    netns: str | None = None
    #: the servers behind the scenario's listeners or --pid (tcpceiling.servers)
    servers: tuple[AppLimit, ...] = ()
    #: the namespace's NAT rules, connection caps and NATed flows (host.nat)
    path: PathView = field(default_factory=PathView)
    #: a proxy's sockets toward its upstreams (read for their addresses only)
    upstream_sockets: SocketTable | None = None


def _read(path: Path, parser: Callable[[str], T]) -> T:
    """Parse one file, naming the file in any parse error."""
    try:
        return parser(path.read_text())
    except ParseError as exc:
        raise ParseError(f"{path}: {exc}") from exc


def _read_opt(path: Path, parser: Callable[[str], T]) -> T | None:
    try:
        return _read(path, parser)
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError):
        return None


def count_fds(fd_dir: Path, live: bool = False) -> int:
    """Open fds of a process: the entries of /proc/PID/fd. On a live procfs, stat()
    of the directory gives the count as its size (Linux 6.2+, fs/proc/fd.c
    proc_fd_getattr): O(1) where listing a million fds takes a quarter second; a
    size of 0 (older kernels) falls back to the listing. Another user's process
    is readable only by root or its owner (ptrace access mode, proc(5))."""
    try:
        size = os.stat(fd_dir).st_size if live else 0
        return size or len(os.listdir(fd_dir))
    except PermissionError as exc:
        raise HostError(
            f"cannot list {fd_dir}: permission denied (another user's process: "
            "run as root or as its owner)"
        ) from exc


def read_process(roots: Roots, pid: str = "self") -> ProcessView:
    """/proc/PID/{limits,status,fd,maps,cgroup}."""
    base = roots.procfs / pid
    maps = _read_opt(base / "maps", lambda t: t.count("\n")) or 0
    return ProcessView(
        pid=pid,
        limits=_read(base / "limits", parse.parse_limits),
        status=_read(base / "status", parse.parse_status),
        open_fds=count_fds(base / "fd", roots.live),
        map_count=maps,
        cgroups=_read_opt(base / "cgroup", parse.parse_proc_cgroup) or {},
    )


def read_net(roots: Roots) -> NetView:
    """Per-netns values under /proc/sys/net and /proc/net (of the calling thread's netns)."""
    ipv4 = roots.procfs / "sys" / "net" / "ipv4"
    nf = roots.procfs / "sys" / "net" / "netfilter"
    return NetView(
        port_range=_read(ipv4 / "ip_local_port_range", parse.parse_port_range),
        reserved_ports=_read_opt(ipv4 / "ip_local_reserved_ports", parse.parse_port_list)
        or frozenset(),
        somaxconn=_read(roots.procfs / "sys" / "net" / "core" / "somaxconn", parse.parse_int),
        tw_reuse=_read_opt(ipv4 / "tcp_tw_reuse", parse.parse_int) or 0,
        max_tw_buckets=_read(ipv4 / "tcp_max_tw_buckets", parse.parse_int),
        sockstat=_read(roots.procfs / "net" / "sockstat", parse.parse_sockstat),
        conntrack_max=_read_opt(nf / "nf_conntrack_max", parse.parse_int),
        conntrack_count=_read_opt(nf / "nf_conntrack_count", parse.parse_int),
        max_orphans=_read_opt(ipv4 / "tcp_max_orphans", parse.parse_int),
        max_syn_backlog=_read_opt(ipv4 / "tcp_max_syn_backlog", parse.parse_int),
        syncookies=_read_opt(ipv4 / "tcp_syncookies", parse.parse_int),
        neigh_gc_thresh3=_read_opt(ipv4 / "neigh" / "default" / "gc_thresh3", parse.parse_int),
        neigh=_read_opt(roots.procfs / "net" / "stat" / "arp_cache", parse.parse_percpu_stat) or {},
    )


def read_slabs(roots: Roots) -> dict[str, parse.SlabCache]:
    """Geometry of SOCKET_SLABS from /sys/kernel/slab/NAME (root-readable), else slabinfo."""
    out: dict[str, parse.SlabCache] = {}
    base = roots.sysfs / "kernel" / "slab"
    for name in SOCKET_SLABS:
        d = base / name
        order = _read_opt(d / "order", parse.parse_int)
        per = _read_opt(d / "objs_per_slab", parse.parse_int)
        size = _read_opt(d / "slab_size", parse.parse_int)
        reclaim = _read_opt(d / "reclaim_account", parse.parse_int)
        if order is not None and per and size:
            flag = None if reclaim is None else bool(reclaim)
            out[name] = parse.SlabCache(name, size, per, 1 << order, reclaimable=flag)
    if len(out) < len(SOCKET_SLABS):
        info = _read_opt(roots.procfs / "slabinfo", parse.parse_slabinfo) or {}
        for name in SOCKET_SLABS:
            if name not in out and name in info and info[name].objs_per_slab:
                out[name] = info[name]
    return out


def read_slab_links(roots: Roots) -> dict[str, str | None]:
    """SOCKET_SLABS name -> the merged cache its /sys/kernel/slab entry links to
    (None: a cache of its own, or no sysfs). See parse.slab_aliases."""
    base = roots.sysfs / "kernel" / "slab"
    out: dict[str, str | None] = {}
    for name in SOCKET_SLABS:
        try:
            out[name] = os.readlink(base / name)
        except OSError:  # not a symlink, or absent
            out[name] = None
    return out


def read_pids(roots: Roots) -> tuple[int, ...] | None:
    """Every thread id the procfs shows (/proc/PID/task/TID): the tasks of the pid
    namespace that procfs was mounted for, which pid_max counts since Linux 6.14."""
    out: list[int] = []
    try:
        entries = [e.name for e in os.scandir(roots.procfs) if e.name.isdigit()]
    except OSError:
        return None
    for pid in entries:
        try:
            out.extend(int(t) for t in os.listdir(roots.procfs / pid / "task"))
        except (OSError, ValueError):
            continue  # exited meanwhile
    return tuple(out) or None


def read_system(roots: Roots) -> SystemView:
    """Global values: meminfo, fs.*, kernel.*, vm.max_map_count, tcp_mem, slab geometry."""
    sys_ = roots.procfs / "sys"
    return SystemView(
        meminfo=_read(roots.procfs / "meminfo", parse.parse_meminfo),
        file_nr=_read(sys_ / "fs" / "file-nr", parse.parse_file_nr),
        nr_open=_read(sys_ / "fs" / "nr_open", parse.parse_int),
        epoll_max_user_watches=_read_opt(
            sys_ / "fs" / "epoll" / "max_user_watches", parse.parse_int
        ),
        threads_max=_read(sys_ / "kernel" / "threads-max", parse.parse_int),
        pid_max=_read(sys_ / "kernel" / "pid_max", parse.parse_int),
        max_map_count=_read(sys_ / "vm" / "max_map_count", parse.parse_int),
        tasks=_read(roots.procfs / "loadavg", parse.parse_loadavg_tasks),
        # global, so shown in the initial network namespace only (a process that runs
        # inside another one, as in a container, sees no such file): () then
        tcp_mem=_read_opt(sys_ / "net" / "ipv4" / "tcp_mem", lambda t: parse.parse_ints(t, 3))
        or (),
        slabs=read_slabs(roots),
        cpus=_read_opt(roots.sysfs / "devices" / "system" / "cpu" / "online", parse.parse_cpu_list),
        pids=read_pids(roots),
    )


@dataclass(frozen=True)
class Identity:
    """Which machine, kernel and namespaces a result describes."""

    kernel: str | None
    hostname: str | None
    pid_namespace: str | None  # "pid:[INODE]" of /proc/self/ns/pid (live only)


def _text(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def read_identity(roots: Roots) -> Identity:
    """/proc/sys/kernel/{osrelease,hostname} (copied into snapshots too) and the pid
    namespace of the reading process, which only a live procfs can tell."""
    sys_kernel = roots.procfs / "sys" / "kernel"
    pidns = None
    if roots.live:
        try:
            pidns = os.readlink(roots.procfs / "self" / "ns" / "pid")
        except OSError:
            pidns = None
    return Identity(_text(sys_kernel / "osrelease"), _text(sys_kernel / "hostname"), pidns)


def read_meminfo_field(roots: Roots, name: str) -> int:
    """One /proc/meminfo field in bytes (read often, so the file is scanned, not
    parsed whole)."""
    with open(roots.procfs / "meminfo") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
    raise ParseError(f"no {name} in {roots.procfs / 'meminfo'}")


def read_meminfo(roots: Roots) -> parse.Meminfo:
    return _read(roots.procfs / "meminfo", parse.parse_meminfo)


def read_slabinfo(roots: Roots) -> dict[str, parse.SlabCache]:
    """/proc/slabinfo (root only; empty when unreadable)."""
    return _read_opt(roots.procfs / "slabinfo", parse.parse_slabinfo) or {}


def read_net_counters(roots: Roots) -> tuple[dict[str, int], dict[str, int]]:
    """(netstat TcpExt counters, conntrack stat totals) of the calling thread's netns:
    /proc/thread-self/net, which follows a setns() of this thread."""
    net = roots.procfs / "thread-self" / "net"
    netstat = _read_opt(net / "netstat", parse.parse_netstat) or {}
    conntrack = _read_opt(net / "stat" / "nf_conntrack", parse.parse_conntrack_stat) or {}
    return netstat, conntrack


def read_comm(roots: Roots, pid: int) -> str | None:
    """A process's name (/proc/PID/comm); None once it is gone or not ours to read."""
    try:
        return (roots.procfs / str(pid) / "comm").read_text().strip()
    except OSError:
        return None


def socket_owners(inodes: Iterable[int], roots: Roots) -> list[int]:
    """Pids holding any of these socket inodes: a scan of /proc/*/fd, as ss -p does
    (the only way from a socket to its process), stopping at each process's first
    match; links are compared as numbers, so a million inodes need no strings."""
    wanted = inodes if isinstance(inodes, set | frozenset) else set(inodes)
    pids = []
    for entry in os.scandir(roots.procfs):
        if entry.name.isdigit() and _holds(Path(entry.path) / "fd", wanted):
            pids.append(int(entry.name))
    return pids


def socket_inodes(fd_dir: Path, most: int | None = None) -> Iterator[int]:
    """The socket inodes among a process's fds, in fd order, reading at most `most`
    fds (None: all); nothing once the process is gone or not ours to read."""
    try:
        with os.scandir(fd_dir) as fds:
            for i, fd in enumerate(fds):
                if most is not None and i >= most:
                    return
                link = os.readlink(fd.path)
                if link.startswith("socket:["):
                    yield int(link[8:-1])
    except OSError:
        return  # gone, or not ours to read


def _holds(fd_dir: Path, wanted: set[int] | frozenset[int]) -> bool:
    return any(inode in wanted for inode in socket_inodes(fd_dir))

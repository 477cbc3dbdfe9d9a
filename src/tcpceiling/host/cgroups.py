"""Effective memory and pids limits of a process's cgroup, v1 or v2.

A limit anywhere up the hierarchy applies, so every ancestor is read and the one
with the least headroom wins (Documentation/admin-guide/cgroup-v2.rst,
"Top-down constraint"; cgroup-v1/memory.rst hierarchy support).

Memory is measured as the working set: usage less the inactive file cache, which
the kernel reclaims before it OOM-kills (the kubelet's eviction signal and
cAdvisor's container_memory_working_set_bytes are the same difference). Usage
alone would call a container full whenever its page cache has grown to the limit.
"""

from __future__ import annotations

import functools
import os
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tcpceiling.errors import ParseError
from tcpceiling.host import parse
from tcpceiling.host.read import CgroupView, ProcessView
from tcpceiling.host.roots import Roots

# (limit file, usage file) per controller and cgroup version.
_FILES = {
    ("memory", 1): ("memory.limit_in_bytes", "memory.usage_in_bytes"),
    ("memory", 2): ("memory.max", "memory.current"),
    ("pids", 1): ("pids.max", "pids.current"),
    ("pids", 2): ("pids.max", "pids.current"),
}


@dataclass(frozen=True)
class Headroom:
    """The tightest (limit, usage) pair found walking up from the leaf."""

    limit: int | None
    usage: int | None
    path: str


def _read_num(path: Path) -> int | None:
    try:
        return parse.parse_cgroup_value(path.read_text())
    except (FileNotFoundError, PermissionError):
        return None
    except ParseError as exc:
        raise ParseError(f"{path}: {exc}") from exc


def _ancestors(path: str) -> list[str]:
    p = PurePosixPath(path if path.startswith("/") else "/" + path)
    return [str(p), *(str(a) for a in p.parents)]


def _controller_dir(roots: Roots, process: ProcessView, name: str) -> tuple[Path, str, int] | None:
    """Mount directory, path inside it, and version for controller `name`."""
    if name in process.cgroups and (roots.cgroup / name).is_dir():
        mount = roots.cgroup / name
        return mount, in_mount(roots, mount, name, process.cgroups[name]), 1
    v2_path = process.cgroups.get("")
    for mount in (roots.cgroup, roots.cgroup / "unified"):
        controllers = mount / "cgroup.controllers"
        if v2_path is not None and controllers.exists() and name in controllers.read_text().split():
            return mount, in_mount(roots, mount, "", v2_path), 2
    return None


def in_mount(roots: Roots, mount: Path, key: str, path: str) -> str:
    """A process's cgroup path as /proc/PID/cgroup gives it (`key`: the v1 controller,
    "" for v2), as a path inside `mount`. A reader in a cgroup namespace of its own
    (a container's; cgroup_namespaces(7)) is given other processes' paths relative
    to its namespace's root, `/../../kubepods/...`; in the host's hierarchy
    (`--cgroupfs`, as the DaemonSet mounts it) they are under that root, which is
    found once: where this process sits in the mount, less its own path."""
    if not path.startswith("/..") or not roots.live:
        return path
    root = namespace_root(mount, key, roots.procfs)
    return path if root is None else posixpath.normpath(posixpath.join(root, path.lstrip("/")))


@functools.lru_cache(maxsize=8)
def namespace_root(mount: Path, key: str, procfs: Path) -> str | None:
    """This process's cgroup namespace's root as a path in `mount`: the directory
    whose cgroup.procs lists our pid (the reader shares the host's pid namespace:
    hostPID), less our own path as /proc/self/cgroup shows it. None when we are
    not in the mount (another hierarchy)."""
    own = parse.parse_proc_cgroup((procfs / "self" / "cgroup").read_text()).get(key)
    pid = str(os.getpid())
    for procs in mount.rglob("cgroup.procs"):
        try:
            if pid not in procs.read_text().split():
                continue
        except OSError:
            continue
        here = "/" + str(procs.parent.relative_to(mount)).removeprefix(".").strip("/")
        return strip_suffix(here, own or "/")
    return None


def strip_suffix(here: str, own: str) -> str | None:
    """`here` less the trailing `own` (both absolute cgroup paths); None when `own` is
    not its tail. ("/k/pod/ctr", "/") -> "/k/pod/ctr"; ("/k/pod/ctr", "/ctr") -> "/k/pod"."""
    if own == "/":
        return here
    if here != own and not here.endswith(own):
        return None
    return here[: -len(own)] or "/"


def headroom(roots: Roots, process: ProcessView, name: str) -> tuple[Headroom, int] | None:
    """The tightest limit of controller `name` for the process, and the cgroup version."""
    found = _controller_dir(roots, process, name)
    if found is None:
        return None
    mount, leaf, version = found
    limit_file, usage_file = _FILES[(name, version)]
    best = Headroom(None, None, leaf)
    for rel in _ancestors(leaf):
        d = mount / rel.lstrip("/")
        limit, usage = _read_num(d / limit_file), _read_num(d / usage_file)
        if best.usage is None and usage is not None:
            best = Headroom(best.limit, usage, best.path)
        if limit is None:
            continue
        room = limit - (usage or 0)
        if best.limit is None or room < best.limit - (best.usage or 0):
            best = Headroom(limit, usage, str(d.relative_to(roots.cgroup)))
    return best, version


#: memory.stat's inactive file cache, hierarchical in both versions: v1 prefixes
#: hierarchical totals with total_ (cgroup-v1/memory.rst 5.2); v2's are hierarchical.
INACTIVE_FILE = {1: "total_inactive_file", 2: "inactive_file"}
#: Where the OOM kill count is: v1 memory.oom_control, v2 memory.events (oom_kill).
OOM_FILE = {1: "memory.oom_control", 2: "memory.events"}


@dataclass(frozen=True)
class MemoryCgroup:
    """One memory cgroup with a limit, between a process and the root.

    `line` is where the kernel starts to act: memory.max / memory.limit_in_bytes,
    or v2's memory.high when lower (above it the cgroup's tasks are throttled and
    reclaimed hard: cgroup-v2.rst, memory.high). `sockets_charged` says whether an
    accepted connection's struct sock is charged here (see sockets_charged()).
    """

    path: str  # relative to the cgroup root: "memory/app" (v1), "system.slice/x" (v2)
    directory: str  # absolute, to meter it while connections open
    version: int
    limit: int | None  # None: memory.max is "max" and memory.high alone is set
    high: int | None
    usage: int
    reclaimable: int  # inactive file cache
    oom_kills: int | None
    sockets_charged: bool

    @property
    def line(self) -> int:
        return min(v for v in (self.limit, self.high) if v is not None)

    @property
    def working_set(self) -> int:
        return max(0, self.usage - self.reclaimable)

    @property
    def room(self) -> int:
        return self.line - self.working_set


def _read_flat(path: Path) -> dict[str, int]:
    try:
        return parse.parse_flat_keyed(path.read_text(), str(path))
    except (FileNotFoundError, PermissionError):
        return {}


def sockets_charged(version: int, directory: Path) -> bool:
    """Is an accepted socket's struct sock charged to the accepting cgroup?

    __inet_accept (net/ipv4/af_inet.c; inet_csk_accept before 6.10) charges it with
    kmem_cache_charge() only under mem_cgroup_sockets_enabled, a key that cgroup v2
    turns on for every memory cgroup and v1 only once memory.kmem.tcp.limit_in_bytes
    has been written (memcg_update_tcp_max, mm/memcontrol-v1.c). Otherwise the
    child socket, made in softirq with no memcg, stays charged to nobody: measured
    here on v1, 1.3 KiB per accepted connection (file, inode, dentry) against
    3.9 KiB per connected one (docs/limits.md, "Memory cgroups").
    """
    if version == 2:
        return True
    tcp = _read_num(directory / "memory.kmem.tcp.limit_in_bytes")
    return tcp is not None


def _memory_dirs(roots: Roots, process: ProcessView) -> Iterator[tuple[Path, int]]:
    found = _controller_dir(roots, process, "memory")
    if found is None:
        return
    mount, leaf, version = found
    for rel in _ancestors(leaf):
        yield mount / rel.lstrip("/"), version


def read_memory_cgroup(directory: Path, version: int, roots: Roots) -> MemoryCgroup | None:
    """The cgroup at `directory`, or None when it has no limit of its own."""
    limit_file, usage_file = _FILES[("memory", version)]
    limit = _read_num(directory / limit_file)
    high = _read_num(directory / "memory.high") if version == 2 else None
    if limit is None and high is None:
        return None
    stat = _read_flat(directory / "memory.stat")
    oom = _read_flat(directory / OOM_FILE[version]).get("oom_kill")
    return MemoryCgroup(
        path=str(directory.relative_to(roots.cgroup)),
        directory=str(directory),
        version=version,
        limit=limit,
        high=high,
        usage=_read_num(directory / usage_file) or 0,
        reclaimable=stat.get(INACTIVE_FILE[version], 0),
        oom_kills=oom,
        sockets_charged=sockets_charged(version, directory),
    )


def memory_cgroups(roots: Roots, process: ProcessView) -> tuple[MemoryCgroup, ...]:
    """Every memory cgroup with a limit from the process's own up to the root,
    leaf first: each of them can OOM-kill the process."""
    out = []
    for directory, version in _memory_dirs(roots, process):
        cg = read_memory_cgroup(directory, version, roots)
        if cg is not None:
            out.append(cg)
    return tuple(out)


def usage_now(directory: str, version: int) -> int:
    """memory.current / memory.usage_in_bytes now (one small read)."""
    return _read_num(Path(directory) / _FILES[("memory", version)][1]) or 0


def working_set(directory: str, version: int) -> int:
    """A cgroup's working set now: usage less inactive file cache (memory.stat, a
    longer read: the guard reads it only once usage alone is past its line)."""
    reclaimable = _read_flat(Path(directory) / "memory.stat").get(INACTIVE_FILE[version], 0)
    return max(0, usage_now(directory, version) - reclaimable)


def tightest(cgroups: tuple[MemoryCgroup, ...]) -> MemoryCgroup | None:
    """The memory cgroup with the least room."""
    return min(cgroups, key=lambda c: c.room, default=None)


def read_cgroup(roots: Roots, process: ProcessView) -> CgroupView:
    """Memory and pids headroom of the process's cgroups (0 = no cgroup found)."""
    mem = tightest(memory_cgroups(roots, process))
    found = _controller_dir(roots, process, "memory")
    pids = headroom(roots, process, "pids")
    versions = [v for v in (found[2] if found else 0, pids[1] if pids else 0) if v]
    usage = mem.usage if mem else None
    if mem is None and found is not None:  # no limit: the leaf's usage still tells
        usage = _read_num(found[0] / found[1].lstrip("/") / _FILES[("memory", found[2])][1])
    return CgroupView(
        version=max(versions, default=0),
        memory_limit=mem.line if mem else None,
        memory_usage=usage,
        pids_max=pids[0].limit if pids else None,
        pids_current=pids[0].usage if pids else None,
        memory_path=mem.path if mem else (found[1] if found else ""),
        pids_path=pids[0].path if pids else "",
        memory_reclaimable=mem.reclaimable if mem else 0,
        sockets_charged=mem.sockets_charged if mem else found is not None and found[2] == 2,
    )

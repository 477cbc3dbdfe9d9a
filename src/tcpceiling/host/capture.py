"""Copy every file analyze reads into a tree that `--procfs DIR/proc --sysfs DIR/sys`
reads back: for bug reports ("here is my machine") and for test fixtures.

The process's fd directory is recreated as empty files (only their count matters),
maps as its line count in blank lines, and the socket table as sockets.json.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from tcpceiling.host import read
from tcpceiling.host.parse import parse_proc_cgroup
from tcpceiling.host.roots import Roots
from tcpceiling.host.sockets import SocketEntry

PROC_FILES = (
    "meminfo",
    "loadavg",
    "net/sockstat",
    "sys/fs/file-nr",
    "sys/fs/nr_open",
    "sys/fs/epoll/max_user_watches",
    "sys/kernel/threads-max",
    "sys/kernel/pid_max",
    "sys/vm/max_map_count",
    "sys/net/ipv4/tcp_mem",
    "sys/net/ipv4/ip_local_port_range",
    "sys/net/ipv4/ip_local_reserved_ports",
    "sys/net/ipv4/tcp_tw_reuse",
    "sys/net/ipv4/tcp_max_tw_buckets",
    "sys/net/core/somaxconn",
    "sys/net/netfilter/nf_conntrack_max",
    "sys/net/netfilter/nf_conntrack_count",
)
SLAB_FILES = ("order", "objs_per_slab", "slab_size")
CGROUP_FILES = (
    "memory.limit_in_bytes",
    "memory.usage_in_bytes",
    "memory.max",
    "memory.current",
    "pids.max",
    "pids.current",
    "cgroup.controllers",
)


def _copy(src: Path, dst: Path) -> None:
    try:
        text = src.read_text()
    except (FileNotFoundError, PermissionError, OSError):
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(text)


def _capture_process(roots: Roots, pid: str, out: Path) -> None:
    src, dst = roots.procfs / pid, out / "proc" / "self"
    for name in ("limits", "status", "cgroup"):
        _copy(src / name, dst / name)
    (dst / "fd").mkdir(parents=True, exist_ok=True)
    for fd in os.listdir(src / "fd"):
        (dst / "fd" / fd).touch()
    lines = (src / "maps").read_text().count("\n")
    (dst / "maps").write_text("\n" * lines)


def _capture_cgroups(roots: Roots, pid: str, out: Path) -> None:
    groups = parse_proc_cgroup((roots.procfs / pid / "cgroup").read_text())
    dirs = [roots.cgroup, roots.cgroup / "unified"]
    for name in ("memory", "pids"):
        if name in groups:
            rel = groups[name].strip("/")
            parts = Path(rel).parts
            dirs += [roots.cgroup / name / Path(*parts[:i]) for i in range(len(parts) + 1)]
    for d in dirs:
        for f in CGROUP_FILES:
            _copy(d / f, out / "sys" / "fs" / "cgroup" / d.relative_to(roots.cgroup) / f)


def capture(
    out: Path,
    roots: Roots | None = None,
    pid: str = "self",
    sockets: list[SocketEntry] | None = None,
) -> Path:
    """Write a fixture tree of the host (or of `roots`) under `out`."""
    roots = roots or Roots()
    if out.exists():
        shutil.rmtree(out)
    for rel in PROC_FILES:
        _copy(roots.procfs / rel, out / "proc" / rel)
    for name in read.SOCKET_SLABS:
        for f in SLAB_FILES:
            _copy(roots.sysfs / "kernel" / "slab" / name / f, out / "sys/kernel/slab" / name / f)
    cpus = "devices/system/cpu/online"
    _copy(roots.sysfs / cpus, out / "sys" / cpus)
    _capture_process(roots, pid, out)
    _capture_cgroups(roots, pid, out)
    if sockets is not None:
        rows = [e.__dict__ for e in sockets]
        (out / "sockets.json").write_text(json.dumps(rows, indent=1) + "\n")
    return out

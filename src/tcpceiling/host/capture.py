"""Copy every file analyze reads into a tree that `--procfs DIR/proc --sysfs DIR/sys`
reads back: for bug reports ("here is my machine") and for test fixtures.

The process's fd directory is recreated as empty files (only their count matters),
maps as its line count in blank lines, and the socket table as sockets.json.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from tcpceiling._version import __version__
from tcpceiling.errors import InputError
from tcpceiling.host import read
from tcpceiling.host.parse import parse_proc_cgroup
from tcpceiling.host.roots import Roots
from tcpceiling.host.sockets import SocketEntry

PROC_FILES = (
    "meminfo",
    "loadavg",
    "net/sockstat",
    "sys/kernel/osrelease",
    "sys/kernel/hostname",
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
SLAB_FILES = ("order", "objs_per_slab", "slab_size", "reclaim_account")
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


MARKER = ".tcpceiling-snapshot"


def _check_target(out: Path, force: bool) -> None:
    """A new or empty directory, or (with force) a snapshot of our own: never a
    directory of someone else's."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise InputError(f"{out} exists and is not a directory")
    if not out.parent.is_dir():
        raise InputError(f"{out.parent} does not exist")
    if not out.exists() or not any(out.iterdir()):
        return
    if not (out / MARKER).is_file():
        raise InputError(
            f"{out} exists and is not empty: a snapshot goes into a new or empty directory "
            "(or over a snapshot of its own, with --force)"
        )
    if not force:
        raise InputError(f"{out} holds a snapshot already: give --force to replace it")


def _check_pid(roots: Roots, pid: str) -> None:
    if pid != "self" and not (roots.procfs / pid).is_dir():
        raise InputError(f"no process {pid} under {roots.procfs}")


def _staging(parent: Path) -> Path:
    """A temporary directory beside the target, so the final rename is atomic."""
    try:
        return Path(tempfile.mkdtemp(prefix=".tcpceiling-snapshot-", dir=parent))
    except OSError as exc:
        raise InputError(f"cannot write in {parent}: {exc.strerror}") from exc


def _put_in_place(tmp: Path, out: Path) -> None:
    if not out.exists():
        tmp.rename(out)
    elif not any(out.iterdir()):
        out.rmdir()
        tmp.rename(out)
    else:  # our own snapshot, and --force: swap, then remove the old one
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old)


def _write(out: Path, roots: Roots, pid: str, sockets: list[SocketEntry] | None) -> None:
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
    (out / MARKER).write_text(json.dumps({"tool": "tcpceiling", "version": __version__}) + "\n")


def capture(
    out: Path,
    roots: Roots | None = None,
    pid: str = "self",
    sockets: list[SocketEntry] | None = None,
    force: bool = False,
) -> Path:
    """Write a fixture tree of the host (or of `roots`) as the directory `out`.

    `out` must be new or empty, or a snapshot of ours when `force` is given. The
    tree is written beside it and renamed into place: on any error nothing is left."""
    roots = roots or Roots()
    _check_pid(roots, pid)
    _check_target(out, force)
    tmp = _staging(out.parent)
    try:
        _write(tmp, roots, pid, sockets)
        _put_in_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def capture_tar(
    archive: Path,
    roots: Roots | None = None,
    pid: str = "self",
    sockets: list[SocketEntry] | None = None,
) -> Path:
    """The same tree as one .tar.gz (for a bug report); an existing file is refused."""
    _check_pid(roots or Roots(), pid)
    if archive.exists() or archive.is_symlink():
        raise InputError(f"{archive} exists: the archive is written only as a new file")
    if not archive.parent.is_dir():
        raise InputError(f"{archive.parent} does not exist")
    tmp = _staging(archive.parent)
    part = archive.with_name(f".{archive.name}.part-{os.getpid()}")
    try:
        name = archive.name.removesuffix(".gz").removesuffix(".tgz").removesuffix(".tar")
        _write(tmp / name, roots or Roots(), pid, sockets)
        with tarfile.open(part, "w:gz") as tar:
            tar.add(tmp / name, arcname=name)
        part.rename(archive)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return archive

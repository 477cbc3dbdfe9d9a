"""Effective memory and pids limits of a process's cgroup, v1 or v2.

A limit anywhere up the hierarchy applies, so every ancestor is read and the one
with the least headroom wins (Documentation/admin-guide/cgroup-v2.rst,
"Top-down constraint"; cgroup-v1/memory.rst hierarchy support).
"""

from __future__ import annotations

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
        return roots.cgroup / name, process.cgroups[name], 1
    v2_path = process.cgroups.get("")
    for mount in (roots.cgroup, roots.cgroup / "unified"):
        controllers = mount / "cgroup.controllers"
        if v2_path is not None and controllers.exists() and name in controllers.read_text().split():
            return mount, v2_path, 2
    return None


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


def read_cgroup(roots: Roots, process: ProcessView) -> CgroupView:
    """Memory and pids headroom of the process's cgroups (0 = no cgroup found)."""
    mem = headroom(roots, process, "memory")
    pids = headroom(roots, process, "pids")
    versions = [v for v in (mem[1] if mem else 0, pids[1] if pids else 0) if v]
    return CgroupView(
        version=max(versions, default=0),
        memory_limit=mem[0].limit if mem else None,
        memory_usage=mem[0].usage if mem else None,
        pids_max=pids[0].limit if pids else None,
        pids_current=pids[0].usage if pids else None,
        memory_path=mem[0].path if mem else "",
        pids_path=pids[0].path if pids else "",
    )

"""One memory budget for every run that opens connections (probe, compare-io, rate,
serve): the least of the host's MemAvailable less its floor and, for every memory
cgroup with a limit between the run's processes and the root, that limit less its
working set less a floor of its own (analysis.limits.memory.cgroup_floor: other
processes live in the cgroup, and the kernel would OOM-kill one of them as soon as
ours).

The run's processes are forked from the one that reads the budget, so they share
its cgroups. While connections open, the guard meters each cgroup's working set
(usage less inactive file cache) and the host's Slab growth; the first line crossed
stops the run with `guard:memory`, naming what it protected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tcpceiling.analysis.limits.memory import cgroup_floor
from tcpceiling.host import cgroups
from tcpceiling.host.read import CgroupView, read_process
from tcpceiling.host.roots import Roots
from tcpceiling.probe.run.result import Stop
from tcpceiling.results import to_data
from tcpceiling.units import format_bytes

Protects = Literal["memory", "cgroup_memory"]


@dataclass(frozen=True)
class CgroupLine:
    """A memory cgroup of the run and the working set at which the guard stops."""

    path: str
    directory: str
    version: int
    limit: int  # memory.max / limit_in_bytes, or memory.high when lower
    floor: int
    working_set: int  # when the budget was read
    oom_kills: int | None  # the kernel's count of OOM kills in it, then

    @property
    def stop_at(self) -> int:
        return self.limit - self.floor

    @property
    def room(self) -> int:
        return max(0, self.stop_at - self.working_set)


@dataclass(frozen=True)
class Breach:
    """A line the guard saw crossed: what it protects, where, and the numbers."""

    protects: Protects
    where: str  # the cgroup's path, or "host"
    used: int  # working set (cgroup), or the run's Slab growth (host: slabmeter), bytes
    stop_at: int
    limit: int
    floor: int

    @property
    def detail(self) -> str:
        if self.protects == "memory":
            return (
                f"host: the run's Slab grew {format_bytes(self.used)}, past its budget "
                f"{format_bytes(self.stop_at)} (MemAvailable less the floor "
                f"{format_bytes(self.floor)})"
            )
        return (
            f"memory cgroup {self.where}: working set {format_bytes(self.used)} reached "
            f"the guard's line {format_bytes(self.stop_at)} (limit "
            f"{format_bytes(self.limit)} less floor {format_bytes(self.floor)})"
        )


@dataclass(frozen=True)
class MemoryBudget:
    host_room: int  # MemAvailable - floor, bytes
    host_floor: int
    cgroups: tuple[CgroupLine, ...]
    view: CgroupView  # the tightest cgroup as analyze's model reads it, at the start

    @property
    def room(self) -> int:
        return min((self.host_room, *(c.room for c in self.cgroups)))

    @property
    def protects(self) -> Protects:
        """The limit that bounds the budget."""
        return "cgroup_memory" if any(c.room < self.host_room for c in self.cgroups) else "memory"


def lines_of(found: tuple[cgroups.MemoryCgroup, ...], floor: int | None) -> tuple[CgroupLine, ...]:
    """The guard's line in each memory cgroup: its limit less its floor."""
    return tuple(
        CgroupLine(
            path=c.path,
            directory=c.directory,
            version=c.version,
            limit=c.line,
            floor=cgroup_floor(c.line, floor),
            working_set=c.working_set,
            oom_kills=c.oom_kills,
        )
        for c in found
    )


def cgroup_lines(roots: Roots, floor: int | None, pid: str = "self") -> tuple[CgroupLine, ...]:
    """A line per memory cgroup with a limit that `pid` and its children are in."""
    return lines_of(cgroups.memory_cgroups(roots, read_process(roots, pid)), floor)


def read_budget(
    roots: Roots, mem_available: int, host_floor: int, floor: int | None, pid: str = "self"
) -> MemoryBudget:
    """The budget of a run whose processes are `pid` and its children."""
    process = read_process(roots, pid)
    return MemoryBudget(
        max(0, mem_available - host_floor),
        host_floor,
        lines_of(cgroups.memory_cgroups(roots, process), floor),
        cgroups.read_cgroup(roots, process),
    )


def cgroup_breach(lines: tuple[CgroupLine, ...]) -> Breach | None:
    """The first cgroup whose working set is past its line, read now. Usage is read
    first (one number): it is never below the working set, so memory.stat is read
    only near the line."""
    for c in lines:
        if cgroups.usage_now(c.directory, c.version) <= c.stop_at:
            continue
        ws = cgroups.working_set(c.directory, c.version)
        if ws > c.stop_at:
            return Breach("cgroup_memory", c.path, ws, c.stop_at, c.limit, c.floor)
    return None


def guard_stop(breach: Breach) -> Stop:
    """The memory guard's stop, naming the line and the limit it protects."""
    return Stop("guard:memory", detail=breach.detail, evidence=to_data(breach))


def nearest(b: MemoryBudget) -> Breach | None:
    """The cgroup line the run came nearest to, read now (a worker stopped at it and
    the working set has since moved back a little); None when the host bounds."""
    if b.protects != "cgroup_memory":
        return None
    now = [(c, cgroups.working_set(c.directory, c.version)) for c in b.cgroups]
    c, ws = min(now, key=lambda pair: pair[0].stop_at - pair[1])
    return Breach("cgroup_memory", c.path, ws, c.stop_at, c.limit, c.floor)


def oom_kills(lines: tuple[CgroupLine, ...], roots: Roots) -> dict[str, int | None]:
    """The kernel's OOM kill count of each cgroup now (memory.events / oom_control)."""
    out: dict[str, int | None] = {}
    for c in lines:
        now = cgroups.read_memory_cgroup(roots.cgroup / c.path, c.version, roots)
        out[c.path] = now.oom_kills if now else None
    return out

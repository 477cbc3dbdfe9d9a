"""What a tuning plan is made of: changes to write, options to choose from, and
requirements no file can meet. Frozen data; serialises with dataclasses.asdict."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from tcpceiling.analysis import whatif
from tcpceiling.analysis.model import ConstraintId, ScenarioResult

#: Where a change is written: a sysctl (sysctl.d), an rlimit (limits.d and the
#: service's LimitNOFILE=), a cgroup limit (the service's MemoryMax=/TasksMax=).
Where = Literal["sysctl", "rlimit", "cgroup"]
RLIMITS = ("nofile", "nproc")
CGROUP_KEYS = ("memory.max", "pids.max")


def where(key: str) -> Where:
    if key in RLIMITS:
        return "rlimit"
    return "cgroup" if key in CGROUP_KEYS else "sysctl"


@dataclass(frozen=True)
class Change:
    """One value to set: `key` as `analyze --set` takes it (a sysctl name, nofile,
    nproc, memory.max, pids.max), from `now` to `value`, for limit `limit`."""

    limit: ConstraintId
    key: str
    now: str | None
    value: str
    why: str

    @property
    def where(self) -> Where:
        return where(self.key)


@dataclass(frozen=True)
class Option:
    """Another way to the target that is not a file: more source IPs, destination
    ports, processes. `count` is how many for the target; `with_headroom` for the goal."""

    limit: ConstraintId
    kind: Literal["sources", "destination_ports", "processes"]
    count: int
    with_headroom: int
    text: str
    commands: tuple[str, ...] = ()


@dataclass(frozen=True)
class Requirement:
    """What no setting here can change (RAM, cores, PID_MAX_LIMIT)."""

    limit: ConstraintId
    text: str
    short_bytes: int | None = None


@dataclass(frozen=True)
class Raise:
    changes: tuple[Change, ...] = ()
    options: tuple[Option, ...] = ()
    requirements: tuple[Requirement, ...] = ()


@dataclass(frozen=True)
class Row:
    """One total limit in the plan: its ceiling before and after the changes."""

    limit: ConstraintId
    before: int | None
    after: int | None
    needed: int
    changed: bool


@dataclass(frozen=True)
class TunePlan:
    target: int
    headroom: float
    goal: int  # target x (1 + headroom), what every limit is raised to
    role: str
    rows: tuple[Row, ...]
    changes: tuple[Change, ...]
    options: tuple[Option, ...]
    requirements: tuple[Requirement, ...]
    before: ScenarioResult
    after: ScenarioResult  # the model with every change applied (analysis.whatif)
    memory_needed: int = 0  # bytes the goal's connections take (analysis.costs)
    memory_available: int = 0  # MemAvailable now
    service: str | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def reachable(self) -> bool:
        """Every limit reaches the target once the changes are made (with an option
        where one is given instead of a change)."""
        return not self.requirements and all(
            r.after is None or r.after >= self.target or self._optioned(r.limit) for r in self.rows
        )

    def _optioned(self, limit: str) -> bool:
        return any(o.limit == limit for o in self.options)

    @property
    def settings(self) -> tuple[tuple[str, str], ...]:
        """The changes as `analyze --set` takes them."""
        return settings(self.changes)


def settings(changes: Iterable[Change]) -> tuple[tuple[str, str], ...]:
    """The changes the what-if model knows (analysis.whatif.SETTERS), as `analyze --set`
    takes them; the rest (nf_conntrack_buckets) change nothing the model reads."""
    return tuple((c.key, c.value) for c in changes if c.key in whatif.SETTERS)

"""The plan: raise every total limit short of the goal, re-evaluate the model with
the changes applied (analysis.whatif), and repeat until nothing is short or nothing
more can be changed (raising nofile moves the ceiling to ports, then to epoll
watches, then to memory). Pure over a snapshot."""

from __future__ import annotations

import math

from tcpceiling.analysis import whatif
from tcpceiling.analysis.analyze import Route, context, evaluate
from tcpceiling.analysis.model import (
    Constraint,
    Endpoint,
    Scenario,
    ScenarioResult,
    total_ceiling,
)
from tcpceiling.errors import InputError
from tcpceiling.host.read import HostSnapshot
from tcpceiling.tune import ports, raisers
from tcpceiling.tune.model import Change, Option, Raise, Requirement, Row, TunePlan, settings

MAX_ROUNDS = 8
RAISERS = raisers.RAISERS | {"ports": ports.ports, "upstream_ports": ports.upstream_ports}
SOMAXCONN = 4096  # the kernel's default since Linux 5.4 (include/linux/socket.h)


def _totals(result: ScenarioResult) -> list[Constraint]:
    return [c for c in result.constraints if c.kind == "total" and c.ceiling is not None]


def _merge(old: Change | None, new: Change) -> Change:
    """Keep the first `now` (the host's value) and the larger value."""
    if old is None:
        return new
    bigger = _size(new.value) > _size(old.value)
    return Change(old.limit, old.key, old.now, (new if bigger else old).value, new.why)


def _size(value: str) -> float:
    parts = value.replace(":", " ").replace(",", " ").split()
    return max((float(p) for p in parts if p.replace(".", "").isdigit()), default=0.0)


class Planner:
    """Collects changes, options and requirements over the rounds."""

    def __init__(self, snap: HostSnapshot, scenario: Scenario, routes: dict[Endpoint, Route]):
        self.snap, self.scenario, self.routes = snap, scenario, routes
        self.changes: dict[str, Change] = {}
        self.options: dict[tuple[str, str], Option] = {}
        self.requirements: dict[str, Requirement] = {}

    def applied(self) -> HostSnapshot:
        return whatif.apply(self.snap, settings(self.changes.values()))

    def round(self, goal: int, target: int) -> bool:
        """Raise what is short; True when a change was added or grew."""
        ctx = context(self.applied(), self.scenario, self.routes)
        result = evaluate(ctx.snap, self.scenario, self.routes)
        grew = False
        for c in _totals(result):
            if (c.ceiling or 0) >= goal or c.id in self.requirements or c.id not in RAISERS:
                continue
            grew |= self._take(RAISERS[c.id](ctx, c, goal, target))
        return grew

    def _take(self, r: Raise) -> bool:
        grew = False
        for ch in r.changes:
            merged = _merge(self.changes.get(ch.key), ch)
            grew |= merged != self.changes.get(ch.key)
            self.changes[ch.key] = merged
        self.options.update({(o.limit, o.kind): o for o in r.options})
        self.requirements.update({q.limit: q for q in r.requirements})
        return grew

    def burst(self) -> None:
        """A server's accept queue: somaxconn to the modern default when below it
        (a burst limit, not a total: it bounds connections waiting for accept())."""
        now = self.snap.net.somaxconn
        if self.scenario.role == "server" and now < SOMAXCONN:
            why = "bursts of new connections wait in the accept queue (listen() clamps to it)"
            self.changes["net.core.somaxconn"] = Change(
                "backlog", "net.core.somaxconn", str(now), str(SOMAXCONN), why
            )


def service_tasks(p: Planner, goal: int, service: str | None) -> None:
    """A service with a thread per connection needs TasksMax= for them: systemd's
    DefaultTasksMax is 15 % of the kernel's task limits (systemd-system.conf(5)),
    whatever the cgroup of the process analysed here allows."""
    if service and p.scenario.io_model == "threads" and "pids.max" not in p.changes:
        why = f"{goal:,} threads in the service's cgroup (DefaultTasksMax is 15 % of the limit)"
        now = p.snap.cgroup.pids_max
        p.changes["pids.max"] = Change(
            "cgroup_pids",
            "pids.max",
            str(now) if now else None,
            str(raisers.nice(goal * 1.01)),
            why,
        )


def plan(
    snap: HostSnapshot,
    scenario: Scenario,
    routes: dict[Endpoint, Route],
    target: int,
    headroom: float = 0.1,
    service: str | None = None,
) -> TunePlan:
    """Every change that takes each total limit to target x (1 + headroom)."""
    if target < 1 or not 0 <= headroom <= 10:
        raise InputError("--target must be at least 1 and --headroom in [0, 10]")
    goal = math.ceil(target * (1 + headroom))
    p = Planner(snap, scenario, routes)
    for _ in range(MAX_ROUNDS):
        if not p.round(goal, target):
            break
    p.burst()
    service_tasks(p, goal, service)
    before = evaluate(snap, scenario, routes)
    after = evaluate(p.applied(), scenario, routes)
    changes = tuple(p.changes.values())
    rows = tuple(
        Row(
            c.id,
            total_ceiling(c),
            total_ceiling(after.constraint(c.id)),
            goal,
            any(ch.limit == c.id for ch in changes),
        )
        for c in _totals(before)
    )
    return TunePlan(
        target=target,
        headroom=headroom,
        goal=goal,
        role=scenario.role,
        rows=rows,
        changes=changes,
        options=tuple(p.options.values()),
        requirements=tuple(p.requirements.values()),
        before=before,
        after=after,
        memory_needed=math.ceil(context(snap, scenario, routes).cost.bytes_for(goal)),
        memory_available=snap.system.meminfo.mem_available,
        service=service,
        notes=_notes(snap, changes),
    )


def _notes(snap: HostSnapshot, changes: tuple[Change, ...]) -> tuple[str, ...]:
    notes = []
    if any(c.key == "nofile" for c in changes) and not snap.process.status.has_cap(24):
        notes.append(
            "this process cannot raise its own hard nofile (no CAP_SYS_RESOURCE); the "
            "new limits apply to new logins (limits.d) and to the service (LimitNOFILE=)"
        )
    if snap.netns:
        notes.append(f"net.* values were read in namespace {snap.netns}; fs.*, kernel.* are global")
    return tuple(notes)

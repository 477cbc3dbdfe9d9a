"""Threads and processes, which bind only for thread-per-connection (docs/limits.md).

A thread is a task: it needs room under kernel.threads-max (all tasks of the
machine, /proc/loadavg), a pid under kernel.pid_max (per pid namespace since Linux
6.14, counted among that namespace's tasks: the ones its procfs lists; every
ancestor namespace's pid_max applies too, with its own count), RLIMIT_NPROC (not
enforced for root), the cgroup's pids.max, and two VMAs (stack + guard) under
vm.max_map_count per process. clone()/pthread_create fail with EAGAIN.
"""

from __future__ import annotations

from dataclasses import replace

from tcpceiling.analysis.context import CAP_SYS_ADMIN, CAP_SYS_RESOURCE, Context
from tcpceiling.analysis.limits import fit
from tcpceiling.analysis.model import Constraint
from tcpceiling.host.parse import pid_room

VMAS_PER_THREAD = 2
SYMPTOM = "pthread_create()/clone(): EAGAIN (11)"


def _sub_limits(ctx: Context) -> dict[str, tuple[int, int, int]]:
    """{name: (capacity, in use, ceiling)} for each task limit that applies."""
    sysv, proc = ctx.snap.system, ctx.snap.process
    tasks = sysv.tasks
    out = {
        "threads-max": (sysv.threads_max, tasks, fit(sysv.threads_max, tasks, 1)),
        "pid_max": _pid_max(ctx),
    }
    st = proc.status
    nproc = proc.limits.nproc.soft
    exempt = st.uid == 0 or st.has_cap(CAP_SYS_ADMIN) or st.has_cap(CAP_SYS_RESOURCE)
    if nproc is not None and not exempt:
        out["RLIMIT_NPROC"] = (nproc, tasks, fit(nproc, tasks, 1))
    maps_left = fit(sysv.max_map_count, proc.map_count, VMAS_PER_THREAD)
    n = ctx.scenario.processes
    out["max_map_count"] = (sysv.max_map_count * n, proc.map_count * n, maps_left * n)
    return out


def _pid_max(ctx: Context) -> tuple[int, int, int]:
    """(pid_max, tasks of this pid namespace, pids left: parse.pid_room); without a
    task listing (a snapshot) every task of loadavg is taken to hold a pid."""
    sysv = ctx.snap.system
    if sysv.pids is None:
        return sysv.pid_max, sysv.tasks, fit(sysv.pid_max, sysv.tasks, 1)
    return sysv.pid_max, len(sysv.pids), pid_room(sysv.pid_max, list(sysv.pids))


def threads(ctx: Context) -> Constraint:
    base = Constraint(
        id="threads",
        capacity_unit="tasks",
        capacity=None,
        in_use=None,
        per_connection=None,
        ceiling=None,
        symptom=SYMPTOM,
        raise_="sysctl -w kernel.pid_max=4194304 kernel.threads-max=N vm.max_map_count=N; "
        "or use an event loop (epoll) instead of a thread per connection",
        source=", ".join(
            ctx.proc(p)
            for p in (
                "sys/kernel/threads-max",
                "sys/kernel/pid_max",
                "sys/vm/max_map_count",
                "loadavg",
            )
        ),
    )
    if ctx.scenario.io_model != "threads":
        return replace(base, note="epoll: one thread serves many connections")
    subs = _sub_limits(ctx)
    name, (cap, used, ceiling) = min(subs.items(), key=lambda kv: kv[1][2])
    return replace(
        base,
        capacity=cap,
        in_use=used,
        per_connection=1,
        ceiling=ceiling,
        note=f"{name} binds first among the task limits",
        details={k: {"capacity": v[0], "in_use": v[1], "ceiling": v[2]} for k, v in subs.items()},
    )


def cgroup_pids(ctx: Context) -> Constraint:
    cg = ctx.snap.cgroup
    base = Constraint(
        id="cgroup_pids",
        capacity_unit="tasks",
        capacity=cg.pids_max,
        in_use=cg.pids_current,
        per_connection=None,
        ceiling=None,
        symptom=f"{SYMPTOM}; pids.events 'max' counter",
        raise_=f"echo N > pids.max of {cg.pids_path or 'the cgroup'}; docker --pids-limit, "
        "systemd TasksMax=",
        source=f"cgroup v{cg.version} pids {cg.pids_path}" if cg.version else "no cgroup",
    )
    if cg.pids_max is None:
        return replace(base, note="no pids.max on this cgroup or its ancestors")
    if ctx.scenario.io_model != "threads":
        return replace(base, note="epoll: connections need no tasks")
    return replace(base, per_connection=1, ceiling=fit(cg.pids_max, cg.pids_current or 0, 1))


def evaluate(ctx: Context) -> list[Constraint]:
    return [threads(ctx), cgroup_pids(ctx)]

"""File descriptors: RLIMIT_NOFILE, fs.file-max, epoll watches (docs/limits.md §3, §9).

Every socket is one fd in its process (EMFILE past RLIMIT_NOFILE, getrlimit(2)),
one struct file system-wide (ENFILE past fs.file-max, not enforced for
CAP_SYS_ADMIN, proc(5)), and under epoll one watch of the user's
fs.epoll.max_user_watches (ENOSPC from epoll_ctl, epoll(7)).
"""

from __future__ import annotations

from dataclasses import replace

from tcpceiling.analysis.context import Context
from tcpceiling.analysis.limits import fit
from tcpceiling.analysis.model import Constraint


def _overhead(ctx: Context) -> int:
    """fds a worker needs besides connections: its listeners and its epoll fd."""
    listeners = max(1, len(ctx.scenario.listen)) if ctx.scenario.role == "server" else 0
    return listeners + (1 if ctx.scenario.io_model == "epoll" else 0)


def _nofile_raise(ctx: Context, soft: int | None, hard: int | None) -> str:
    nr_open = ctx.snap.system.nr_open
    steps = []
    if soft is not None and (hard is None or soft < hard):
        steps.append(
            f"raise the soft limit to the hard one in the process: ulimit -n {hard} "
            f"or resource.setrlimit(RLIMIT_NOFILE, ({hard}, {hard}))"
        )
    if ctx.can_raise_hard:
        steps.append(
            f"raise the hard limit up to fs.nr_open={nr_open}: systemd LimitNOFILE=, "
            "'* hard nofile N' in /etc/security/limits.conf, or prlimit --nofile"
        )
    else:
        steps.append(
            "the hard limit cannot be raised here (CAP_SYS_RESOURCE absent): shard "
            "the connections over more processes (--processes N)"
        )
    return "; ".join(steps)


def nofile(ctx: Context) -> Constraint:
    proc = ctx.snap.process
    soft, hard = proc.limits.nofile.soft, proc.limits.nofile.hard
    per_process_cap = soft if soft is not None else ctx.snap.system.nr_open
    in_use = proc.open_fds + _overhead(ctx)
    n = ctx.scenario.processes
    ceiling = n * fit(per_process_cap, in_use, 1)
    return Constraint(
        id="nofile",
        capacity_unit="fds",
        capacity=n * per_process_cap,
        in_use=n * in_use,
        per_connection=1,
        ceiling=ceiling,
        symptom="socket()/accept(): EMFILE (24)",
        raise_=_nofile_raise(ctx, soft, hard),
        source=f"{ctx.proc(f'{proc.pid}/limits')}, {ctx.proc(f'{proc.pid}/fd')}",
        note=f"{n} process(es) x (soft {soft} - {proc.open_fds} open - {_overhead(ctx)} "
        "listener/epoll fds)",
        details={
            "soft": soft,
            "hard": hard,
            "open_fds": proc.open_fds,
            "processes": n,
            "hard_raisable": ctx.can_raise_hard,
            "nr_open": ctx.snap.system.nr_open,
        },
    )


def file_max(ctx: Context) -> Constraint:
    nr = ctx.snap.system.file_nr
    per = ctx.sockets_here
    exempt = ctx.is_admin
    return Constraint(
        id="file_max",
        capacity_unit="files",
        capacity=nr.maximum,
        in_use=nr.allocated,
        per_connection=per,
        ceiling=None if exempt else fit(nr.maximum, nr.allocated, per),
        symptom="ENFILE (23), dmesg 'VFS: file-max limit N reached'",
        raise_=f"sysctl -w fs.file-max={nr.maximum * 4} (global)",
        source=ctx.proc("sys/fs/file-nr"),
        note="not enforced for CAP_SYS_ADMIN (root here): does not bind"
        if exempt
        else f"{per} struct file per connection",
        details={"root_exempt": exempt},
    )


def epoll_watches(ctx: Context) -> Constraint:
    cap = ctx.snap.system.epoll_max_user_watches
    base = Constraint(
        id="epoll_watches",
        capacity_unit="watches",
        capacity=cap,
        in_use=None,
        per_connection=None,
        ceiling=None,
        symptom="epoll_ctl(EPOLL_CTL_ADD): ENOSPC (28)",
        raise_=f"sysctl -w fs.epoll.max_user_watches={(cap or 0) * 2}",
        source=ctx.proc("sys/fs/epoll/max_user_watches"),
        note="per real UID across all its processes; current watches are not counted",
    )
    if cap is None or ctx.scenario.io_model != "epoll":
        return replace(base, note="not an epoll workload" if cap else "no epoll sysctl here")
    if not ctx.watches:
        return replace(base, per_connection=0, note="the workload watches no connection")
    per = ctx.watches
    return replace(base, per_connection=per, ceiling=fit(cap, 0, per))


def evaluate(ctx: Context) -> list[Constraint]:
    return [nofile(ctx), file_max(ctx), epoll_watches(ctx)]

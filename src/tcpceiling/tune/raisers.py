"""How to raise each limit to a goal: one function per constraint id, pure over the
analysis Context and that constraint (an explicit registry, RAISERS).

The numbers come from the same model `analyze` uses: a limit with capacity C, in_use
U and per_connection P holds (C - U) / P connections (analysis.limits.fit), so the
goal G needs C >= U + G x P. Values are rounded up to three significant digits.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from tcpceiling.analysis.context import Context
from tcpceiling.analysis.model import Constraint, ConstraintId
from tcpceiling.host.rules import (
    DEFAULT_NAT_PORTS,
    REPLACE_HOW,
    addresses_words,
    range_words,
)
from tcpceiling.tune.model import Change, Option, Raise, Requirement
from tcpceiling.units import format_bytes

#: PID_MAX_LIMIT on 64-bit (include/linux/threads.h): pid_max cannot go above it.
PID_MAX_LIMIT = 4_194_304
Raiser = Callable[[Context, Constraint, int, int], Raise]


def nice(n: float) -> int:
    """n rounded up to three significant digits (1,100,011 -> 1,110,000)."""
    whole = math.ceil(n)
    if whole < 1000:
        return whole
    step = int(10 ** (len(str(whole)) - 3))
    return -(-whole // step) * step


def _need(c: Constraint, goal: int) -> int:
    return nice((c.in_use or 0) + goal * (c.per_connection or 0))


def _one_sysctl(key: str, now: object) -> Raiser:
    """A limit that is one sysctl: capacity >= in_use + goal x per_connection."""

    def go(ctx: Context, c: Constraint, goal: int, target: int) -> Raise:
        need = _need(c, goal)
        why = f"{c.in_use or 0:,} in use + {goal:,} x {c.per_connection:g} per connection"
        return Raise(
            (Change(c.id, key, str(now if now is not None else c.capacity), str(need), why),)
        )

    return go


def nofile(ctx: Context, c: Constraint, goal: int, target: int) -> Raise:
    """Per process: its share of the goal plus the fds it holds already; fs.nr_open
    caps any hard limit (setrlimit(2): EPERM above it)."""
    n = ctx.scenario.processes
    held = (c.in_use or 0) / n
    per_process = nice(math.ceil(goal / n) + held)
    lim = ctx.snap.process.limits.nofile
    now = f"{lim.soft}:{lim.hard}"
    why = f"{math.ceil(goal / n):,} connections per process + {held:g} fds it holds"
    changes = [Change("nofile", "nofile", now, f"{per_process}:{per_process}", why)]
    nr_open = ctx.snap.system.nr_open
    if per_process > nr_open:
        changes.append(
            Change("nofile", "fs.nr_open", str(nr_open), str(per_process), "no hard limit above it")
        )
    options: tuple[Option, ...] = ()
    room = (lim.soft or nr_open) - held
    if room > 0:
        shards = math.ceil(target / room)
        options = (
            Option(
                "nofile",
                "processes",
                shards,
                math.ceil(goal / room),
                f"or keep nofile {lim.soft} and spread the connections over {shards} processes "
                f"({math.ceil(goal / room)} with headroom): SO_REUSEPORT listeners, or one "
                "client process per source IP (--processes)",
            ),
        )
    return Raise(tuple(changes), options)


def memory(ctx: Context, c: Constraint, goal: int, target: int) -> Raise:
    """RAM is not a setting: the bytes the goal needs against MemAvailable."""
    need = ctx.cost.bytes_for(goal) + ctx.scenario.memory_floor
    have = ctx.snap.system.meminfo.mem_available
    per = need / goal if goal else 0
    text = (
        f"{goal:,} connections need {format_bytes(need)} at about {per:,.0f} B each; "
        f"{format_bytes(have)} is available: {format_bytes(need - have)} more RAM (or less "
        "per connection: smaller buffers, idle connections)"
    )
    return Raise(requirements=(Requirement("memory", text, math.ceil(need - have)),))


def cgroup_memory(ctx: Context, c: Constraint, goal: int, target: int) -> Raise:
    need = nice(ctx.cost.bytes_for(goal) + (ctx.snap.cgroup.memory_usage or 0))
    why = f"{format_bytes(need)}: what is charged now + {goal:,} connections"
    now = str(ctx.snap.cgroup.memory_limit)
    return Raise((Change("cgroup_memory", "memory.max", now, str(need), why),))


def tcp_mem(ctx: Context, c: Constraint, goal: int, target: int) -> Raise:
    """All three values scaled together, so pressure starts at the same share."""
    old = ctx.snap.system.tcp_mem
    high = _need(c, goal)
    new = " ".join(str(math.ceil(v * high / old[2])) for v in old)
    why = f"{goal:,} connections x {c.per_connection:g} page(s) queued each"
    now = " ".join(str(v) for v in old)
    return Raise((Change("tcp_mem", "net.ipv4.tcp_mem", now, new, why),))


def _task_change(subs: dict[str, dict[str, int]], name: str, key: str, goal: int) -> Change | None:
    sub = subs.get(name)
    if not sub or sub["ceiling"] >= goal:
        return None
    need = nice(sub["in_use"] + goal)
    value = f"{need}:{need}" if key == "nproc" else str(need)
    return Change("threads", key, str(sub["capacity"]), value, "a task per connection")


def threads(ctx: Context, c: Constraint, goal: int, target: int) -> Raise:
    """Each task limit the threads model meets (analysis.limits.tasks), to the goal;
    max_map_count per process: its mappings now + a stack and a guard per thread."""
    subs: dict[str, dict[str, int]] = c.details
    names = (("threads-max", "kernel.threads-max"), ("pid_max", "kernel.pid_max"))
    found = [
        _task_change(subs, name, key, goal) for name, key in (*names, ("RLIMIT_NPROC", "nproc"))
    ]
    changes = [ch for ch in found if ch is not None]
    maps, n = subs.get("max_map_count"), ctx.scenario.processes
    if maps and maps["ceiling"] < goal:
        need = nice(maps["in_use"] // n + 2 * math.ceil(goal / n))
        now = str(ctx.snap.system.max_map_count)
        changes.append(Change("threads", "vm.max_map_count", now, str(need), "2 mappings a thread"))
    if any(ch.key == "kernel.pid_max" and int(ch.value) > PID_MAX_LIMIT for ch in changes):
        text = (
            f"a thread per connection cannot pass pid_max's ceiling {PID_MAX_LIMIT:,} "
            "(PID_MAX_LIMIT): use an event loop (--io-model epoll)"
        )
        return Raise(requirements=(Requirement("threads", text),))
    return Raise(tuple(changes))


def cgroup_pids(ctx: Context, c: Constraint, goal: int, target: int) -> Raise:
    need = nice((c.in_use or 0) + goal)
    return Raise(
        (Change("cgroup_pids", "pids.max", str(c.capacity), str(need), "a task per connection"),)
    )


def conntrack(ctx: Context, c: Constraint, goal: int, target: int) -> Raise:
    """nf_conntrack_max, and as many hash buckets (the default ratio since Linux 5.15,
    nf_conntrack-sysctl.rst; buckets are writable in the initial namespace only)."""
    need = _need(c, goal)
    why = f"{c.in_use or 0:,} tracked + one entry per connection"
    return Raise(
        (
            Change("conntrack", "net.netfilter.nf_conntrack_max", str(c.capacity), str(need), why),
            Change(
                "conntrack",
                "net.netfilter.nf_conntrack_buckets",
                None,
                str(need),
                "one bucket per entry",
            ),
        )
    )


def cpu(ctx: Context, c: Constraint, goal: int, target: int) -> Raise:
    per_s = (c.per_connection or 0) * goal
    cores = per_s / 1e6 / ctx.scenario.cpu_target
    text = (
        f"{goal:,} connections at this message rate need {per_s / 1e6:,.1f} CPU-seconds per "
        f"second: {math.ceil(cores)} cores at --cpu-target {ctx.scenario.cpu_target:g}"
    )
    return Raise(requirements=(Requirement("cpu", text),))


def app_limit(ctx: Context, c: Constraint, goal: int, target: int) -> Raise:
    """The server's own cap is its configuration, not this host's: the setting that
    serves the goal (scaled from what the current one serves, as the server's
    arithmetic is linear in it), the line to write, and the fds it then needs."""
    s = next((s for s in ctx.snap.servers if s.pid == c.details.get("pid")), None)
    if s is None or not s.known or s.capacity is None or s.value is None:
        text = f"{c.note}; {c.raise_}"
        return Raise(requirements=(Requirement("app_limit", text),))
    held = (s.in_use or 0) + goal
    value = s.setting_for(held)
    nofile = s.nofile_per_setting * value + s.nofile_offset
    text = (
        f"{s.server} (pid {s.pid}) serves {s.capacity:,} at {s.setting} {s.value}; "
        f"{held:,} at once need {s.setting} {value:,} in its configuration ({s.arithmetic})"
        + (f", and RLIMIT_NOFILE >= {nofile:,} for it" if s.nofile_needed else "")
    )
    return Raise(requirements=(Requirement("app_limit", text),))


def snat_ports(ctx: Context, c: Constraint, goal: int, target: int) -> Raise:
    """A NAT's tuples per destination are ports in its range x NAT addresses
    (docs/limits.md §11): the range, or the addresses, that hold the goal toward each
    destination, as nft lines for the rule's place."""
    out = []
    for row in c.details.get("destinations", []):
        need = row["in_use"] + math.ceil(goal / max(1, len(c.details["destinations"])))
        addresses = max(1, row["addresses"])
        ports = math.ceil(need / addresses)
        syntax = row.get("syntax", "nft")
        if ports <= DEFAULT_NAT_PORTS:
            how = f"a range of {ports:,} ports per NAT address, e.g. `{range_words(syntax, ports)}`"
        else:
            how = (
                f"{math.ceil(need / DEFAULT_NAT_PORTS)} NAT addresses of "
                f"{DEFAULT_NAT_PORTS:,} ports each (`{addresses_words(syntax)}`)"
            )
        out.append(
            Requirement(
                "snat_ports",
                f"{need:,} flows toward {row['destination']} through {row['rule']} need {how}",
            )
        )
    return Raise(requirements=tuple(out))


def firewall(ctx: Context, c: Constraint, goal: int, target: int) -> Raise:
    """A `ct count over N` (or connlimit) cap lets N through: N must be the goal at
    least; the words in the rule's own syntax."""
    rule = c.details.get("rule", "the rule")
    how = REPLACE_HOW[c.details.get("syntax", "nft")]
    text = f"{rule}: raise the count to {nice(goal):,} or more ({how})"
    return Raise(requirements=(Requirement("firewall", text),))


RAISERS: dict[ConstraintId, Raiser] = {
    "app_limit": app_limit,
    "snat_ports": snat_ports,
    "firewall": firewall,
    "nofile": nofile,
    "file_max": _one_sysctl("fs.file-max", None),
    "epoll_watches": _one_sysctl("fs.epoll.max_user_watches", None),
    "memory": memory,
    "cgroup_memory": cgroup_memory,
    "tcp_mem": tcp_mem,
    "threads": threads,
    "cgroup_pids": cgroup_pids,
    "conntrack": conntrack,
    "cpu": cpu,
}

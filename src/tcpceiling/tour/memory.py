"""Memory: a memory cgroup of its own holds the whole run (client and sink), and the
probe stops at the cgroup's line, the limit less a floor, before the OOM killer
would act. analyze predicts it from the cgroup's room and what one connection
charges to it; how the kernel charges a socket to a cgroup depends on the version
(host.cgroups.sockets_charged), so the step says which it found."""

from __future__ import annotations

from functools import partial

from tcpceiling.host.cgroups import sockets_charged
from tcpceiling.host.roots import Roots
from tcpceiling.probe.run.config import ProbeConfig
from tcpceiling.probe.run.coordinator import run as run_probe
from tcpceiling.probe.run.result import ProbeResult
from tcpceiling.signals import unless_interrupted
from tcpceiling.tour.cgroup import Group, throwaway
from tcpceiling.tour.child import Child
from tcpceiling.tour.model import Measure, Step, Trial
from tcpceiling.units import format_bytes

MIB = 1 << 20
#: the guard stops in steps and the run's own processes grow a little as it opens
LIMIT, FLOOR = 96 * MIB, 8 * MIB
STEP_TIMEOUT_S = 120


def charged(r: ProbeResult) -> float | None:
    """Bytes the cgroup was charged per connection: its working set at the stop less
    at the start of opening, over the connections held."""
    guard = r.memory_guard
    used = r.stop.evidence.get("used")
    if guard is None or not guard.cgroups or not isinstance(used, int) or not r.established:
        return None
    return (used - guard.cgroups[0].working_set_start) / r.established


def how_charged(group: Group) -> str:
    if sockets_charged(group.version, group.path):
        return (f"cgroup v{group.version}: both ends' sockets (struct sock, file, inode) "
                "and their buffers are charged to the cgroup")  # fmt: skip
    return (
        "cgroup v1 without memory.kmem.tcp accounting: a connecting socket is charged "
        "(made in the process), an accepted one only for its file and inode (its struct "
        "sock is made in softirq, charged to nobody)"
    )


def step(roots: Roots, name: str) -> Step:
    with throwaway(roots, "memory", LIMIT, name) as group:
        cfg = ProbeConfig(target=None, cgroup_floor=FLOOR, workers=1, isolate=True)
        r = Child(partial(run_probe, cfg), (group,)).result(STEP_TIMEOUT_S)
        unless_interrupted(r.stop.reason)
        oom = group.oom_kills()
        how = how_charged(group)
    per = charged(r)
    predicted = Measure(r.predicted.ceiling, "connections", r.predicted.binding,
                        "analyze: the cgroup's room at the start / bytes charged per "
                        "connection")  # fmt: skip
    proven = Measure(r.established, "connections", r.stop.reason, "probe inside the cgroup")
    observed = f"{r.stop.reason}: stopped at the cgroup's line; OOM kills in it: {oom}"
    kernel = r.per_connection.kernel_bytes
    return Step(
        "memory",
        "Memory: a cgroup's limit",
        "Each connection costs kernel memory (socket, file, inode, dentry, epoll watch); "
        "in a container the cgroup's limit comes first, and past it the OOM killer "
        "picks a process: the probe stops at a floor below it.",
        (Trial(f"a memory cgroup of {format_bytes(LIMIT)}", predicted, proven, observed, 0.10),),
        reads=(
            ("cgroup limit, and the floor the probe keeps",
             f"{format_bytes(LIMIT)}, {format_bytes(FLOOR)}"),
            ("kernel memory per connection, both ends (Slab)",
             format_bytes(kernel) if kernel else "not measured"),
            ("charged to the cgroup per connection, both ends",
             format_bytes(per) if per else "not measured"),
            ("how this kernel charges sockets", how),
        ),
    )  # fmt: skip

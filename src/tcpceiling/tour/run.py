"""The tour's order and its safety: every step in a namespace or cgroup of the
tour's own, removed on the way out whatever happens; the churn of the last step
runs its minute in a child while the others go on."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

from tcpceiling.host import netns as netns_mod
from tcpceiling.host.owned import own_name
from tcpceiling.host.read import read_net, read_system
from tcpceiling.host.roots import Roots
from tcpceiling.probe.run import isolate
from tcpceiling.signals import ended_by_signal, raise_if_caught
from tcpceiling.tour import cgroup, cpu, fds, memory, ports, proxy, rate, threads
from tcpceiling.tour.model import Step, TourResult
from tcpceiling.tour.table import HostFacts, resources


def timed(fn: Callable[[], Step]) -> Step:
    """A step, timed; a signal whose interrupt was lost in it ends the tour here."""
    t0 = time.monotonic()
    s = fn()
    raise_if_caught()
    return replace(s, seconds=round(time.monotonic() - t0, 2))


def facts(roots: Roots) -> HostFacts:
    system = read_system(roots)
    return HostFacts(read_net(roots).port_range, system.threads_max, system.pid_max,
                     system.meminfo.mem_available, system.cpus)  # fmt: skip


def tour(
    roots: Roots | None = None, on_step: Callable[[Step], None] = lambda _s: None
) -> TourResult:
    """Every step, in order; on_step is called as each one ends (the CLI prints it).
    SIGINT or SIGTERM ends it (KeyboardInterrupt) with everything it made removed."""
    roots = roots or Roots()
    netns_mod.require_root("tour")
    with ended_by_signal():
        sweep_stale(roots)
        return _tour(roots, on_step)


def _tour(roots: Roots, on_step: Callable[[Step], None]) -> TourResult:
    name = own_name("tour")
    t0 = time.monotonic()
    churn = rate.start()
    steps: list[Step] = []
    try:
        for fn in (ports.step, lambda: fds.step(roots), lambda: _threads(roots, name),
                   lambda: memory.step(roots, f"{name}-memory"), cpu.step,
                   lambda: _in_namespace(proxy.step, f"{name}-proxy")):  # fmt: skip
            steps.append(timed(fn))
            on_step(steps[-1])
        held = steps[0].trials[0]
        steps.append(timed(lambda: rate.step(churn, held)))
        on_step(steps[-1])
    finally:
        churn.cancel()
    done = tuple(steps)
    return TourResult(done, resources(done, facts(roots)), round(time.monotonic() - t0, 2))


def sweep_stale(roots: Roots) -> list[str]:
    """What a tour (or a probe) killed with SIGKILL left: its namespaces, its cgroups."""
    return isolate.sweep_stale(roots) + cgroup.sweep_stale(roots)


def _in_namespace(fn: Callable[[str], Step], name: str) -> Step:
    """A step in a network namespace of its own, removed after (lo up)."""
    with netns_mod.made(name):
        return fn(name)


def _threads(roots: Roots, name: str) -> Step:
    with netns_mod.made(name):
        return threads.step(roots, name)

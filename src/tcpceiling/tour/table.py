"""The classic summary table, filled in from what this run measured and observed:
resource | this machine's capacity | one connection's measured cost | what happens
when it is full (the errno or signal the step saw). Pure: from the steps and a few
host facts."""

from __future__ import annotations

from dataclasses import dataclass

from tcpceiling.tour.model import Resource, Step, StepId, Trial
from tcpceiling.units import format_bytes


@dataclass(frozen=True)
class HostFacts:
    port_range: tuple[int, int]
    threads_max: int
    pid_max: int
    mem_available: int
    cpus: int | None


def _trial(steps: tuple[Step, ...], sid: StepId, i: int = 0) -> Trial | None:
    found = [s for s in steps if s.id == sid]
    return found[0].trials[i] if found and len(found[0].trials) > i else None


def _read(steps: tuple[Step, ...], sid: StepId, prefix: str) -> str:
    for s in steps:
        if s.id == sid:
            for what, value in s.reads:
                if what.startswith(prefix):
                    return value
    return "not read"


def _seen(t: Trial | None) -> str:
    return t.observed if t is not None and t.observed else "not observed"


def _value(t: Trial | None, proven: bool = True) -> float | None:
    if t is None:
        return None
    return (t.proven if proven else t.predicted).value


def resources(steps: tuple[Step, ...], host: HostFacts) -> tuple[Resource, ...]:
    low, high = host.port_range
    thread = _value(_trial(steps, "threads", 0))
    us = _value(_trial(steps, "cpu"))
    return (
        Resource("ephemeral ports",
                 f"{high - low + 1:,} per (source, destination, port) ({low}-{high})",
                 "1 local port per connection, per destination", _seen(_trial(steps, "ports"))),
        Resource("file descriptors",
                 f"nofile {_read(steps, 'fds', 'RLIMIT_NOFILE')} per process; "
                 f"fs.file-max {_read(steps, 'fds', 'fs.file-max')}",
                 "1 fd per connection, per end", _seen(_trial(steps, "fds"))),
        Resource("tasks (a thread per connection)",
                 f"threads-max {host.threads_max:,}, pid_max {host.pid_max:,}, or pids.max",
                 f"1 task, +{format_bytes(thread)} per connection" if thread else "1 task",
                 _seen(_trial(steps, "threads", 1))),
        Resource("memory", f"{format_bytes(host.mem_available)} available, or the cgroup's limit",
                 _read(steps, "memory", "kernel memory per connection") + " of kernel memory",
                 _seen(_trial(steps, "memory"))),
        Resource("CPU", f"{host.cpus or '?'} CPUs",
                 f"{us:.1f} µs per message" if us else "not measured", _seen(_trial(steps, "cpu"))),
        Resource("new connections per second",
                 f"{high - low + 1:,} ports per tuple / 60 s of TIME_WAIT",
                 "1 port for 60 s per connection the client closes",
                 _seen(_trial(steps, "rate", 1))),
    )  # fmt: skip

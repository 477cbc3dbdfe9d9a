"""File descriptors at three levels: the system's open files (fs.file-max), the most
any process may be allowed (fs.nr_open, the ceiling of every RLIMIT_NOFILE hard
limit), and the process's own RLIMIT_NOFILE soft limit, which is what stops it: a
client worker given nofile 100 opens 100 less the fds it already holds, then
socket() fails with EMFILE."""

from __future__ import annotations

from tcpceiling.host.read import read_process, read_system
from tcpceiling.host.roots import Roots
from tcpceiling.probe.run.config import ProbeConfig
from tcpceiling.probe.run.coordinator import run as run_probe
from tcpceiling.signals import unless_interrupted
from tcpceiling.tour.model import Measure, Step, Trial

NOFILE = 100


def levels(roots: Roots) -> tuple[tuple[str, str], ...]:
    system = read_system(roots)
    own = read_process(roots).limits.nofile
    return (
        ("fs.file-max (every process together)", f"{system.file_nr.maximum:,}"),
        ("fs.nr_open (the highest RLIMIT_NOFILE allowed)", f"{system.nr_open:,}"),
        ("RLIMIT_NOFILE of this process (soft / hard)", f"{own.soft:,} / {own.hard:,}"),
    )


def step(roots: Roots) -> Step:
    r = run_probe(ProbeConfig(target=None, worker_nofile=NOFILE, workers=1, isolate=True))
    unless_interrupted(r.stop.reason)
    held_before = NOFILE - (r.predicted.ceiling or 0)
    how = f"analyze: nofile {NOFILE} less the worker's {held_before} open fds"
    predicted = Measure(r.predicted.ceiling, "connections", r.predicted.binding, how)
    proven = Measure(r.established, "connections", r.stop.reason, "probe: one client worker")
    observed = f"socket(): {r.stop.errno}" if r.stop.errno else r.stop.reason
    return Step(
        "fds",
        "File descriptors: the system, the ceiling of any limit, the process",
        f"Every connection is an fd. A process stops at its own soft RLIMIT_NOFILE less "
        f"what it already holds ({held_before} here), long before fs.file-max; past "
        "fs.nr_open no limit can be raised without changing that first.",
        (Trial(f"a client worker with nofile {NOFILE}", predicted, proven, observed),),
        reads=levels(roots),
    )

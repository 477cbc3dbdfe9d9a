"""`tcpceiling serve`: the probe's sink alone, for probing from another machine.

Listens on every --listen endpoint across `shards` processes (SO_REUSEPORT), each
holding up to its RLIMIT_NOFILE connections; reads and discards (or echoes) with a
fixed 64 KiB buffer per shard, so memory stays bounded whatever clients send. In a
memory cgroup with a limit, a shard stops accepting at the memory guard's line
(probe.budget) instead of letting the kernel OOM-kill it or a neighbour: the
connections past it wait in the accept queue, as at any server's cap.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from functools import partial

from tcpceiling.analysis.model import Endpoint
from tcpceiling.errors import HostError, InputError
from tcpceiling.host.roots import Roots
from tcpceiling.probe.run import budget
from tcpceiling.probe.run.progress import Progress, RunProgress
from tcpceiling.probe.serving.attribution import accepted
from tcpceiling.probe.workers.children import Children
from tcpceiling.probe.workers.sink import SinkMode, SinkPlan, listener, run_sink


def check_listen(endpoints: tuple[Endpoint, ...], backlog: int) -> None:
    """Bind each endpoint once as a shard will (SO_REUSEPORT), so a port in use or an
    address not of this host is one clear error before any shard starts."""
    for e in endpoints:
        try:
            listener(e.host, e.port, backlog).close()
        except OSError as exc:
            why = exc.strerror or str(exc)
            raise InputError(f"cannot listen on {e}: {why}") from exc


@dataclass(frozen=True)
class Served:
    accepted: int
    guard: str = ""  # the memory guard's words when a shard stopped accepting at it


def _guard_words(kids: Children, lines: tuple[budget.CgroupLine, ...]) -> str:
    """What the memory guard says once a shard stopped accepting at its line."""
    if not any(s.sink and s.sink.guard for s in kids.sink_states):
        return ""
    breach = budget.cgroup_breach(lines)
    where = breach.detail if breach else "a memory cgroup's line"
    return f"memory guard: {where}; accepting no more (the rest wait in the accept queue)"


def serve(
    endpoints: tuple[Endpoint, ...],
    shards: int,
    backlog: int,
    mode: SinkMode,
    duration: float | None,
    report: Progress,
) -> Served:
    """Run until SIGINT/SIGTERM or `duration` seconds: the connections accepted, and
    the memory guard's words if it stopped the shards accepting."""
    check_listen(endpoints, backlog)
    eps = tuple((e.host, e.port) for e in endpoints)
    stop = {"flag": False}

    def on_signal(*_: object) -> None:
        stop["flag"] = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    kids = Children()
    lines = budget.cgroup_lines(Roots(), None)
    guard = ""
    try:  # a shard that failed to start still releases those that did
        for i in range(shards):
            plan = SinkPlan(i, eps, backlog, mode, cgroup_lines=lines)
            kids.spawn("sink", partial(run_sink, plan))
        t0 = time.monotonic()
        report(RunProgress("serving", 0, None, 0.0))
        while not stop["flag"] and (duration is None or time.monotonic() - t0 < duration):
            kids.pump()
            if kids.died is not None:  # a shard crashed or exited
                raise HostError(kids.died.detail)
            guard = guard or _guard_words(kids, lines)
            done = accepted(kids.sink_states)
            report(RunProgress("serving", done, None, time.monotonic() - t0, label=guard))
            time.sleep(0.25)
    finally:
        kids.release()
        for s, h in old.items():
            signal.signal(s, h)
    return Served(accepted(kids.sink_states), guard)

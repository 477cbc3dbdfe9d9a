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
from functools import partial

from tcpceiling.analysis.model import Endpoint
from tcpceiling.errors import HostError, InputError
from tcpceiling.host.roots import Roots
from tcpceiling.probe import budget
from tcpceiling.probe.attribution import accepted
from tcpceiling.probe.children import Children
from tcpceiling.probe.progress import Progress, RunProgress
from tcpceiling.probe.sink import SinkMode, SinkPlan, listener, run_sink


def check_listen(endpoints: tuple[Endpoint, ...], backlog: int) -> None:
    """Bind each endpoint once as a shard will (SO_REUSEPORT), so a port in use or an
    address not of this host is one clear error before any shard starts."""
    for e in endpoints:
        try:
            listener(e.host, e.port, backlog).close()
        except OSError as exc:
            why = exc.strerror or str(exc)
            raise InputError(f"cannot listen on {e}: {why}") from exc


def serve(
    endpoints: tuple[Endpoint, ...],
    shards: int,
    backlog: int,
    mode: SinkMode,
    duration: float | None,
    report: Progress,
) -> int:
    """Run until SIGINT/SIGTERM or `duration` seconds; returns connections accepted."""
    check_listen(endpoints, backlog)
    eps = tuple((e.host, e.port) for e in endpoints)
    stop = {"flag": False}

    def on_signal(*_: object) -> None:
        stop["flag"] = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    kids = Children()
    lines = budget.cgroup_lines(Roots(), None)
    for i in range(shards):
        plan = SinkPlan(i, eps, backlog, mode, cgroup_lines=lines)
        kids.spawn("sink", partial(run_sink, plan))
    t0 = time.monotonic()
    report(RunProgress("serving", 0, None, 0.0))
    try:
        while not stop["flag"] and (duration is None or time.monotonic() - t0 < duration):
            kids.pump()
            if kids.died is not None:  # a shard crashed or exited
                raise HostError(kids.died.detail)
            report(RunProgress("serving", accepted(kids.sink_states), None, time.monotonic() - t0))
            time.sleep(0.25)
    finally:
        kids.release()
        for s, h in old.items():
            signal.signal(s, h)
    return accepted(kids.sink_states)

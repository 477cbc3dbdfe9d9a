"""Why opening stopped, from what the workers said: pure functions over their
states (tcpceiling.probe.messages.WorkerState), so a recorded stream of messages
replays into the same verdict with no root and no socket."""

from __future__ import annotations

import errno
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Literal

from tcpceiling.probe.run.result import Stop
from tcpceiling.probe.workers import errnos
from tcpceiling.probe.workers.messages import WorkerState


def accepted(sinks: Sequence[WorkerState]) -> int:
    return sum(s.accepted for s in sinks)


TaskLimit = Literal["threads", "cgroup_pids"]


def sink_stop(sinks: Sequence[WorkerState], task_limit: TaskLimit) -> Stop | None:
    """A sink shard that could take no more (EMFILE; EAGAIN from pthread_create in
    the threads model, named `task_limit`) names the server side's limit."""
    for s in sinks:
        if s.sink and s.sink.guard == "memory":
            return Stop("guard:memory", side="server")
        num = s.sink.full_errno if s.sink else 0
        if num:
            cid = task_limit if num == errno.EAGAIN else errnos.constraint_for(num)
            detail = f"sink shard {s.index} (pid {s.pid}) accepted {accepted(sinks):,}"
            return Stop(cid, errno=errnos.name(num), side="server", detail=detail)
    return None


def _client_stop(w: WorkerState, server_mode: bool) -> Stop | None:
    """What one worker that finished opening says stopped it, if anything."""
    p = w.client
    if p is None or not w.finished:
        return None
    if p.guard == "memory":
        return Stop("guard:memory")
    if p.failure.limit:
        num = p.failure.limit
        return Stop(errnos.constraint_for(num), errno=errnos.name(num), side="client")
    if w.watch.limit_kind:
        return Stop("server", detail=w.watch.limit_kind, side="server")
    num = (p.failure.client if server_mode else p.failure.first) if w.short else 0
    if num:
        return Stop(errnos.constraint_for(num), errno=errnos.name(num), side="client")
    return None


def limit_stop(
    clients: Sequence[WorkerState],
    sinks: Sequence[WorkerState],
    server_mode: bool,
    task_limit: TaskLimit = "threads",
) -> Stop | None:
    """A full sink shard first; else the first worker that finished short of its
    share names the limit by its errno, or with a real server the kind of failure
    its connections kept meeting."""
    stop = sink_stop(sinks, task_limit)
    for w in clients:
        stop = stop or _client_stop(w, server_mode)
    return stop


def errno_counts(clients: Sequence[WorkerState]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for w in clients:
        for num, n in (w.client.errors if w.client else {}).items():
            key = errnos.name(num)
            counts[key] = counts.get(key, 0) + n
    return counts


#: How a real server's connections can fail (tcpceiling.probe.serving.watch), most telling first.
FAILURE_KINDS = ("error_reply", "evicted", "closed", "reset", "refused", "silent", "timeout")


def dominant_failure(clients: Sequence[WorkerState]) -> str | None:
    """The failure the workers' connections met most often, if any."""
    totals: dict[str, int] = {}
    for w in clients:
        for kind in FAILURE_KINDS:
            totals[kind] = totals.get(kind, 0) + w.watch.totals.get(kind, 0)
    best = max(FAILURE_KINDS, key=lambda k: totals[k])
    return best if totals[best] else None


def _short_of_served(clients: Sequence[WorkerState], served: int | None) -> Stop | None:
    """A checked server that served fewer than were asked for, with no streak of
    failures to name: what its connections met most is the server's doing."""
    kind = dominant_failure(clients) if served is not None else None
    return Stop("server", detail=kind, side="server") if kind else None


def final_stop(
    stop: Stop | None,
    target: int | None,
    established: int,
    clients: Sequence[WorkerState],
    sinks: Sequence[WorkerState],
    server_mode: bool,
    task_limit: TaskLimit = "threads",
    server_evidence: Callable[[Stop], Stop] = lambda s: s,
    served: int | None = None,
) -> Stop:
    """Why opening ended (the stop already decided, the target, or the limit the
    workers name), with every errno the clients saw and the first one; a stop on
    the server's side goes through `server_evidence` (evidence.attribute).

    With a checked real server the target counts what was served: the kernel can
    complete handshakes the server never accepts (SYN cookies let more through than
    the accept queue holds), so ESTABLISHED alone would report a target the server
    did not reach."""
    if stop is None:
        reached = target is not None and established >= target
        if served is not None:  # a checked real server: the target counts the served
            reached = target is not None and served >= target
        stop = Stop("target") if reached else None
    stop = (
        stop
        or limit_stop(clients, sinks, server_mode, task_limit)
        or _short_of_served(clients, served)
        or Stop("unknown")
    )
    first = next(
        (w.client.failure.first for w in clients if w.client and w.client.failure.first), 0
    )
    if stop.reason == "server":
        stop = server_evidence(stop)
    return replace(
        stop,
        errno_counts=errno_counts(clients),
        errno=stop.errno or (errnos.name(first) if first else None),
    )

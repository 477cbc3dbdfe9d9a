"""The run's worker processes: spawned, listened to, and ended. Each child's
messages (tcpceiling.probe.workers.messages) land in its WorkerState; a child that dies or
crashes before it released is remembered as the run's `worker_died` stop."""

from __future__ import annotations

import os
import select
import signal
import time
from collections.abc import Callable, Sequence
from typing import IO

from tcpceiling.probe.run.result import Stop
from tcpceiling.probe.workers.messages import Crash, Role, WorkerState, recorded
from tcpceiling.probe.workers.procs import Child, Reporter, close_pipe, read_messages, reap, spawn
from tcpceiling.probe.workers.procs import signal_child as _signal_child

Ready = Callable[[WorkerState], bool]


class Children:
    """`record`, when given, receives every message as a JSON line with the child's
    role and index: a stream that tests replay (tcpceiling.probe.serving.attribution)."""

    def __init__(self, record: IO[str] | None = None) -> None:
        self.clients: list[Child] = []
        self.sinks: list[Child] = []
        self.states: dict[tuple[Role, int], WorkerState] = {}
        self.died: Stop | None = None
        self.record = record

    # -- spawning -------------------------------------------------------------------
    def spawn(self, role: Role, target: Callable[[Reporter], None]) -> Child:
        group = self.clients if role == "client" else self.sinks
        child = spawn(role, len(group), target)
        group.append(child)
        self.states[(role, child.index)] = WorkerState(role, child.index, pid=child.pid)
        return child

    def state(self, child: Child) -> WorkerState:
        return self.states[(child.role, child.index)]  # type: ignore[index]

    @property
    def client_states(self) -> list[WorkerState]:
        return [self.state(c) for c in self.clients]

    @property
    def sink_states(self) -> list[WorkerState]:
        return [self.state(c) for c in self.sinks]

    def live_pids(self, group: Sequence[Child]) -> list[int]:
        return [c.pid for c in group if c.exit_status is None]

    # -- listening --------------------------------------------------------------------
    def pump(self) -> None:
        """Read what the children said: one poll() finds the pipes with news, so a
        tick costs no syscall per quiet child (about a hundred at 1M connections)."""
        children = {c.reader: c for c in [*self.clients, *self.sinks] if c.reader >= 0}
        po = select.poll()
        for fd in children:
            po.register(fd, select.POLLIN)
        for fd, _events in po.poll(0):
            child = children[fd]
            msgs, closed = read_messages(child)
            for msg in msgs:
                self.state(child).apply(msg)
                if self.record is not None:
                    self.record.write(recorded(child.role, child.index, msg))
                if isinstance(msg, Crash) and self.died is None:
                    self.died = Stop(
                        "worker_died",
                        detail=f"{child.role} worker {child.index} (pid {child.pid}) "
                        f"crashed: {msg.error}",
                    )
            if closed or reap(child):
                self._check_dead(child)

    def _check_dead(self, child: Child) -> None:
        reap(child)
        if self.state(child).released or self.died is not None or child.exit_status is None:
            return
        how = (
            f"killed by signal {os.WTERMSIG(child.exit_status)}"
            if os.WIFSIGNALED(child.exit_status)
            else f"exit {child.exit_status}"
        )
        self.died = Stop(
            "worker_died", detail=f"{child.role} worker {child.index} (pid {child.pid}) {how}"
        )

    def wait_for(
        self,
        children: Sequence[Child],
        ready: Ready,
        timeout: float,
        give_up: Callable[[], bool] = lambda: False,
        tick: Callable[[], None] = lambda: None,
    ) -> None:
        """Until every child is `ready`, released or gone (or the timeout, or give_up);
        `tick` runs after each read of their news (a progress report)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not give_up():
            self.pump()
            tick()
            if all(
                ready(self.state(c)) or self.state(c).released or c.exit_status is not None
                for c in children
            ):
                return
            time.sleep(0.02)

    # -- ending -----------------------------------------------------------------------
    def signal(self, children: Sequence[Child], sig: int) -> None:
        for c in children:
            _signal_child(c, sig)

    def release(self) -> None:
        """Clients first (RST, no TIME_WAIT), then the sinks; SIGKILL what lingers."""
        for group in (self.clients, self.sinks):
            self.signal(group, signal.SIGTERM)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not all(reap(c) for c in group):
                self.pump()
                time.sleep(0.02)
            for c in group:
                if not reap(c):
                    _signal_child(c, signal.SIGKILL)
                    reap(c, block=True)
                self.pump()
                close_pipe(c)

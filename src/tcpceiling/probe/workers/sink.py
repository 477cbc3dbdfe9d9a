"""A sink shard: listens on its sink ports (its own, or shared with the other shards
through SO_REUSEPORT, the kernel spreading connections by hash), accepts in
batches, holds the fds in an array, and optionally reads-and-discards or echoes
with a fixed buffer, so its memory stays bounded whatever clients send.
`tcpceiling serve` runs these alone. Signals: SIGTERM closes everything (RST) and exits.

Two I/O models: `epoll`, one event loop for every connection (Sink), and
`threads`, the classic blocking server with one thread per connection blocked in
recv() (ThreadSink). When pthread_create fails (EAGAIN: threads-max, pid_max, the
pids cgroup, RLIMIT_NPROC, max_map_count) the thread sink stops accepting and says so.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import socket
import threading
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from tcpceiling.analysis.model import IoModel
from tcpceiling.probe.run.budget import CgroupLine, cgroup_breach
from tcpceiling.probe.uring.accept import ACCEPT_OPS, COMPLETIONS, MultishotAccept
from tcpceiling.probe.uring.engine import Engine, EngineChoice, open_ring
from tcpceiling.probe.workers.messages import Released, SinkProgress, SinkReady
from tcpceiling.probe.workers.procs import Reporter
from tcpceiling.probe.workers.worker import LINGER_RST, SelfStats, close_with_rst, raise_nofile

ACCEPT_BATCH = 65536
#: The listeners are drained every ACCEPT_EVERY seconds instead of being waited on:
#: a listener waited on wakes its process for every handshake (a context switch per
#: connection, measured as the largest cost of the probe after the kernel's own
#: work); the accept queue (somaxconn) holds what arrives in between. They
#: sit in an epoll of their own that is only polled, to find the ones with a queue
#: among hundreds of sink ports without an accept() on each.
ACCEPT_EVERY = 0.02
#: A shard with nothing queued waits longer, doubling up to IDLE_EVERY: with owned
#: ports the clients visit one shard after another, and at 1M connections 53 shards
#: waking 50 times a second cost more user CPU than their accept()s.
IDLE_EVERY = 0.16
READ_SIZE = 65536
#: Accepts between two readings of the memory cgroups' usage (budget.cgroup_breach)
#: when the sink runs in a cgroup with a limit: 256 accepted sockets charge about
#: 0.3 MiB, well inside the guard's floor. A thread charges about 44 KiB, part of it
#: only once it runs, after the reading: the thread sink reads every 16.
GUARD_EVERY = 256
THREAD_GUARD_EVERY = 16


#: hold: accept and keep; discard: read and drop; echo: send back what fits.
SinkMode = Literal["hold", "discard", "echo"]


@dataclass(frozen=True)
class SinkPlan:
    index: int
    endpoints: tuple[tuple[str, int], ...]
    backlog: int
    mode: SinkMode = "hold"
    nofile: int | None = None
    io_model: IoModel = "epoll"
    #: the memory cgroups' lines: past one, stop accepting (the rest wait, uncharged,
    #: in the kernel's accept queue) and say so
    cgroup_lines: tuple[CgroupLine, ...] = ()
    engine: EngineChoice = "epoll"  # accepts through io_uring (multishot) when allowed


def listener(host: str, port: int, backlog: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind((host, port))
    s.listen(backlog)
    return s


class Sink:
    guard_every = GUARD_EVERY  # accepts between two readings of the memory cgroups

    def __init__(self, plan: SinkPlan, rep: Reporter) -> None:
        self.plan, self.rep = plan, rep
        self.fds = array("i")
        self.closing = False
        self.full_errno: int | None = None
        self.guarded = False
        self.chunk = self.guard_every if plan.cgroup_lines else ACCEPT_BATCH
        self.buf = bytearray(READ_SIZE)
        self.stats = SelfStats()  # opened now: a full shard (EMFILE) can still report
        self.ep = select.epoll()  # the connections being served (echo, discard)
        self.listen_ep = select.epoll()  # the listeners: polled, never waited on
        self.listeners = {}
        for host, port in plan.endpoints:
            sock = listener(host, port, plan.backlog)
            self.listeners[sock.fileno()] = sock
            self.listen_ep.register(sock.fileno(), select.EPOLLIN)
        self.engine: Engine = "epoll"
        self.refused = ""
        self.multishot: MultishotAccept | None = None

    def use_engine(self) -> None:
        """Accept through io_uring when the plan asks and the kernel allows."""
        ring, self.refused = open_ring(self.plan.engine, ACCEPT_OPS, 8, COMPLETIONS)
        if ring is not None:
            self.multishot = MultishotAccept(ring, self.listeners)
            self.engine = "uring"

    def _stop(self, *_: object) -> None:
        self.closing = True

    def _accept(self, sock: socket.socket) -> None:
        """Accept what is queued, as raw fds (no socket object per connection)."""
        accept, chunk = sock._accept, self.chunk  # type: ignore[attr-defined]
        for _ in range(ACCEPT_BATCH // chunk):
            try:
                if self.plan.mode == "hold":  # the hot loop of a probe: nothing but accept
                    append = self.fds.append
                    for _ in range(chunk):
                        append(accept()[0])
                else:
                    for _ in range(chunk):
                        self._watch(accept()[0])
            except BlockingIOError:  # the queue ran dry: what came counts all the same
                self._over_memory()
                return
            except OSError as exc:  # EMFILE/ENFILE/ENOMEM: this shard is full
                return self._full(exc.errno)
            if self._over_memory():
                return

    def _watch(self, fd: int) -> None:
        self.fds.append(fd)
        os.set_blocking(fd, False)
        self.ep.register(fd, select.EPOLLIN | select.EPOLLRDHUP)

    def _watch_all(self, fds: Sequence[int]) -> None:
        for fd in fds:
            self._watch(fd)

    def _over_memory(self) -> bool:
        """Past a memory cgroup's line: accept no more, and report it now. Read after
        every chunk and whenever the queue runs dry, so a shard that accepts a
        trickle reads it too."""
        if self.guarded:
            return True
        if self.plan.cgroup_lines and cgroup_breach(self.plan.cgroup_lines) is not None:
            self.guarded = True
            self._report()
        return self.guarded

    def _serve(self, fd: int, events: int) -> None:
        try:
            n = os.readv(fd, [self.buf])
            if n and self.plan.mode == "echo":
                os.write(fd, memoryview(self.buf)[:n])  # best effort; drops what does not fit
            if n and not events & select.EPOLLRDHUP:
                return
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno == errno.EAGAIN:
                return
        self.ep.unregister(fd)  # peer closed: keep the fd until release, stop polling it

    def _full(self, num: int | None) -> None:
        """This shard can take no more: stop accepting (the rest wait in the queue)."""
        self.full_errno = num
        self._report()  # now: the coordinator stops the clients on this

    def _report(self, releasing: bool = False) -> None:
        self.rep.send(
            SinkProgress(
                index=self.plan.index,
                accepted=self.held(),
                full_errno=self.full_errno or 0,
                guard="memory" if self.guarded else None,
                rss=self.stats.rss(),
                cpu=sum(os.times()[:2]),
                releasing=releasing,
            )
        )

    def held(self) -> int:
        return len(self.fds)

    def _drain_listeners(self) -> int:
        """Accept from the listeners with a queue; returns how many were accepted."""
        if self.full_errno is not None or self.guarded:
            return 0
        if self.multishot is not None:
            return self._drain_multishot(self.multishot)
        before = self.held()
        for fd, _events in self.listen_ep.poll(0, len(self.listeners)):
            self._accept(self.listeners[fd])
        return self.held() - before

    def _drain_multishot(self, ms: MultishotAccept) -> int:
        got, failed = ms.drain(self.fds.extend if self.plan.mode == "hold" else self._watch_all)
        if failed is not None:
            ms.stop()
            self._full(failed)
        elif self._over_memory():
            ms.stop()
        return got

    def release(self) -> None:
        close_with_rst(self.fds)

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._stop)
        self.use_engine()
        self.rep.send(SinkReady(self.plan.index, os.getpid(), self.stats.rss(), self.engine,
                                self.refused))  # fmt: skip
        last, wait, reported = 0.0, ACCEPT_EVERY, -1
        while not self.closing:
            for fd, events in self.ep.poll(wait, 4096):
                self._serve(fd, events)
            got = self._drain_listeners()
            wait = ACCEPT_EVERY if got else min(wait * 2, IDLE_EVERY)
            now = time.monotonic()
            if now - last > 0.25 and (self.held() != reported or now - last > 2):
                last, reported = now, self.held()
                self._report()
        self._report(releasing=True)
        self.release()
        self.rep.send(Released(self.plan.index, self.held()))


class ThreadSink(Sink):
    """One thread per connection, blocked in recv() (echoing when asked): the model
    whose ceiling is the task limits, and whose cost per connection is a thread's
    (16 KiB kernel stack, task_struct, page tables, RSS: docs/limits.md §6)."""

    guard_every = THREAD_GUARD_EVERY

    def __init__(self, plan: SinkPlan, rep: Reporter) -> None:
        super().__init__(plan, rep)
        self.conns: list[socket.socket] = []

    def held(self) -> int:
        return len(self.conns)

    def _conversation(self, conn: socket.socket) -> None:
        echo = self.plan.mode == "echo"
        try:
            while data := conn.recv(READ_SIZE):
                if echo:
                    conn.sendall(data)
        except OSError:
            pass

    def _accept(self, sock: socket.socket) -> None:
        for i in range(ACCEPT_BATCH):
            if i % self.chunk == 0 and i and self._over_memory():
                return
            try:
                conn, _addr = sock.accept()
            except BlockingIOError:
                self._over_memory()
                return
            except OSError as exc:
                return self._full(exc.errno)
            conn.setblocking(True)
            try:
                threading.Thread(target=self._conversation, args=(conn,), daemon=True).start()
            except RuntimeError:  # "can't start new thread": pthread_create said EAGAIN
                conn.close()
                return self._full(errno.EAGAIN)
            self.conns.append(conn)

    def use_engine(self) -> None:
        """Its accepts hand each connection to a thread of its own, one at a time: no
        io_uring."""

    def release(self) -> None:
        """RST on exit: SO_LINGER 0 now; the fds close when the process exits (a
        close() here would not wake the threads blocked in recv on them)."""
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)


def run_sink(plan: SinkPlan, rep: Reporter) -> None:
    raise_nofile(plan.nofile)
    (ThreadSink if plan.io_model == "threads" else Sink)(plan, rep).run()

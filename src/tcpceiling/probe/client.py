"""A client worker: opens its share of connections and holds them as raw fds.

Per connection: socket(), IP_BIND_ADDRESS_NO_PORT + bind(src, 0) when a source is
set (so bind() reserves no port, unlike tcpkali: shared brief §1.2), non-blocking
connect(), then epoll for completion (the watch is removed once it completes).
Established fds live in an array('i'); no Python object outlives its connection.
Signals: SIGUSR1 stop opening, SIGTERM release (RST via SO_LINGER 0) and exit.
"""

from __future__ import annotations

import errno
import os
import resource
import select
import signal
import socket
import struct
import time
from array import array
from collections import Counter
from dataclasses import dataclass

from tcpceiling.probe.errnos import ERRNO_CONSTRAINT
from tcpceiling.probe.histogram import Histogram
from tcpceiling.probe.procs import Reporter

IP_BIND_ADDRESS_NO_PORT = 24  # include/uapi/linux/in.h
LINGER_RST = struct.pack("ii", 1, 0)
REPORT_EVERY = 0.25
DONE_EVENTS = select.EPOLLERR | select.EPOLLHUP
TIMEOUTS_ARE_A_LIMIT = 10


@dataclass(frozen=True)
class ClientPlan:
    index: int
    share: int
    tuples: tuple[tuple[str | None, str, int], ...]  # (source or None, dst host, dst port)
    nofile: int | None = None
    rate: float | None = None
    connect_timeout: float = 5.0
    batch: int = 64
    slab_limit: int = 0  # stop before Slab grows past this (measure.slab_limit)


def raise_nofile(cap: int | None) -> int:
    """Soft limit to the hard limit (or to cap, which may also lower it); returns soft."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if cap is None else (min(cap, hard) if hard != resource.RLIM_INFINITY else cap)
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard if cap is None else want))
    return want


class SelfStats:
    """/proc files kept open from the start, so reading them needs no new fd even
    when the worker sits at its RLIMIT_NOFILE."""

    def __init__(self) -> None:
        self.statm = os.open("/proc/self/statm", os.O_RDONLY)
        self.meminfo = os.open("/proc/meminfo", os.O_RDONLY)
        self.page = os.sysconf("SC_PAGE_SIZE")

    def rss(self) -> int:
        return int(os.pread(self.statm, 256, 0).split()[1]) * self.page

    def meminfo_field(self, name: bytes) -> int:
        text = os.pread(self.meminfo, 8192, 0)
        start = text.index(name) + len(name)
        return int(text[start : text.index(b"kB", start)]) * 1024


def close_with_rst(fds: array[int]) -> None:
    """Close with SO_LINGER 0: an RST instead of a FIN, so no TIME_WAIT stays behind."""
    for fd in fds:
        try:
            s = socket.socket(fileno=fd)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
            s.close()
        except OSError:
            pass


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class ClientWorker:
    def __init__(self, plan: ClientPlan, rep: Reporter) -> None:
        self.plan, self.rep = plan, rep
        self.fds = array("i")
        self.pending: dict[int, float] = {}
        self.errors: Counter[int] = Counter()
        self.first_errno: int | None = None
        self.limit_errno: int | None = None
        self.hist = Histogram()
        self.exhausted: set[int] = set()
        self.stopping = self.releasing = False
        self.guard: str | None = None
        self.ep: select.epoll | None = None
        self.next_tuple = 0
        self.last_expiry = 0.0
        self.stats = SelfStats()

    # -- signals ---------------------------------------------------------------
    def _on_stop(self, *_: object) -> None:
        self.stopping = True

    def _on_release(self, *_: object) -> None:
        self.stopping = self.releasing = True

    # -- one connection ------------------------------------------------------------
    def _fail(self, num: int) -> None:
        self.errors[num] += 1
        if self.first_errno is None:
            self.first_errno = num
        repeated_timeouts = num == errno.ETIMEDOUT and self.errors[num] >= TIMEOUTS_ARE_A_LIMIT
        if repeated_timeouts or (
            num in ERRNO_CONSTRAINT and num not in (errno.EADDRNOTAVAIL, errno.ETIMEDOUT)
        ):
            self.limit_errno = self.limit_errno or num

    def _pick_tuple(self) -> int | None:
        n = len(self.plan.tuples)
        for _ in range(n):
            i = self.next_tuple % n
            self.next_tuple += 1
            if i not in self.exhausted:
                return i
        return None

    def open_one(self) -> bool:
        """Start one connection; False when no tuple is left or a limit was hit."""
        ti = self._pick_tuple()
        if ti is None:
            return False
        src, host, port = self.plan.tuples[ti]
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            s = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        except OSError as exc:
            self._fail(exc.errno or 0)
            return False
        try:
            if src is not None:
                s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                s.bind((src, 0))
            err = s.connect_ex((host, port))
        except OSError as exc:
            err = exc.errno or 0
        fd = s.detach()
        if err in (errno.EINPROGRESS, 0):
            self.pending[fd] = time.perf_counter()
            self._ep.register(fd, select.EPOLLOUT)
            return True
        os.close(fd)
        self._fail(err)
        if err in (errno.EADDRNOTAVAIL, errno.EADDRINUSE):
            self.exhausted.add(ti)
            return len(self.exhausted) < len(self.plan.tuples)
        return self.limit_errno is None

    @property
    def _ep(self) -> select.epoll:
        assert self.ep is not None
        return self.ep

    # -- completions -----------------------------------------------------------------
    def _socket_error(self, fd: int) -> int:
        s = socket.socket(fileno=fd)
        try:
            return s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) or errno.ECONNRESET
        finally:
            s.detach()

    def drain(self, timeout: float = 0) -> None:
        events_ = self._ep.poll(timeout, 4096)
        now = time.perf_counter()
        for fd, events in events_:
            self._ep.unregister(fd)
            started = self.pending.pop(fd)
            if events & DONE_EVENTS:
                self._fail(self._socket_error(fd))
                os.close(fd)
            else:
                self.fds.append(fd)
                self.hist.add((now - started) * 1e6)
        if self.pending and now - self.last_expiry > 0.1:
            self.last_expiry = now
            self._expire(now)

    def _expire(self, now: float) -> None:
        limit = self.plan.connect_timeout
        for fd in [fd for fd, t in self.pending.items() if now - t > limit]:
            self._ep.unregister(fd)
            del self.pending[fd]
            os.close(fd)
            self._fail(errno.ETIMEDOUT)

    # -- phases ----------------------------------------------------------------------
    def progress(self, kind: str = "progress") -> None:
        self.rep.send(
            type=kind,
            index=self.plan.index,
            established=len(self.fds),
            pending=len(self.pending),
            errors={str(k): v for k, v in self.errors.items()},
            first_errno=self.first_errno,
            limit_errno=self.limit_errno,
            hist=self.hist.counts if kind == "done" else None,
            rss=self.stats.rss(),
            guard=self.guard,
            short=kind == "done" and len(self.fds) < self.plan.share,
        )

    def open_all(self) -> None:
        plan, start = self.plan, time.perf_counter()
        opened, last = 0, start
        more = True
        while more and not self.stopping and opened < plan.share:
            n = min(plan.batch, plan.share - opened)
            if plan.rate:
                due = start + opened / plan.rate
                time.sleep(max(0.0, due - time.perf_counter()))
                n = 1
            for _ in range(n):
                more = self.open_one()
                opened += 1
                self.drain(0)  # right away: the latency is the handshake's, not the batch's
                if not more:
                    break
            if plan.slab_limit and self.stats.meminfo_field(b"Slab:") > plan.slab_limit:
                self.guard = "memory"
                break
            if time.perf_counter() - last > REPORT_EVERY:
                last = time.perf_counter()
                self.progress()
        deadline = time.perf_counter() + plan.connect_timeout + 1
        while self.pending and time.perf_counter() < deadline and not self.releasing:
            self.drain(0.05)

    def release(self) -> None:
        close_with_rst(self.fds)
        self.fds = array("i")

    def run(self) -> None:
        signal.signal(signal.SIGUSR1, self._on_stop)
        signal.signal(signal.SIGTERM, self._on_release)
        soft = raise_nofile(self.plan.nofile)
        base = len(os.listdir("/proc/self/fd")) - 1  # minus the listdir's own fd
        self.ep = select.epoll()  # analyze counts this fd as the epoll overhead
        self.rep.send(
            type="start",
            index=self.plan.index,
            pid=os.getpid(),
            nofile=soft,
            open_fds=base,
            rss=self.stats.rss(),
        )
        self.open_all()
        self.progress("done")
        while not self.releasing:
            time.sleep(0.2)  # signal handlers run during the sleep
        self.release()
        self.rep.send(type="released", index=self.plan.index)


def run_client(plan: ClientPlan, rep: Reporter) -> None:
    ClientWorker(plan, rep).run()

"""Hearing connections complete: one epoll for the connects under way and the held
connections' events (handed to the watch of a real server), a poll() per fast-path
batch, connect timeouts. Established fds live in an array('i'); no Python object
outlives its connection."""

from __future__ import annotations

import errno
import os
import select
import socket
import time
from array import array

from tcpceiling.probe.workers.conns import Conns

DONE_EVENTS = select.EPOLLERR | select.EPOLLHUP
POLL_BAD = select.POLLERR | select.POLLHUP
TICK_S = 0.1  # connect timeouts and the watch's clock, at most this often


class Completions:
    """Connects that complete, fail or time out; the held ones' events."""

    def __init__(self, c: Conns) -> None:
        self.c = c
        self.last_expiry = 0.0

    def socket_error(self, fd: int) -> int:
        s = socket.socket(fileno=fd)
        try:
            return s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) or errno.ECONNRESET
        finally:
            s.detach()

    def drain(self, timeout: float = 0) -> None:
        c = self.c
        ready = c.epoll.poll(timeout, 4096)
        now = time.perf_counter()
        for fd, events in ready:
            started = c.pending.pop(fd, None)
            if started is None:
                c.watching.on_event(fd, events)
            elif events & DONE_EVENTS:
                c.epoll.unregister(fd)
                _host, seq = c.pending_host.pop(fd, ("", c.attempts))
                c.fail(self.socket_error(fd), seq)
                os.close(fd)
            else:
                self._connected(fd, now - started)
        if now - self.last_expiry > TICK_S:
            self.last_expiry = now
            self._expire(now)
            if c.watch is not None:
                c.watch.tick()

    def _connected(self, fd: int, seconds: float) -> None:
        c = self.c
        c.hist.add(seconds * 1e6)
        if c.watch is None:
            c.epoll.unregister(fd)
            c.fds.append(fd)
            return
        c.window.connected(seconds)
        if c.watch.check.kind == "none":
            c.window.answer(seconds)
        c.watch.established(fd, *c.pending_host.pop(fd))

    def _expire(self, now: float) -> None:
        c = self.c
        limit = c.plan.connect_timeout
        for fd in [fd for fd, t in c.pending.items() if now - t > limit]:
            c.epoll.unregister(fd)
            del c.pending[fd]
            _host, seq = c.pending_host.pop(fd, ("", c.attempts))
            os.close(fd)
            c.fail(errno.ETIMEDOUT, seq)

    def complete_batch(self, fds: array[int], took: array[float]) -> None:
        """One poll() for the batch: completed ones are held (all of them, as a rule,
        on loopback), failed ones named, the rest wait on epoll with their start time."""
        if not fds:
            return
        c = self.c
        po = select.poll()
        register = po.register
        for fd in fds:
            register(fd, select.POLLOUT)
        ready = po.poll(0)
        if len(ready) == len(fds) and not any(ev & POLL_BAD for _fd, ev in ready):
            c.fds.extend(fds)
            c.latencies.extend(took)
            return
        events, now = dict(ready), time.perf_counter()
        for fd, t in zip(fds, took, strict=True):
            ev = events.get(fd)
            if ev is None:
                c.pending[fd] = now - t
                c.epoll.register(fd, select.EPOLLOUT)
            elif ev & POLL_BAD:
                c.fail(self.socket_error(fd))
                os.close(fd)
            else:
                c.fds.append(fd)
                c.latencies.append(t)

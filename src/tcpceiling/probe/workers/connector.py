"""Starting connections: socket(), IP_BIND_ADDRESS_NO_PORT + bind(src, 0) when a
source is set (so bind() reserves no port: docs/limits.md §1), non-blocking
connect(), round robin over the tuples that still have ports. One at a time (the
paced path) or in batches with no Python step that is not needed (the fast path,
as benchmarks/cref.c does)."""

from __future__ import annotations

import _socket
import errno
import os
import select
import socket
import time
from array import array

from tcpceiling.probe.workers.conns import Conns

IP_BIND_ADDRESS_NO_PORT = 24  # include/uapi/linux/in.h
STREAM_NONBLOCK = socket.SOCK_STREAM | socket.SOCK_NONBLOCK
Target = tuple[int, tuple[str, int] | None, tuple[str, int]]  # family, bind, connect
Live = list[tuple[int, int, tuple[str, int] | None, tuple[str, int]]]


def start_connect(
    family: int, src: tuple[str, int] | None, dst: tuple[str, int]
) -> tuple[int, int, float]:
    """socket(), IP_BIND_ADDRESS_NO_PORT + bind(src) when a source is given (so bind()
    reserves no port: docs/limits.md §1), and a non-blocking connect():
    (raw fd, connect errno, connect() seconds). socket() failing raises OSError."""
    s = _socket.socket(family, STREAM_NONBLOCK)
    try:
        if src is not None:
            s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            s.bind(src)
        t0 = time.perf_counter()
        err = s.connect_ex(dst)
        return s.detach(), err, time.perf_counter() - t0
    except OSError as exc:  # bind(): the source is not local, and the like
        return s.detach(), exc.errno or 0, 0.0


class Connector:
    """Starts a worker's connections toward its tuples, dropping a tuple once its
    ports are gone (EADDRNOTAVAIL, EADDRINUSE)."""

    def __init__(self, c: Conns) -> None:
        self.c = c
        #: (family, bind address or None, connect address) per tuple, built once.
        self.targets: list[Target] = [
            (
                socket.AF_INET6 if ":" in host else socket.AF_INET,
                None if src is None else (src, 0),
                (host, port),
            )
            for src, host, port in c.plan.tuples
        ]
        self.exhausted: set[int] = set()
        self.live = self._live()
        self.next_tuple = c.plan.first  # the fast path counts connections, bursts of burst

    def _live(self) -> Live:
        """The tuples with ports left: (index, family, bind address, connect address)."""
        return [(i, *t) for i, t in enumerate(self.targets) if i not in self.exhausted]

    def open_one(self) -> bool:
        """Start one connection; False when no tuple is left or a limit was hit."""
        c = self.c
        if not self.live:
            return False
        ti = self.live[self.next_tuple % len(self.live)][0]
        self.next_tuple += 1
        c.attempts += 1
        try:
            fd, err, _took = start_connect(*self.targets[ti])
        except OSError as exc:
            c.fail(exc.errno or 0)
            return False
        if err in (errno.EINPROGRESS, 0):
            c.pending[fd] = time.perf_counter()
            c.epoll.register(fd, select.EPOLLOUT)
            if c.watch is not None:
                c.pending_host[fd] = (c.plan.tuples[ti][1], c.attempts)
            return True
        return self.connect_failed(fd, err, ti)

    def connect_batch(self, n: int) -> tuple[array[int], array[float], int, bool]:
        """Up to n non-blocking connects round robin over the live tuples, with no
        Python step that is not needed (each costs about what a syscall does, by a py-spy
        profile). Returns the started fds, their connect() seconds, the attempts, and
        False when no tuple is left or a limit was hit. A failed connect ends the batch
        (the live tuples may have changed)."""
        fds, took = array("i"), array("f")
        live, k, burst = self.live, self.next_tuple, self.c.plan.burst
        if not live:
            return fds, took, 0, False
        start, inprogress, nl = start_connect, errno.EINPROGRESS, len(live)
        for j in range(n):
            ti, family, src, dst = live[k // burst % nl]
            k += 1
            try:
                fd, err, seconds = start(family, src, dst)
            except OSError as exc:  # socket(): EMFILE, ENFILE, ENOBUFS, ENOMEM
                self.c.fail(exc.errno or 0)
                return self._batch_end(fds, took, k, j + 1, False)
            if err == inprogress or err == 0:
                fds.append(fd)
                took.append(seconds)
                continue
            return self._batch_end(fds, took, k, j + 1, self.connect_failed(fd, err, ti))
        return self._batch_end(fds, took, k, n, True)

    def _batch_end(
        self, fds: array[int], took: array[float], k: int, tried: int, more: bool
    ) -> tuple[array[int], array[float], int, bool]:
        self.next_tuple = k
        self.c.attempts += tried
        return fds, took, tried, more

    def connect_failed(self, fd: int, err: int, ti: int) -> bool:
        os.close(fd)
        self.c.fail(err)
        if err in (errno.EADDRNOTAVAIL, errno.EADDRINUSE):
            self.exhausted.add(ti)
            self.live = self._live()
            return bool(self.live)
        return not self.c.tally.failure.limit

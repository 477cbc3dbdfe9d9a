"""rate's cycles through io_uring: a burst of n connect -> accept -> close cycles in
four submissions, where the epoll path makes five or six system calls per cycle.

1. n sockets (IORING_OP_SOCKET);
2. per socket a linked chain: setsockopt(SO_LINGER 0) with --close rst (a socket
   uring_cmd), setsockopt(IP_BIND_ADDRESS_NO_PORT) + bind(src, 0) with a source, then
   connect; the submission returns once every connect completed (the accepts come
   from a multishot accept on the worker's own listener);
3. and 4. the closes of the side --close names first, then the other's (see
   UringCycles._close_pairs: the side that closes first keeps TIME_WAIT).

The connect latency of a burst is its connects' time over their number (the kernel
runs them one after another inside one io_uring_enter())."""

from __future__ import annotations

import errno
import os
import socket
import struct
import time

from tcpceiling.probe.uring import ring as r
from tcpceiling.probe.uring.connect import sockaddr
from tcpceiling.probe.workers.connector import IP_BIND_ADDRESS_NO_PORT

STEP = r.STEP
SOCKET, CHAIN, CONNECT, ACCEPT = range(4)
LINK = r.IOSQE_IO_LINK | r.IOSQE_CQE_SKIP_SUCCESS
#: a burst's wait for its own loopback connects and accepts: past it they are
#: cancelled and counted as timeouts (a full accept queue drops SYNs)
TIMEOUT = 1.0
CHURN_OPS = (r.OP_SOCKET, r.OP_CONNECT, r.OP_ACCEPT, r.OP_CLOSE, r.OP_URING_CMD, r.OP_BIND)


class UringCycles:
    """A churn worker's bursts on one ring, toward its own listener."""

    def __init__(self, ring: r.Ring, ls: socket.socket, close: str, sources: tuple[str, ...]):
        self.ring, self.ls, self.close = ring, ls, close
        self.family = ls.family
        host, port = ls.getsockname()[:2]
        self.bufs = r.Buffers()
        self.dst = self.bufs.add(sockaddr(self.family, host, port))
        self.srcs = [self.bufs.add(sockaddr(self.family, s, 0)) for s in sources]
        self.one = self.bufs.add(struct.pack("<i", 1))
        self.linger = self.bufs.add(struct.pack("<ii", 1, 0))
        self.turn = 0
        self.accepted: list[int] = []
        ring.prep_accept_multishot(ls.fileno(), ACCEPT * STEP)
        ring.submit()

    def burst(self, n: int) -> tuple[int, float, int]:
        """Up to n cycles: (cycles done, a connect's seconds, the first errno or 0)."""
        n = min(n, self.ring.entries // 4)
        fds, err = self._sockets(n)
        if not fds:
            return 0, 0.0, err
        t0 = time.perf_counter()
        results = self._connects(fds)
        took = (time.perf_counter() - t0) / len(fds)
        good = [fd for fd, res in zip(fds, results, strict=True) if res == 0]
        first = next((-res for res in results if res), 0)
        for fd, res in zip(fds, results, strict=True):
            if res:
                os.close(fd)
        self._close_pairs(good, self._accepts(len(good)))
        return len(good), took, err or first

    def _sockets(self, n: int) -> tuple[list[int], int]:
        ring = self.ring
        for j in range(n):
            ring.prep_socket(self.family, j)
        done = self._wait(n, SOCKET)
        fds = [res for _j, res in sorted(done.items()) if res >= 0]
        bad = next((-res for res in done.values() if res < 0), 0)
        return fds, bad

    def _connects(self, fds: list[int]) -> list[int]:
        ring, rst = self.ring, self.close == "rst"
        for j, fd in enumerate(fds):
            if rst:
                ring.prep_setsockopt(fd, socket.SOL_SOCKET, socket.SO_LINGER, self.linger,
                                     CHAIN * STEP + j, LINK)  # fmt: skip
            if self.srcs:
                src = self.srcs[self.turn % len(self.srcs)]
                self.turn += 1
                ring.prep_setsockopt(fd, socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, self.one,
                                     CHAIN * STEP + j, LINK)  # fmt: skip
                ring.prep(r.OP_BIND, fd, addr=src[0], off=src[1], flags=LINK,
                          user_data=CHAIN * STEP + j)  # fmt: skip
            ring.prep(r.OP_CONNECT, fd, addr=self.dst[0], off=self.dst[1],
                      user_data=CONNECT * STEP + j)  # fmt: skip
        done = self._wait(len(fds), CONNECT)
        return [done.get(j, -errno.ETIMEDOUT) for j in range(len(fds))]

    def _accepts(self, n: int) -> list[int]:
        """The other ends of n connects that completed: in the listener's queue, so the
        multishot accept posts them at the next entry."""
        if len(self.accepted) < n:
            self._wait(n - len(self.accepted), ACCEPT)
        taken, self.accepted = self.accepted[:n], self.accepted[n:]
        return taken

    def _close_pairs(self, clients: list[int], servers: list[int]) -> None:
        """The side --close names first, in one submission, then the other: a close
        through io_uring drops the socket's last reference in deferred task work,
        run when the submission returns and not in submission order, so one
        submission for both ends would not say which sends the first FIN."""
        first, then = (servers, clients) if self.close == "server" else (clients, servers)
        for fds in (first, then):
            for fd in fds:
                self.ring.prep(r.OP_CLOSE, fd, flags=r.IOSQE_CQE_SKIP_SUCCESS,
                               user_data=CHAIN * STEP)  # fmt: skip
            self.ring.submit()

    def _wait(self, expect: int, step: int) -> dict[int, int]:
        """Submit, and wait for `expect` completions of `step` ({index: res}; ring.chains).
        Accepts are kept for the closes whenever they come."""

        def accepts(user: int, res: int, flags: int) -> bool | None:
            if user >> 32 != ACCEPT:
                return None
            self._accepted(res, flags)
            return step == ACCEPT and res >= 0

        return r.chains(self.ring, expect, lambda u: u >> 32 == step, TIMEOUT, accepts)

    def _accepted(self, res: int, flags: int) -> None:
        if res >= 0:
            self.accepted.append(res)
        if not flags & r.CQE_F_MORE:  # ended (an error, a full ring, cancelled): again
            self.ring.prep_accept_multishot(self.ls.fileno(), ACCEPT * STEP)

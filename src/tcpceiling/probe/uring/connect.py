"""The fast path's batches through io_uring: a batch's sockets in one submission
(IORING_OP_SOCKET), then per socket a linked chain, setsockopt(IP_BIND_ADDRESS_NO_PORT)
(a socket uring_cmd) -> bind(src, 0) (IORING_OP_BIND) when a source is set, then
connect (IORING_OP_CONNECT), all in a second submission that returns once every
connect has completed: two system calls per batch where the epoll path makes four
per connection and a poll() per batch. The sockets are non-blocking (SOCK_NONBLOCK),
as the epoll path's: io_uring waits for the handshake itself (it arms a poll when
connect() says EINPROGRESS, io_uring/net.c io_connect).

A connect that has not completed within the connect timeout is cancelled and counted
as ETIMEDOUT, as the epoll path counts it. Each connection of a batch is given the
batch's time over its size as its latency: the kernel runs the connects one after
another within the one io_uring_enter()."""

from __future__ import annotations

import errno
import os
import socket
import struct
import time
from collections.abc import Callable

from tcpceiling.probe.uring import ring as r
from tcpceiling.probe.workers.connector import IP_BIND_ADDRESS_NO_PORT, Connector, Target
from tcpceiling.probe.workers.conns import ClientPlan, Conns

SOCKET, SOCKOPT, BIND, CONNECT = range(4)
STEP = r.STEP


def sockaddr(family: int, host: str, port: int) -> bytes:
    """struct sockaddr_in / sockaddr_in6, as the kernel reads it (port in network order)."""
    if family == socket.AF_INET6:
        return struct.pack("<HH4x16s4x", family, socket.htons(port),
                           socket.inet_pton(family, host))  # fmt: skip
    return struct.pack("<HH4s8x", family, socket.htons(port), socket.inet_aton(host))


def connect_ops(plan: ClientPlan) -> tuple[int, ...]:
    """The operations a worker's batches submit (with a source: setsockopt, bind)."""
    ops: tuple[int, ...] = (r.OP_SOCKET, r.OP_CONNECT, r.OP_ASYNC_CANCEL)
    if any(src is not None for src, _host, _port in plan.tuples):
        ops += (r.OP_URING_CMD, r.OP_BIND)
    return ops


class Addresses:
    """Each tuple's addresses as C buffers that outlive the submissions naming them."""

    def __init__(self, targets: list[Target]) -> None:
        self.bufs = r.Buffers()
        self.dst = [self.bufs.add(sockaddr(fam, *dst)) for fam, _src, dst in targets]
        self.src = [
            None if src is None else self.bufs.add(sockaddr(fam, *src)) for fam, src, _ in targets
        ]
        self.one = self.bufs.add(struct.pack("<i", 1))


class UringBatches:
    """Opens the fast path's batches on one ring; what the epoll path's
    Connector.connect_batch and Completions.complete_batch do together."""

    def __init__(self, c: Conns, connector: Connector, ring: r.Ring) -> None:
        self.c, self.connector, self.ring = c, connector, ring
        self.addrs = Addresses(connector.targets)
        self.most = ring.entries // 3
        self.socket_entries: dict[int, list[bytes]] = {}  # family: entries built once

    def open_batch(self, n: int) -> tuple[int, bool]:
        """Up to n connections (within the ring's room): (tried, more may start)."""
        live, burst = self.connector.live, self.c.plan.burst
        if not live:
            return 0, False
        n = min(n, self.most)
        k = self.connector.next_tuple
        picks = [live[(k + j) // burst % len(live)] for j in range(n)]
        self.connector.next_tuple = k + n
        self.c.attempts += n
        fds, more = self._sockets([p[1] for p in picks])
        if fds:
            more = self._connect(fds, [p[0] for p in picks[: len(fds)]]) and more
        return n, more

    def _sockets(self, families: list[int]) -> tuple[list[int], bool]:
        """One submission of len(families) socket() calls: the fds made, in order,
        and False when one failed (EMFILE, ENFILE, ENOBUFS: the rest are not used)."""
        entries = [self._socket_entry(family, j) for j, family in enumerate(families)]
        self.ring.put(b"".join(entries), len(entries))
        done = self._collect(len(families), lambda _u: True)
        fds: list[int] = []
        for j in range(len(families)):
            res = done[j]
            if res < 0:
                self.c.fail(-res)
                for fd in (done[i] for i in range(j + 1, len(families)) if done[i] >= 0):
                    os.close(fd)
                return fds, False
            fds.append(res)
        return fds, True

    def _socket_entry(self, family: int, j: int) -> bytes:
        """socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0) as the batch's
        j-th entry, built once per family."""
        if family not in self.socket_entries:
            kind = socket.SOCK_STREAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
            self.socket_entries[family] = [r.entry(r.OP_SOCKET, family, off=kind, user_data=i)
                                           for i in range(self.most)]  # fmt: skip
        return self.socket_entries[family][j]

    def _connect(self, fds: list[int], tuples: list[int]) -> bool:
        ring, addrs, link = self.ring, self.addrs, r.IOSQE_IO_LINK | r.IOSQE_CQE_SKIP_SUCCESS
        for j, (fd, ti) in enumerate(zip(fds, tuples, strict=True)):
            src = addrs.src[ti]
            if src is not None:
                ring.prep_setsockopt(fd, socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, addrs.one,
                                     j | SOCKOPT * STEP, link)  # fmt: skip
                ring.prep(r.OP_BIND, fd, addr=src[0], off=src[1], flags=link,
                          user_data=j | BIND * STEP)  # fmt: skip
            dst = addrs.dst[ti]
            ring.prep(r.OP_CONNECT, fd, addr=dst[0], off=dst[1], user_data=j | CONNECT * STEP)
        t0 = time.perf_counter()
        done = self._collect(len(fds), lambda u: u >> 32 == CONNECT)
        per = (time.perf_counter() - t0) / len(fds)
        return self._settle(fds, tuples, done, per)

    def _settle(self, fds: list[int], tuples: list[int], done: dict[int, int],
                per: float) -> bool:  # fmt: skip
        c, more = self.c, True
        for j, fd in enumerate(fds):
            res = done.get(j, -errno.ETIMEDOUT)
            if res == 0:
                c.fds.append(fd)
                c.latencies.append(per)
            elif more:
                more = self.connector.connect_failed(fd, -res, tuples[j])
            else:
                os.close(fd)
                c.fail(-res)
        return more

    def _collect(self, expect: int, final: Callable[[int], bool]) -> dict[int, int]:
        """Submit what is packed and wait for `expect` final completions (past the
        connect timeout, ETIMEDOUT as the epoll path counts it): {index: res}."""
        return r.chains(self.ring, expect, final, self.c.plan.connect_timeout)

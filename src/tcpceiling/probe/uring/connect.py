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
from array import array
from collections.abc import Callable

from tcpceiling.probe.uring import ring as r
from tcpceiling.probe.workers.connector import IP_BIND_ADDRESS_NO_PORT, Connector, Live, Target
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


Run = tuple[int, int, int]  # a tuple's index, its family, how many in a row toward it


def picks(live: Live, burst: int, k: int, n: int) -> list[Run]:
    """Connections k..k+n-1 of the fast path as runs toward one tuple: the j-th goes
    to live[j // burst % len(live)], as Connector.connect_batch picks."""
    runs, j = [], k
    while j < k + n:
        ti, family, _src, _dst = live[j // burst % len(live)]
        count = min(k + n - j, burst - j % burst)
        runs.append((ti, family, count))
        j += count
    return runs


def tuples_of(runs: list[Run], n: int) -> list[int]:
    """The first n connections' tuple indexes, one each (where a batch is read or
    packed connection by connection)."""
    return [ti for ti, _family, count in runs for _ in range(count)][:n]


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
    Connector.connect_batch and Completions.complete_batch do together.

    The interpreter's work per connection is kept to a few C-level steps: a
    batch's entries are copied from ones built once (the sockets' whole, the
    connects' but for the fd and user_data, patched in with two strided copies),
    and a batch whose every socket, or every connect, succeeded in the one wait is
    settled in bulk; only a batch with a failure is read completion by completion."""

    def __init__(self, c: Conns, connector: Connector, ring: r.Ring) -> None:
        self.c, self.connector, self.ring = c, connector, ring
        self.addrs = Addresses(connector.targets)
        self.most = ring.entries // 3
        kind = socket.SOCK_STREAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
        self.socket_entries = {  # per family, socket() entries 0..most-1
            family: b"".join(
                r.entry(r.OP_SOCKET, family, off=kind, user_data=i) for i in range(self.most)
            )
            for family in {family for family, _src, _dst in connector.targets}
        }
        self.order = array("i", range(self.most))  # the sockets' user_data, low halves
        self.connect_entries = (  # per tuple without a source: its connect(), fd 0
            [r.entry(r.OP_CONNECT, 0, addr=addr, off=size) for addr, size in self.addrs.dst]
            if all(src is None for src in self.addrs.src)
            else None
        )
        self.connect_users = array("Q", (j | CONNECT * STEP for j in range(self.most)))

    def open_batch(self, n: int) -> tuple[int, bool]:
        """Up to n connections (within the ring's room): (tried, more may start)."""
        live, burst = self.connector.live, self.c.plan.burst
        if not live:
            return 0, False
        n = min(n, self.most)
        k = self.connector.next_tuple
        runs = picks(live, burst, k, n)
        self.connector.next_tuple = k + n
        self.c.attempts += n
        fds, more = self._sockets(runs, n)
        if fds:
            more = self._connect(fds, runs) and more
        return n, more

    def _sockets(self, runs: list[Run], n: int) -> tuple[list[int], bool]:
        """One submission of n socket() calls: the fds made, in order, and False
        when one failed (EMFILE, ENFILE, ENOBUFS: the rest are not used)."""
        if len({family for _ti, family, _count in runs}) == 1:
            self.ring.put(self.socket_entries[runs[0][1]], n)
        else:
            self.ring.put(self._mixed_sockets(runs), n)
        started = time.perf_counter()
        cqes = r.gather(self.ring, n, self.c.plan.connect_timeout)
        got = array("i", cqes)
        results = got[2::4]
        if len(results) == n and got[0::4] == self.order[:n] and min(results) >= 0:
            return results.tolist(), True  # every socket made, in order
        done = self._collect(n, lambda _u: True, cqes, started)
        fds: list[int] = []
        for j in range(n):
            res = done[j]
            if res < 0:
                self.c.fail(-res)
                for fd in (done[i] for i in range(j + 1, n) if done[i] >= 0):
                    os.close(fd)
                return fds, False
            fds.append(res)
        return fds, True

    def _mixed_sockets(self, runs: list[Run]) -> bytes:
        """A batch's socket() entries where its tuples are of both families."""
        entries, j = [], 0
        for _ti, family, count in runs:
            entries.append(self.socket_entries[family][64 * j : 64 * (j + count)])
            j += count
        return b"".join(entries)

    def _connect(self, fds: list[int], runs: list[Run]) -> bool:
        if self.connect_entries is None:
            self._pack_chains(fds, tuples_of(runs, len(fds)))
        else:
            raw = bytearray(b"".join([self.connect_entries[ti] * count for ti, _f, count in runs]))
            del raw[64 * len(fds) :]
            view = memoryview(raw)
            view.cast("i")[1::16] = array("i", fds)  # sqe->fd, at byte 4
            view.cast("Q")[4::8] = self.connect_users[: len(fds)]  # sqe->user_data, at 32
            self.ring.put(raw, len(fds))
        t0 = time.perf_counter()
        cqes = r.gather(self.ring, len(fds), self.c.plan.connect_timeout)
        got = array("i", cqes)
        if len(got) == 4 * len(fds) and not any(got[2::4]):
            # every chain's connect succeeded (a failed step's completion has res < 0)
            self.c.fds.extend(fds)
            self.c.hist.add((time.perf_counter() - t0) / len(fds) * 1e6, len(fds))
            return True
        done = self._collect(len(fds), lambda u: u >> 32 == CONNECT, cqes, t0)
        per = (time.perf_counter() - t0) / len(fds)
        return self._settle(fds, tuples_of(runs, len(fds)), done, per)

    def _pack_chains(self, fds: list[int], tuples: list[int]) -> None:
        """Per socket: setsockopt -> bind -> connect where its tuple has a source."""
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

    def _collect(self, expect: int, final: Callable[[int], bool], first: bytes,
                 started: float) -> dict[int, int]:  # fmt: skip
        """The rest of a gather(): wait for `expect` final completions in all (past the
        connect timeout from `started`, ETIMEDOUT as the epoll path counts it):
        {index: res}."""
        return r.chains(self.ring, expect, final, self.c.plan.connect_timeout, None,
                        r.unpack(first), started)  # fmt: skip

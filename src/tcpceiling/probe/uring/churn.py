"""rate's cycles through io_uring: a burst of n connect -> accept -> close cycles in
three submissions, where the epoll path makes five or six system calls per cycle.
Both ends are direct descriptors (slots of the ring's registered table, in no fd
table): a socket made into a slot can be linked to the requests that use it, so

1. per cycle one linked chain: socket() into the cycle's slot, setsockopt(SO_LINGER 0)
   with --close rst (a socket uring_cmd), setsockopt(IP_BIND_ADDRESS_NO_PORT) +
   bind(src, 0) with a source, then connect; the submission returns once every
   cycle ended, accepted or failed. No step of a chain posts a completion when all
   goes well (IOSQE_CQE_SKIP_SUCCESS, the connect too): a cycle's success is its
   accept, from one multishot accept on the worker's own listener, into slots the
   kernel allocates above the cycles';
2. and 3. the closes of the side --close names first, then the other's (see
   UringCycles._close_pairs: the side that closes first keeps TIME_WAIT).

One completion per cycle reaches the interpreter, the accept's (a connect's too was
half the interpreter's work per cycle, and half the io_uring_complete events a trace
filters). A failure keeps its errno: the step that failed posts it and the rest of
its chain is cancelled, so the connect posts ECANCELED and is given that errno.
The registered table's size counts against RLIMIT_NOFILE, its sockets do not;
struct file is still allocated for each, so fs.file-max (ENFILE) binds as it does
for the epoll path.

The connect latency of a burst is its cycles' time (socket, connect, accept) over
their number: the kernel runs them one after another inside one io_uring_enter()."""

from __future__ import annotations

import errno
import socket
import struct
import time

from tcpceiling.probe.uring import ring as r
from tcpceiling.probe.uring.connect import sockaddr
from tcpceiling.probe.workers.connector import IP_BIND_ADDRESS_NO_PORT

STEP = r.STEP
CHAIN, CONNECT, ACCEPT, CLOSE = range(4)
SKIP = r.IOSQE_CQE_SKIP_SUCCESS
LINK = r.IOSQE_IO_LINK | SKIP
FIXED = r.IOSQE_FIXED_FILE
#: a burst's wait for its own loopback connects and accepts: past it they are
#: cancelled and counted as timeouts (a full accept queue drops SYNs)
TIMEOUT = 1.0
#: submission entries of a churn ring: a burst of URING_BURST (rate/config.py) cycles
#: of up to five entries each fits in one submission
CHURN_ENTRIES = 2048
CHURN_OPS = (r.OP_SOCKET, r.OP_CONNECT, r.OP_ACCEPT, r.OP_CLOSE, r.OP_URING_CMD, r.OP_BIND)


class UringCycles:
    """A churn worker's bursts on one ring, toward its own listener: cycle j's client
    is slot j, the accepted ends are allocated from slot `most` up."""

    def __init__(self, ring: r.Ring, ls: socket.socket, close: str, sources: tuple[str, ...]):
        self.ring, self.ls, self.close = ring, ls, close
        self.most = ring.entries // 5  # a cycle packs up to five entries: a chain
        # split over two submissions would fail (its head's link ends with the first)
        r.register_direct(ring, 2 * self.most, self.most)
        self.family = ls.family
        host, port = ls.getsockname()[:2]
        self.bufs = r.Buffers()
        self.dst = self.bufs.add(sockaddr(self.family, host, port))
        self.srcs = [self.bufs.add(sockaddr(self.family, s, 0)) for s in sources]
        self.one = self.bufs.add(struct.pack("<i", 1))
        self.linger = self.bufs.add(struct.pack("<ii", 1, 0))
        self.turn = 0
        self.accepted: list[int] = []
        self.heads = [self._head(j) for j in range(self.most)]
        self.chain = len(self.heads[0]) // 64 + 1 + 2 * bool(self.srcs)  # entries per cycle
        self.tails = [self._connect(j) for j in range(self.most)]
        self.whole = b"".join(h + t for h, t in zip(self.heads, self.tails, strict=True))
        self.closes = [r.entry(r.OP_CLOSE, 0, file_index=slot + 1,
                               flags=SKIP, user_data=CLOSE * STEP)
                       for slot in range(2 * self.most)]  # fmt: skip
        self._arm()
        ring.submit()

    def burst(self, n: int) -> tuple[int, float, int]:
        """Up to n cycles: (cycles done, a connect's seconds, the first errno or 0).
        A cycle is done when its other end was accepted; one neither accepted nor
        failed by TIMEOUT (connected, its handshake's last ACK lost) timed out."""
        n = min(n, self.most)
        t0 = time.perf_counter()
        failures = self._cycles(n)
        took = (time.perf_counter() - t0) / n
        servers, self.accepted = self.accepted, []
        self._close_pairs(n, servers)
        ended = len(servers) + len(failures) >= n
        first = next(iter(failures.values()), 0) or (0 if ended else errno.ETIMEDOUT)
        return len(servers), took, first

    def _head(self, j: int) -> bytes:
        """Cycle j's chain up to its bind or connect, built once: socket() into slot j,
        SO_LINGER 0 with --close rst."""
        out = r.entry(r.OP_SOCKET, self.family, off=socket.SOCK_STREAM, file_index=j + 1,
                      flags=LINK, user_data=CHAIN * STEP + j)  # fmt: skip
        if self.close == "rst":
            out += self._setsockopt(j, socket.SOL_SOCKET, socket.SO_LINGER, self.linger)
        return out

    def _setsockopt(self, j: int, level: int, name: int, value: tuple[int, int]) -> bytes:
        """Ring.prep_setsockopt's entry, built once."""
        return r.entry(r.OP_URING_CMD, j, off=r.SOCKET_URING_OP_SETSOCKOPT,
                       addr=level | name << 32, file_index=value[1], addr3=value[0],
                       flags=LINK | FIXED, user_data=CHAIN * STEP + j)  # fmt: skip

    def _connect(self, j: int) -> bytes:
        dst = self.dst
        return r.entry(r.OP_CONNECT, j, addr=dst[0], off=dst[1], flags=FIXED | SKIP,
                       user_data=CONNECT * STEP + j)  # fmt: skip

    def _bind(self, j: int) -> bytes:
        """Cycle j's bind to the next source in turn (IP_BIND_ADDRESS_NO_PORT first)."""
        src = self.srcs[self.turn % len(self.srcs)]
        self.turn += 1
        nobind = self._setsockopt(j, socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, self.one)
        return nobind + r.entry(r.OP_BIND, j, addr=src[0], off=src[1], flags=LINK | FIXED,
                                user_data=CHAIN * STEP + j)  # fmt: skip

    def _cycles(self, n: int) -> dict[int, int]:
        """n chains copied in from the entries built at the start (a bind packed per
        cycle only with sources), submitted; waited for until each was accepted or
        failed (ring.chains: only a failed connect posts). {cycle: errno} of those
        that failed, ETIMEDOUT for one cancelled at TIMEOUT."""
        if self.srcs:
            raw = b"".join(self.heads[j] + self._bind(j) + self.tails[j] for j in range(n))
        else:
            raw = self.whole[: 64 * self.chain * n]
        self.ring.put(raw, self.chain * n)

        def aside(user: int, res: int, flags: int) -> bool | None:
            kind = user >> 32
            if kind == ACCEPT:
                self._accepted(res, flags)
                return res >= 0
            return False if kind == CLOSE else None  # a close's EBADF: an empty slot

        expect = n - len(self.accepted)
        done = r.chains(self.ring, expect, lambda u: u >> 32 == CONNECT, TIMEOUT, aside)
        return {j: -res for j, res in done.items()}

    def _close_pairs(self, n: int, servers: list[int]) -> None:
        """The side --close names first, in one submission, then the other: a close
        drops the socket's last reference in deferred task work, run when the
        submission returns and not in submission order, so one submission for both
        ends would not say which sends the first FIN. Every client slot is closed,
        a failed connect's too (an empty slot's EBADF is read and dropped)."""
        clients = range(n)
        first, then = (servers, clients) if self.close == "server" else (clients, servers)
        closes = self.closes
        for slots in (first, then):
            self.ring.put(b"".join([closes[slot] for slot in slots]), len(slots))
            self.ring.submit()

    def _accepted(self, res: int, flags: int) -> None:
        if res >= 0:
            self.accepted.append(res)
        if not flags & r.CQE_F_MORE:  # ended (an error, a full ring, cancelled): again
            self._arm()

    def _arm(self) -> None:
        """A multishot accept into allocated slots."""
        self.ring.prep_accept_multishot(self.ls.fileno(), ACCEPT * STEP, direct=True)

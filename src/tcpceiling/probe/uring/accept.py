"""The sink's accepts through io_uring: one multishot accept per listener
(IORING_OP_ACCEPT with IORING_ACCEPT_MULTISHOT, Linux 5.19) posts a completion per
accepted connection, read from the shared ring at each of the sink's ticks: no
accept() call per connection. With DEFER_TASKRUN the accepts themselves run when
the sink enters the kernel at its tick, so connections wait in the accept queue in
between as they do under epoll.

A multishot accept ends on an error (EMFILE, ENFILE, ENOMEM: the shard is full, as
with accept()) or when the completion ring overflowed; it is armed again unless the
shard is full or stopped."""

from __future__ import annotations

import errno
from array import array
from collections.abc import Callable, Iterable, Sequence
from functools import reduce
from operator import and_

from tcpceiling.probe.uring import ring as r

#: A sink's completion ring: the accepts of one tick (20 ms at up to 400,000/s)
COMPLETIONS = 8192
ACCEPT_OPS = (r.OP_ACCEPT, r.OP_ASYNC_CANCEL)
CANCEL = 1 << 40  # the user_data of a cancel's own completion (a listener's is its fd)


class MultishotAccept:
    """Multishot accepts on a sink's listeners, drained once per tick."""

    def __init__(self, ring: r.Ring, listeners: Iterable[int]) -> None:
        self.ring, self.listeners = ring, tuple(listeners)
        self.stopped = False
        for fd in self.listeners:
            self._arm(fd)
        ring.submit()

    def _arm(self, fd: int) -> None:
        self.ring.prep_accept_multishot(fd, user_data=fd)

    def drain(self, take: Callable[[Sequence[int]], None]) -> tuple[int, int | None]:
        """Hand every connection accepted since the last tick to take(), in one call:
        (how many, the errno that ended the accepts or None)."""
        ring = self.ring
        ring.submit()
        raw = ring.reap_raw()
        if not raw:
            return 0, None
        got = array("i", raw)  # per completion: listener (low, high), res, flags
        results = got[2::4]
        if min(results) >= 0 and reduce(and_, got[3::4]) & r.CQE_F_MORE and not any(got[1::4]):
            take(results)  # the usual tick: connections only, every accept still armed
            return len(results), None
        return self._one_by_one(r.unpack(raw), take)

    def _one_by_one(self, done: list[r.Completion],
                    take: Callable[[Sequence[int]], None]) -> tuple[int, int | None]:  # fmt: skip
        """A tick with an accept that ended (re-armed unless it failed or was
        stopped) or a cancel's completion among the connections."""
        fds: list[int] = []
        failed = None
        for listener, res, flags in done:
            if listener == CANCEL:
                continue
            if res >= 0:
                fds.append(res)
            elif res != -errno.ECANCELED:
                failed = -res
            if not flags & r.CQE_F_MORE and failed is None and not self.stopped:
                self._arm(listener)
        take(fds)
        return len(fds), failed

    def stop(self) -> None:
        """Accept no more (the memory guard, a full shard): the rest wait in the queue."""
        if self.stopped:
            return
        self.stopped = True
        for fd in self.listeners:
            self.ring.prep(r.OP_ASYNC_CANCEL, -1, addr=fd, user_data=CANCEL)
        self.ring.submit()

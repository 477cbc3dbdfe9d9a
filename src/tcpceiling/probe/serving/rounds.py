"""The rounds a Watch makes over the connections it holds, on its clock: checks
past their timeout expired, settled ones served, the sweep that counts the
served ones still open (one non-blocking poll(): the count the result prints, not a
counter's peak), the --check-every re-checks on a rotating sample, and the
protocol's keep-alive pings."""

from __future__ import annotations

import select
import time
from typing import TYPE_CHECKING

from tcpceiling.probe.serving import checks
from tcpceiling.probe.serving.state import SILENT, Checking

if TYPE_CHECKING:
    from tcpceiling.probe.serving.watch import Watch

RECHECK_SAMPLE = 64  # connections re-checked per --check-every round (bounded cost)
SWEEP_EVENTS = select.POLLIN | select.POLLRDHUP | select.POLLERR | select.POLLHUP


class Rounds:
    """Sweeps, re-checks and pings over one worker's held connections."""

    def __init__(self, watch: Watch) -> None:
        self.w = watch
        self.cursor = 0
        self.sweeps = 0
        self.verified: int | None = None  # served and open at the latest sweep
        self.best = 0  # the most any sweep counted

    def tick(self) -> None:
        """Expire checks past their timeout; ping held connections and start a
        --check-every round when due."""
        w = self.w
        now = time.monotonic()
        for fd in [fd for fd, p in w.checking.items() if p.deadline < now]:
            self._expire(fd, w.checking.pop(fd))
        settled = [fd for fd, s in w.settling.items() if s.until <= now]
        for fd in settled:
            w.succeed(fd)
        w.decide()
        if settled and w.good > self.best:
            self.verify()  # a new high, verified while it stands (once a tick)
        if w.check.ping_every and now >= w.next_ping:
            w.next_ping = now + w.check.ping_every
            self.ping_all()
        if w.every and now >= w.next_round:
            w.next_round = now + w.every
            self.recheck()

    def _expire(self, fd: int, pending: Checking) -> None:
        """No verdict within the timeout: held (no check), an unexpected reply (the
        server said something, just not what the check expects), or silent."""
        w = self.w
        if w.check.kind == "none":
            w.succeed(fd)
            return
        if w.verdicts is not None and not pending.again:
            w.verdicts(w.timeout, False)
        if pending.buf:
            w.drop(fd, "error_reply", "unexpected reply: " + checks.first_line(pending.buf))
            return
        w.move(fd, SILENT)
        w.fail("silent", w.streak.latest if pending.again else w.seq_of.get(fd, -1))
        if pending.again:
            w.totals["went_silent"] += 1
        else:
            w.late[fd] = pending

    def verify(self) -> int:
        """Sweep the served connections with one non-blocking poll(): a close or a
        word not yet read is heard now. Returns (and keeps) how many are still open."""
        w = self.w
        po = select.poll()
        for fd in w.good_fds():
            po.register(fd, SWEEP_EVENTS)
        for fd, events in po.poll(0):
            if fd in w.state:
                w.on_event(fd, epoll_events(events))
        self.verified = w.good
        self.best = max(self.best, w.good)
        self.sweeps += 1
        return w.good

    def ping_all(self) -> None:
        """The protocol's keep-alive on every good connection with no check under way
        (MQTT PINGREQ; the PINGRESP is read as held data)."""
        w = self.w
        ping = w.check.recheck("")
        for fd in [fd for fd in w.good_fds() if fd not in w.checking]:
            if ping and w.replies.write(fd, ping):
                w.totals["pings"] += 1

    def recheck(self) -> None:
        """Re-send the check on a rotating sample of held connections."""
        w = self.w
        fds = [fd for fd in w.state if fd not in w.checking]
        if not fds or not w.check.repeatable:
            return
        start = self.cursor % len(fds)
        for fd in (fds[start:] + fds[:start])[:RECHECK_SAMPLE]:
            w.send_check(fd, again=True)
        self.cursor += RECHECK_SAMPLE


def epoll_events(poll_events: int) -> int:
    """poll() bits as the epoll bits on_event reads (the values agree on Linux, but
    say so rather than rely on it)."""
    out = 0
    for p_bit, e_bit in (
        (select.POLLIN, select.EPOLLIN),
        (select.POLLRDHUP, select.EPOLLRDHUP),
        (select.POLLHUP, select.EPOLLHUP),
        (select.POLLERR, select.EPOLLERR),
    ):
        if poll_events & p_bit:
            out |= e_bit
    return out

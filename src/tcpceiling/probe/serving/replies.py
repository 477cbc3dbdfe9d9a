"""What the server says on a connection, read and judged: the answer to a check
(framed first: an HTTP body is never a reply of its own), its words right after a
passing answer (a refusal while the connection settles), and what it says on a held
connection (a ping to answer, a close frame). The Watch it serves keeps the states;
this class only reads bytes and tells the Watch what they mean."""

from __future__ import annotations

import os
import select
import time
from typing import TYPE_CHECKING

from tcpceiling.probe.serving import checks
from tcpceiling.probe.serving.state import Checking, Settling

if TYPE_CHECKING:
    from tcpceiling.probe.serving.watch import Watch

SETTLE_RTTS = 4


class Replies:
    """Reads and judges every byte the server sends on one worker's connections."""

    def __init__(self, watch: Watch) -> None:
        self.w = watch

    def on_event(self, fd: int, events: int) -> None:
        """Data, EOF or reset on a checked or held connection."""
        w = self.w
        pending = w.checking.get(fd) or w.late.get(fd)
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            w.drop(fd, "reset", self.pending_text(fd))
            return
        if not data:
            w.drop(fd, "closed", self.pending_text(fd))
            return
        data = self._past_body(fd, data)
        if not data:
            return
        if pending is not None:
            pending.buf = (pending.buf + data)[: checks.MAX_REPLY]
            if self._answer_pings(fd, pending):
                self._judge(fd, pending)
        elif fd in w.settling:
            self._settling_data(fd, w.settling[fd], data)
        elif fd in w.state:
            self._held(fd, data)
        if events & select.EPOLLRDHUP and fd in w.state:
            # the reply and the server's close were both waiting: it was served, and
            # is gone already (a read returns the data first, the EOF only after)
            w.drop(fd, "closed", self.pending_text(fd))

    def _past_body(self, fd: int, data: bytes) -> bytes:
        """What follows the body of the reply still coming on fd (all of it if none)."""
        body = self.w.bodies.get(fd)
        if body is None:
            return data
        rest = body.feed(data)
        if body.done:
            del self.w.bodies[fd]
        return rest

    def _held(self, fd: int, data: bytes) -> None:
        """The server spoke on a held connection: answer a ping, or hear it close."""
        said = self.w.check.held(data)
        if said.closing is not None:
            self.w.drop(fd, "closed", said.closing)
        elif said.reply:
            self.write(fd, said.reply)

    def _settling_data(self, fd: int, settling: Settling, data: bytes) -> None:
        """The server spoke right after the passing reply: a refusal in its words
        ends the connection as refused; a ping is answered."""
        settling.words = (settling.words + data)[: checks.MAX_REPLY]
        said = self.w.check.held(data)
        refusal = said.closing or self.w.check.refusal(settling.words)
        if refusal is not None:
            self.w.drop(fd, "error_reply", refusal)
        elif said.reply:
            self.write(fd, said.reply)

    def _answer_pings(self, fd: int, pending: Checking) -> bool:
        """Pong the server's pings that arrived while our own check waits for its
        answer; False when the write failed (the connection is gone)."""
        pongs = self.w.check.pongs_within(pending.buf, pending.again)[pending.answered :]
        pending.answered += len(pongs)
        return not pongs or self.write(fd, b"".join(pongs))

    def send_check(self, fd: int, again: bool) -> None:
        """The check's request (made once per host), and its deadline."""
        w = self.w
        host = w.host_of[fd]
        key = (host, again)
        if key not in w.requests:
            made = w.check.recheck(host) if again else w.check.request(host)
            w.requests[key] = made or b""
        sent = w.requests[key]
        if sent and not self.write(fd, sent):
            return
        now = time.monotonic()
        w.checking[fd] = Checking(now + w.timeout, now, sent, again)

    def write(self, fd: int, data: bytes) -> bool:
        try:
            os.write(fd, data)
        except OSError:
            self.w.drop(fd, "reset")
            return False
        return True

    def pending_text(self, fd: int) -> str:
        pending = self.w.checking.get(fd)
        return checks.first_line(pending.buf) if pending and pending.buf else ""

    def _judge(self, fd: int, pending: Checking) -> None:
        w = self.w
        v, body, rest = w.check.framed(pending.buf, pending.sent, pending.again)
        if v.outcome == "more":
            return
        if body is not None:
            w.bodies[fd] = body
        late = w.late.pop(fd, None) is not None
        w.checking.pop(fd, None)
        took = time.monotonic() - pending.started
        if late:  # its timeout was told to the pacing already; served now, late
            w.totals["late"] += 1
        elif not pending.again:
            w.answered += 1
            if w.verdicts is not None:
                w.verdicts(took, True)
        if v.outcome != "ok":
            w.drop(fd, "error_reply", v.text)
        elif pending.again:
            w.totals["rechecked_ok"] += 1
            w.succeed(fd)
        else:  # a late answer's wait was the queue's, not a round trip
            self._settle(fd, 0.0 if late else took, rest)

    def _settle(self, fd: int, took: float, rest: bytes) -> None:
        """The first check passed: served if nothing refuses it within the settle
        time (the frames that came with the reply are heard at once)."""
        settling = self.w.settle(fd, max(self.w.settle_floor, SETTLE_RTTS * took))
        if rest:
            self._settling_data(fd, settling, rest)

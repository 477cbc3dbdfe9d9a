"""What happens to each connection after its handshake, when the peer is a real server.

ESTABLISHED is not served: the kernel completes handshakes into a listener's accept
queue whether or not the server ever accepts them. So every new connection
gets a service check (checks.py) and is then watched for the rest of the run
(EPOLLIN | EPOLLRDHUP on the held fd): the server may answer, refuse with an error
reply, close, reset, or stay silent. With `--check none` a connection that the
server has not closed within the check timeout counts as held (that is all a
check-less probe can know).

Answered is not served either: many servers greet first and check their cap after
(a broker's greeting, then "-ERR max clients" and a close in the next segment). A
connection whose check passed is settling for the settle time (at least `settle`,
and SETTLE_RTTS times the check's own round trip); its server's refusal in words
(checks.Check.refusal), or a close, within it is a refusal, not an eviction. Only
then is it served. A close while settling is undecided, with a word or without
one: a server that evicts its oldest client to admit the newest (saying BYE, or
nothing) closes connections as young as a server that greets and then refuses. A
newer connection served decides it an eviction; no newer one left to settle decides
it a refusal. The worker stops
opening while one is undecided, so the newest can settle (client.py).
`verify()` counts the served ones still open with a poll() sweep:
the count the result prints, not a counter's peak.

When has the server stopped serving? Two signs, counted together up to STREAK_LIMIT:
- failures (closed, reset, refused, silent, timeout, error reply) of connections
  attempted after the latest one that succeeded. Order is by attempt number, not by
  when the verdict came: a check that passes late says nothing of later attempts;
- evictions: good connections the server closes while the number of good ones
  makes no new high. nginx at worker_connections closes idle keep-alive
  connections to serve new ones, so every new one succeeds and the count stays flat.
  A run of evictions with no success between them is one wave, counted
  EVICTION_WAVE: nginx drains about worker_connections/8 at once
  (ngx_drain_connections), so counting each eviction stopped a probe of two
  workers at the first wave of the first one full, while the other had room.
"""

from __future__ import annotations

import os
import select
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from tcpceiling.probe.serving import checks
from tcpceiling.probe.serving.protocols import HttpBody
from tcpceiling.probe.workers.messages import WatchSummary

STREAK_LIMIT = 16
EVICTION_WAVE = 4  # a wave of evictions counts this much toward STREAK_LIMIT
RECHECK_SAMPLE = 64  # connections re-checked per --check-every round (bounded cost)
SETTLE_RTTS = 4
CHECKING, SETTLING, HELD, SERVED, SILENT = "checking", "settling", "held", "served", "silent"
GOOD = (HELD, SERVED)
SWEEP_EVENTS = select.POLLIN | select.POLLRDHUP | select.POLLERR | select.POLLHUP
WATCH_EVENTS = select.EPOLLIN | select.EPOLLRDHUP


@dataclass
class Checking:
    deadline: float
    started: float
    sent: bytes
    again: bool  # a --check-every re-check of a held connection
    buf: bytes = b""
    answered: int = 0  # the server's own pings in buf already answered


@dataclass
class Settling:
    until: float
    words: bytes = b""  # what the server said after the passing reply


#: Told of each first check's verdict: (seconds from the request, answered at all).
Verdicts = Callable[[float, bool], None]


class Watch:
    """Check and watch the connections of one client worker (all state is per fd)."""

    def __init__(
        self,
        ep: select.epoll,
        check: checks.Check,
        timeout: float,
        every: float | None,
        closer: Callable[[int], None],
        settle: float = 0.1,
        verdicts: Verdicts | None = None,
    ) -> None:
        self.ep, self.check, self.timeout, self.every = ep, check, timeout, every
        self.close, self.settle_floor, self.verdicts = closer, settle, verdicts
        self.requests: dict[tuple[str, bool], bytes] = {}
        self.state: dict[int, str] = {}  # every open fd
        self.host_of: dict[int, str] = {}
        self.seq_of: dict[int, int] = {}
        self.checking: dict[int, Checking] = {}  # fds with a request outstanding
        #: silent ones whose first check may still be answered (a server that accepts
        #: late: a worker forked on demand takes a connection from its queue)
        self.late: dict[int, Checking] = {}
        self.bodies: dict[int, HttpBody] = {}  # fds whose reply's body is still coming
        self.settling: dict[int, Settling] = {}
        self.undecided: list[tuple[int, str]] = []  # (attempt, kind): closed while settling
        self.verified: int | None = None  # served and open at the latest sweep
        self.sweeps = self.answered = self.best = 0  # best: the most any sweep counted
        self.totals: Counter[str] = Counter()
        self.replies: Counter[str] = Counter()
        self.failures: list[tuple[int, str]] = []  # (attempt, kind) after the last success
        self.last_success = -1
        self.latest = 0
        self.good = self.high = self.evicted_flat = 0
        self.in_wave = False  # evictions since the last success
        self.next_round = time.monotonic() + (every or 0)
        self.next_ping = time.monotonic() + (check.ping_every or 0)
        self.cursor = 0

    # -- counts ----------------------------------------------------------------
    @property
    def open_count(self) -> int:
        return len(self.state)

    @property
    def limit_kind(self) -> str | None:
        """The failure that ended opening: the server's refusal in its own words when
        there is one in the streak, else its evictions when it evicted since its last
        new high (a queue overflowing beside them is the flood's symptom, not the
        limit), else the commonest kind."""
        if len(self.failures) + self.evicted_flat < STREAK_LIMIT:
            return None
        kinds = Counter(kind for _seq, kind in self.failures)
        if kinds["error_reply"]:
            return "error_reply"
        if self.evicted_flat:  # the server's own doing before its queue's symptoms
            return "evicted"
        return kinds.most_common(1)[0][0]

    def summary(self) -> WatchSummary:
        states = Counter(self.state.values())
        return WatchSummary(
            open=self.open_count,
            served=self.good if self.check.kind != "none" else None,
            held=self.good,
            silent=states[SILENT],
            checking=len(self.checking),
            settling=len(self.settling),
            verified=self.verified,
            sweeps=self.sweeps,
            best=self.best,
            answered=self.answered,
            totals=dict(self.totals),
            replies=dict(self.replies),
            limit_kind=self.limit_kind,
        )

    # -- state and outcomes ----------------------------------------------------------
    def _set(self, fd: int, new: str | None) -> str | None:
        """Move fd to a new state (None: gone), keeping the count of good ones."""
        old = self.state.pop(fd, None)
        self.good += (new in GOOD) - (old in GOOD)
        if new is not None:
            self.state[fd] = new
        return old

    def fail(self, kind: str, seq: int) -> None:
        """A failure of the seq-th attempt (counts toward the limit only when no later
        attempt has succeeded)."""
        self.totals[kind] += 1
        self.latest = max(self.latest, seq)
        if seq > self.last_success:
            self.failures.append((seq, kind))

    def _succeed(self, fd: int) -> None:
        """Served (settled, or held with no check): the latest success so far?"""
        if self.settling.pop(fd, None) is not None:
            self.totals["served"] += 1
        self._set(fd, SERVED if self.check.kind != "none" else HELD)
        seq = self.seq_of.get(fd, -1)
        for older in [u for u in self.undecided if u[0] < seq]:
            self.undecided.remove(older)
            self._evicted()
        self.in_wave = False
        self._new_high()
        if seq > self.last_success:
            self.last_success = seq
            self.failures = [f for f in self.failures if f[0] > seq]

    def _drop(self, fd: int, kind: str, text: str = "") -> None:
        """The server ended this connection: count it, forget it, close our end."""
        seq = self.seq_of.pop(fd, self.latest)
        self.checking.pop(fd, None)
        self.late.pop(fd, None)
        self.bodies.pop(fd, None)
        self.host_of.pop(fd, None)
        settling = self.settling.pop(fd, None)
        if settling is not None and not text:
            text = checks.first_line(settling.words) if settling.words.strip() else ""
        if text:
            self.replies[text] += 1
        if self._set(fd, None) in GOOD:  # it had been served: an eviction
            self._evicted()
        elif settling is not None and kind == "closed":
            # closed while settling, with or without a word: the newest refused, or the
            # oldest evicted (a server that says BYE to its oldest client to admit the
            # newest) - a newer one served tells which
            self.undecided.append((seq, kind))
        else:
            self.fail(kind, seq)
        self.ep.unregister(fd)
        self.close(fd)

    def _evicted(self) -> None:
        self.totals["evicted"] += 1
        if not self.in_wave:
            self.evicted_flat += EVICTION_WAVE
            self.in_wave = True

    def _decide(self) -> None:
        """Undecided closes with no newer connection left checking or settling were
        refusals: the server kept none of the newer ones."""
        if not self.undecided:
            return
        young = [self.seq_of.get(fd, -1) for fd in (*self.checking, *self.settling)]
        newest = max(young, default=-1)
        for seq, kind in [u for u in self.undecided if u[0] > newest]:
            self.undecided.remove((seq, kind))
            self.fail(kind, seq)

    def _new_high(self) -> None:
        """A new high of connections served at once resets the eviction streak."""
        if self.good > self.high:
            self.high, self.evicted_flat = self.good, 0

    # -- events ------------------------------------------------------------------------
    def established(self, fd: int, host: str, seq: int) -> None:
        """A handshake completed: send the check request and wait for the verdict."""
        self.totals["established"] += 1
        self.host_of[fd], self.seq_of[fd] = host, seq
        self.latest = max(self.latest, seq)
        self.state[fd] = CHECKING
        self.ep.modify(fd, WATCH_EVENTS)
        self._send_check(fd, again=False)

    def _send_check(self, fd: int, again: bool) -> None:
        host = self.host_of[fd]
        key = (host, again)
        if key not in self.requests:
            made = self.check.recheck(host) if again else self.check.request(host)
            self.requests[key] = made or b""
        sent = self.requests[key]
        if sent and not self._write(fd, sent):
            return
        now = time.monotonic()
        self.checking[fd] = Checking(now + self.timeout, now, sent, again)

    def on_event(self, fd: int, events: int) -> None:
        """Data, EOF or reset on a checked or held connection."""
        pending = self.checking.get(fd) or self.late.get(fd)
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            self._drop(fd, "reset", self._pending_text(fd))
            return
        if not data:
            self._drop(fd, "closed", self._pending_text(fd))
            return
        data = self._past_body(fd, data)
        if not data:
            return
        if pending is not None:
            pending.buf = (pending.buf + data)[: checks.MAX_REPLY]
            if self._answer_pings(fd, pending):
                self._judge(fd, pending)
        elif fd in self.settling:
            self._settling_data(fd, self.settling[fd], data)
        elif fd in self.state:
            self._held(fd, data)
        if events & select.EPOLLRDHUP and fd in self.state:
            # the reply and the server's close were both waiting: it was served, and
            # is gone already (a read returns the data first, the EOF only after)
            self._drop(fd, "closed", self._pending_text(fd))

    def _past_body(self, fd: int, data: bytes) -> bytes:
        """What follows the body of the reply still coming on fd (all of it if none)."""
        body = self.bodies.get(fd)
        if body is None:
            return data
        rest = body.feed(data)
        if body.done:
            del self.bodies[fd]
        return rest

    def _held(self, fd: int, data: bytes) -> None:
        """The server spoke on a held connection: answer a ping, or hear it close."""
        said = self.check.held(data)
        if said.closing is not None:
            self._drop(fd, "closed", said.closing)
        elif said.reply:
            self._write(fd, said.reply)

    def _settling_data(self, fd: int, settling: Settling, data: bytes) -> None:
        """The server spoke right after the passing reply: a refusal in its words
        ends the connection as refused; a ping is answered."""
        settling.words = (settling.words + data)[: checks.MAX_REPLY]
        said = self.check.held(data)
        refusal = said.closing or self.check.refusal(settling.words)
        if refusal is not None:
            self._drop(fd, "error_reply", refusal)
        elif said.reply:
            self._write(fd, said.reply)

    def _answer_pings(self, fd: int, pending: Checking) -> bool:
        """Pong the server's pings that arrived while our own check waits for its
        answer; False when the write failed (the connection is gone)."""
        pongs = self.check.pongs_within(pending.buf, pending.again)[pending.answered :]
        pending.answered += len(pongs)
        return not pongs or self._write(fd, b"".join(pongs))

    def _write(self, fd: int, data: bytes) -> bool:
        try:
            os.write(fd, data)
        except OSError:
            self._drop(fd, "reset")
            return False
        return True

    def _pending_text(self, fd: int) -> str:
        pending = self.checking.get(fd)
        return checks.first_line(pending.buf) if pending and pending.buf else ""

    def _judge(self, fd: int, pending: Checking) -> None:
        v, body, rest = self.check.framed(pending.buf, pending.sent, pending.again)
        if v.outcome == "more":
            return
        if body is not None:
            self.bodies[fd] = body
        late = self.late.pop(fd, None) is not None
        self.checking.pop(fd, None)
        took = time.monotonic() - pending.started
        if late:  # its timeout was told to the pacing already; served now, late
            self.totals["late"] += 1
        elif not pending.again:
            self.answered += 1
            if self.verdicts is not None:
                self.verdicts(took, True)
        if v.outcome != "ok":
            self._drop(fd, "error_reply", v.text)
        elif pending.again:
            self.totals["rechecked_ok"] += 1
            self._succeed(fd)
        else:  # a late answer's wait was the queue's, not a round trip
            self._settle(fd, 0.0 if late else took, rest)

    def _settle(self, fd: int, took: float, rest: bytes) -> None:
        """The first check passed: served if nothing refuses it within the settle
        time (the frames that came with the reply are heard at once)."""
        self._set(fd, SETTLING)
        wait = max(self.settle_floor, SETTLE_RTTS * took)
        self.settling[fd] = Settling(time.monotonic() + wait)
        if rest:
            self._settling_data(fd, self.settling[fd], rest)

    # -- time ------------------------------------------------------------------------------
    def tick(self) -> None:
        """Expire checks past their timeout; ping held connections and start a
        --check-every round when due."""
        now = time.monotonic()
        for fd in [fd for fd, p in self.checking.items() if p.deadline < now]:
            self._expire(fd, self.checking.pop(fd))
        settled = [fd for fd, s in self.settling.items() if s.until <= now]
        for fd in settled:
            self._succeed(fd)
        self._decide()
        if settled and self.good > self.best:
            self.verify()  # a new high, verified while it stands (at most once a tick)
        if self.check.ping_every and now >= self.next_ping:
            self.next_ping = now + self.check.ping_every
            self._ping_all()
        if self.every and now >= self.next_round:
            self.next_round = now + self.every
            self._recheck_round()

    def _expire(self, fd: int, pending: Checking) -> None:
        """No verdict within the timeout: held (no check), an unexpected reply (the
        server said something, just not what the check expects), or silent."""
        if self.check.kind == "none":
            self._succeed(fd)
            return
        if self.verdicts is not None and not pending.again:
            self.verdicts(self.timeout, False)
        if pending.buf:
            text = "unexpected reply: " + checks.first_line(pending.buf)
            self._drop(fd, "error_reply", text)
            return
        self._set(fd, SILENT)
        self.fail("silent", self.latest if pending.again else self.seq_of.get(fd, -1))
        if pending.again:
            self.totals["went_silent"] += 1
        else:
            self.late[fd] = pending

    def _ping_all(self) -> None:
        """The protocol's keep-alive on every good connection with no check under way
        (MQTT PINGREQ; the PINGRESP is read as held data)."""
        ping = self.check.recheck("")
        for fd in [fd for fd, s in self.state.items() if s in GOOD and fd not in self.checking]:
            if ping and self._write(fd, ping):
                self.totals["pings"] += 1

    def _recheck_round(self) -> None:
        """Re-send the check on a rotating sample of held connections."""
        fds = [fd for fd in self.state if fd not in self.checking]
        if not fds or not self.check.repeatable:
            return
        start = self.cursor % len(fds)
        for fd in (fds[start:] + fds[:start])[:RECHECK_SAMPLE]:
            self._send_check(fd, again=True)
        self.cursor += RECHECK_SAMPLE

    def verify(self) -> int:
        """Sweep the served connections with one non-blocking poll(): a close or a
        word not yet read is heard now. Returns (and keeps) how many are still open."""
        po = select.poll()
        good = [fd for fd, s in self.state.items() if s in GOOD]
        for fd in good:
            po.register(fd, SWEEP_EVENTS)
        for fd, events in po.poll(0):
            if fd in self.state:
                self.on_event(fd, _epoll_events(events))
        self.verified = self.good
        self.best = max(self.best, self.good)
        self.sweeps += 1
        return self.good

    def release(self) -> list[int]:
        """Every fd still open (the caller closes them with RST)."""
        fds = list(self.state)
        tables = (self.state, self.checking, self.late, self.settling, self.host_of, self.seq_of,
                  self.bodies)  # fmt: skip
        for table in tables:
            table.clear()
        self.good = 0
        return fds


def _epoll_events(poll_events: int) -> int:
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

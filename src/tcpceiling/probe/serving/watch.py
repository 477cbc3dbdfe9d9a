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

When the server has stopped serving is the streak's to say (streak.py); what it
says on each connection is read and judged by replies.py; the sweeps, re-checks
and pings are rounds.py's."""

from __future__ import annotations

import select
import time
from collections import Counter
from collections.abc import Callable

from tcpceiling.probe.serving import checks
from tcpceiling.probe.serving.http import HttpBody
from tcpceiling.probe.serving.replies import SETTLE_RTTS, Replies
from tcpceiling.probe.serving.rounds import Rounds
from tcpceiling.probe.serving.state import (
    CHECKING,
    GOOD,
    HELD,
    SERVED,
    SETTLING,
    SILENT,
    Checking,
    Settling,
)
from tcpceiling.probe.serving.streak import EVICTION_WAVE, STREAK_LIMIT, Streak
from tcpceiling.probe.workers.messages import WatchSummary

__all__ = ["EVICTION_WAVE", "SETTLE_RTTS", "STREAK_LIMIT", "Checking", "Settling", "Watch"]

WATCH_EVENTS = select.EPOLLIN | select.EPOLLRDHUP


#: Told of each first check's verdict: (seconds from the request, answered at all).
Verdicts = Callable[[float, bool], None]


class Watch:
    """Check and watch the connections of one client worker: the state of every fd,
    its moves, and the timeouts (all state is per fd)."""

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
        self.answered = self.good = 0
        self.totals: Counter[str] = Counter()
        self.replies_seen: Counter[str] = Counter()
        self.streak = Streak(self.totals)
        self.replies = Replies(self)
        self.rounds = Rounds(self)
        self.next_round = time.monotonic() + (every or 0)
        self.next_ping = time.monotonic() + (check.ping_every or 0)

    # -- counts ----------------------------------------------------------------
    @property
    def open_count(self) -> int:
        return len(self.state)

    @property
    def limit_kind(self) -> str | None:
        return self.streak.limit_kind

    @property
    def undecided(self) -> list[tuple[int, str]]:
        return self.streak.undecided

    @property
    def best(self) -> int:
        return self.rounds.best

    def good_fds(self) -> list[int]:
        return [fd for fd, s in self.state.items() if s in GOOD]

    def summary(self) -> WatchSummary:
        return summarize(self)

    # -- state and outcomes ----------------------------------------------------------
    def move(self, fd: int, new: str | None) -> str | None:
        """Move fd to a new state (None: gone), keeping the count of good ones."""
        old = self.state.pop(fd, None)
        self.good += (new in GOOD) - (old in GOOD)
        if new is not None:
            self.state[fd] = new
        return old

    def fail(self, kind: str, seq: int) -> None:
        self.streak.fail(kind, seq)

    def succeed(self, fd: int) -> None:
        """Served (settled, or held with no check): the latest success so far?"""
        if self.settling.pop(fd, None) is not None:
            self.totals["served"] += 1
        self.move(fd, SERVED if self.check.kind != "none" else HELD)
        self.streak.succeeded(self.seq_of.get(fd, -1), self.good)

    def settle(self, fd: int, wait: float) -> Settling:
        """The first check passed: settling for `wait` seconds (replies.py)."""
        self.move(fd, SETTLING)
        self.settling[fd] = Settling(time.monotonic() + wait)
        return self.settling[fd]

    def drop(self, fd: int, kind: str, text: str = "") -> None:
        """The server ended this connection: count it, forget it, close our end."""
        seq = self.seq_of.pop(fd, self.streak.latest)
        for table in (self.checking, self.late, self.bodies, self.host_of):
            table.pop(fd, None)
        settling = self.settling.pop(fd, None)
        if settling is not None and not text:
            text = checks.first_line(settling.words) if settling.words.strip() else ""
        if text:
            self.replies_seen[text] += 1
        if self.move(fd, None) in GOOD:  # it had been served: an eviction
            self.streak.evicted()
        elif settling is not None and kind == "closed":
            # closed while settling, with or without a word: the newest refused, or the
            # oldest evicted (a server that says BYE to its oldest client to admit the
            # newest) - a newer one served tells which
            self.streak.closed_settling(seq, kind)
        else:
            self.fail(kind, seq)
        self.ep.unregister(fd)
        self.close(fd)

    def decide(self) -> None:
        if self.streak.undecided:
            young = [self.seq_of.get(fd, -1) for fd in (*self.checking, *self.settling)]
            self.streak.decide(max(young, default=-1))

    # -- events ------------------------------------------------------------------------
    def established(self, fd: int, host: str, seq: int) -> None:
        """A handshake completed: send the check request and wait for the verdict."""
        self.totals["established"] += 1
        self.host_of[fd], self.seq_of[fd] = host, seq
        self.streak.seen(seq)
        self.state[fd] = CHECKING
        self.ep.modify(fd, WATCH_EVENTS)
        self.send_check(fd, again=False)

    def send_check(self, fd: int, again: bool) -> None:
        self.replies.send_check(fd, again)

    def on_event(self, fd: int, events: int) -> None:
        self.replies.on_event(fd, events)

    def verify(self) -> int:
        return self.rounds.verify()

    def tick(self) -> None:
        self.rounds.tick()

    def release(self) -> list[int]:
        """Every fd still open (the caller closes them with RST)."""
        fds = list(self.state)
        tables = (self.state, self.checking, self.late, self.settling, self.host_of, self.seq_of,
                  self.bodies)  # fmt: skip
        for table in tables:
            table.clear()
        self.good = 0
        return fds


def summarize(w: Watch) -> WatchSummary:
    """What a worker reports of its connections (messages.WatchSummary)."""
    states = Counter(w.state.values())
    return WatchSummary(
        open=w.open_count,
        served=w.good if w.check.kind != "none" else None,
        held=w.good,
        silent=states[SILENT],
        checking=len(w.checking),
        settling=len(w.settling),
        verified=w.rounds.verified,
        sweeps=w.rounds.sweeps,
        best=w.rounds.best,
        answered=w.answered,
        totals=dict(w.totals),
        replies=dict(w.replies_seen),
        limit_kind=w.limit_kind,
    )

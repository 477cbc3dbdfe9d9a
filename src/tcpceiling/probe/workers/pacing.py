"""How many handshakes and checks a client worker keeps in flight toward a real server.

Opening at full speed measures how fast a server accepts, not how many it holds: a
server that accepts 100 connections a second, its listen() backlog of 32 full, drops
SYNs (ListenOverflows), and the handshakes that retry after the 1 s initial RTO
(RFC 6298 §2.1) look like a server that has stopped. So the opening keeps a window,
as TCP's congestion control does (RFC 5681 §3.1): it grows by one per prompt verdict
until the first sign of a server behind (slow start), by one per window after it
(additive increase), and halves on a sign (multiplicative decrease), at most once per
window of verdicts. The signs: a handshake that took a SYN retransmit (its connect
time past the fastest one by RETRANSMIT_S), a check answered far slower than the
fastest (past SLOW_FACTOR times it and SLOW_FLOOR_S more), a check that timed out.

The window never falls below MIN_WINDOW (unless --max-pending is lower): a server
that stopped answering must still produce its streak of silent connections
(watch.STREAK_LIMIT) within one check timeout. The sink path and `--rate` do not
use it.
"""

from __future__ import annotations

from dataclasses import dataclass

MIN_WINDOW = 16
RETRANSMIT_S = 0.9  # the initial RTO is 1 s; a handshake this much over the fastest retried
SLOW_FACTOR = 4.0
SLOW_FLOOR_S = 0.05


@dataclass
class Window:
    """The in-flight limit for one worker, between MIN_WINDOW and `most`."""

    most: int
    size: float = MIN_WINDOW
    threshold: float = float("inf")  # slow start below it
    fastest_connect: float = float("inf")
    fastest_answer: float = float("inf")
    since_cut: int = 0  # verdicts since the last halving
    cuts: int = 0
    answered: int = 0  # first checks the server answered (served or refused in words)

    @property
    def limit(self) -> int:
        return min(self.most, max(MIN_WINDOW, int(self.size)))

    def connected(self, seconds: float) -> None:
        """A handshake completed after `seconds`."""
        self.fastest_connect = min(self.fastest_connect, seconds)
        if seconds > self.fastest_connect + RETRANSMIT_S:
            self.behind()

    def answer(self, seconds: float) -> None:
        """The server answered a first check after `seconds` (either way)."""
        self.answered += 1
        self.since_cut += 1
        self.fastest_answer = min(self.fastest_answer, seconds)
        slow = max(self.fastest_answer * SLOW_FACTOR, self.fastest_answer + SLOW_FLOOR_S)
        if seconds > slow:
            self.behind()
        elif self.size < self.threshold:
            self.size = min(self.size + 1, self.most)
        else:
            self.size = min(self.size + 1 / self.size, self.most)

    def timed_out(self) -> None:
        """A check got no answer within its timeout."""
        self.since_cut += 1
        self.behind()

    def behind(self) -> None:
        """Halve, unless a halving happened within the last window of verdicts."""
        if self.cuts and self.since_cut < self.limit:
            return
        self.size = self.threshold = max(MIN_WINDOW, self.size / 2)
        self.since_cut = 0
        self.cuts += 1

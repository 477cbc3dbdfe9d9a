"""When has the server stopped serving? Two signs, counted together up to
STREAK_LIMIT:

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

A close while a served connection settles is undecided (a server that greets and
then refuses, or one that evicts its oldest client to admit the newest): a newer
connection served decides it an eviction; no newer one left to settle decides it a
refusal. Plain bookkeeping on attempt numbers, no I/O (watch.py feeds it).
"""

from __future__ import annotations

from collections import Counter

STREAK_LIMIT = 16
EVICTION_WAVE = 4  # a wave of evictions counts this much toward STREAK_LIMIT


class Streak:
    """The verdicts of one worker's connections, by attempt number."""

    def __init__(self, totals: Counter[str]) -> None:
        self.totals = totals  # shared with the watch: every outcome counted once
        self.failures: list[tuple[int, str]] = []  # (attempt, kind) after the last success
        self.undecided: list[tuple[int, str]] = []  # (attempt, kind): closed while settling
        self.last_success = -1
        self.latest = 0
        self.high = self.evicted_flat = 0
        self.in_wave = False  # evictions since the last success

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

    def seen(self, seq: int) -> None:
        self.latest = max(self.latest, seq)

    def fail(self, kind: str, seq: int) -> None:
        """A failure of the seq-th attempt (counts toward the limit only when no later
        attempt has succeeded)."""
        self.totals[kind] += 1
        self.seen(seq)
        if seq > self.last_success:
            self.failures.append((seq, kind))

    def succeeded(self, seq: int, good: int) -> None:
        """The seq-th attempt was served, with `good` served now: older undecided
        closes were evictions, and failures before it no longer count."""
        for older in [u for u in self.undecided if u[0] < seq]:
            self.undecided.remove(older)
            self.evicted()
        self.in_wave = False
        self.new_high(good)
        if seq > self.last_success:
            self.last_success = seq
            self.failures = [f for f in self.failures if f[0] > seq]

    def evicted(self) -> None:
        self.totals["evicted"] += 1
        if not self.in_wave:
            self.evicted_flat += EVICTION_WAVE
            self.in_wave = True

    def closed_settling(self, seq: int, kind: str) -> None:
        """Closed while it settled, with or without a word: which it was, a newer
        connection served or none left will tell."""
        self.undecided.append((seq, kind))

    def decide(self, newest: int) -> None:
        """Undecided closes newer than every connection still checking or settling
        (`newest`) were refusals: the server kept none of the newer ones."""
        for seq, kind in [u for u in self.undecided if u[0] > newest]:
            self.undecided.remove((seq, kind))
            self.fail(kind, seq)

    def new_high(self, good: int) -> None:
        """A new high of connections served at once resets the eviction streak."""
        if good > self.high:
            self.high, self.evicted_flat = good, 0

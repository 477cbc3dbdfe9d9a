"""After the opening stopped on a real server: what it holds at once, found as a
careful client would, its own traffic no longer competing with the cap.

- After evictions (top_up): the server evicts in waves (nginx drains up to 32 idle
  connections at once, ngx_drain_connections) and the stop came after one: add one
  connection at a time, each settled and swept, until it evicts again; then refill
  up to that best and no further, so a hold holds the server at its top.
- After refusals (search): settle, then add connections in steps, each settled and
  swept before the next: twice as many after each step the server took whole (at
  most the opening's window), and after the step it refused in, settle again and go
  on one at a time. Bounded by the worker's share in connections held, by as many
  attempts again as the share, and by FRONTIER_S.

The most served at once is then what the server holds, not what it held while the
probe was still opening (`best` keeps the higher of the two); the Frontier message
says what was done."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

from tcpceiling.probe.workers.conns import Conns
from tcpceiling.probe.workers.messages import Frontier, FrontierEnd
from tcpceiling.probe.workers.opening import Opening

TOP_UP_MOST = 64  # connections added one by one after a stop by evictions
#: after each step, the pause before it is judged: the server's later words on the
#: step's connections (an answer, then a close past its cap) land
FRONTIER_SETTLE = 0.2
#: the failures that end the steps after a stop by refusals (serving/streak.py)
REFUSALS = ("error_reply", "closed", "reset", "refused", "silent", "timeout", "evicted")
FRONTIER_S = 60.0  # the steps end by then, wherever they are
#: before the first step and the first one-at-a-time step: a refused attempt can leave
#: a proxy's port toward its upstream in TIME_WAIT, which connect() takes over only
#: once it is tcp_tw_reuse_delay old (1 s by default, loopback with tcp_tw_reuse 2;
#: net/ipv4/tcp_ipv4.c tcp_twsk_unique): wait that out first
TW_REUSE_S = 1.2
Step = tuple[int, bool] | FrontierEnd


class FrontierSearch:
    """Finds what the server holds at once after a stop; `done` says what it did."""

    def __init__(self, c: Conns, opening: Opening) -> None:
        self.c, self.opening = c, opening
        self.left = 0  # attempts the search may still make
        self.done: Frontier | None = None

    def refusals(self) -> int:
        totals = self.c.watching.totals
        return sum(totals[k] for k in REFUSALS)

    def after_stop(self) -> None:
        """Top up after evictions, else search after refusals."""
        w = self.c.watching
        if not w.totals["evicted"]:
            self.search()
            return
        start = Frontier(opening_best=w.best, one_at_a_time=True, after="evictions")
        first, ended = self._add_one_by_one(lambda held: None)
        goal = w.best

        def lower_goal(held: int) -> None:  # one more than `held` made it evict
            nonlocal goal
            goal = min(goal, held)

        refill, ended = self._add_one_by_one(lower_goal, lambda held: held >= goal)
        added = first + refill
        self.done = replace(start, added=added, steps=added, best=w.best, ended=ended)

    def search(self) -> None:
        c = self.c
        if not self.refusals() or c.stopping or c.releasing:
            return
        self.left = c.plan.share  # attempts: as many again as the share
        done = Frontier(opening_best=c.watching.best)
        end = time.monotonic() + FRONTIER_S
        step, wait = 1, TW_REUSE_S
        while isinstance(took := self._step(step, end, wait), tuple):
            done = replace(done, added=done.added + took[0], steps=done.steps + 1)
            if not took[1]:
                break
            step, wait = min(2 * step, c.window.limit), 0.0
        if step > 1 and isinstance(took, tuple):  # the last step crowded the server
            done = replace(done, one_at_a_time=True)
            wait = TW_REUSE_S
            while isinstance(took := self._step(1, end, wait), tuple):
                done = replace(done, added=done.added + took[0], steps=done.steps + 1)
                if not took[1]:
                    break
                wait = 0.0
        ended: FrontierEnd = "refused" if isinstance(took, tuple) else took
        self.done = replace(done, best=c.watching.best, ended=ended)

    def _step(self, n: int, end: float, wait: float) -> Step:
        """Wait `wait`, add up to n connections (no more than the share still lacks in
        connections held), let them settle and the server's later words on them land
        (FRONTIER_SETTLE), then sweep: (added, taken whole: none refused and every one
        held), or why there is nothing more to add."""
        c, w = self.c, self.c.watching
        if c.stopping or c.releasing:
            return "stopped"
        if self.left <= 0 or time.monotonic() > end:
            return "attempts" if self.left <= 0 else "time"
        time.sleep(wait)
        self.opening.done.drain(0)
        held = w.verify()
        n = min(n, self.left, c.plan.share - held)
        if n <= 0:
            return "held"
        before = self.refusals()
        opened = sum(1 for _ in range(n) if self.opening.connector.open_one())
        self.left -= n
        self.opening.finish_in_flight()
        time.sleep(FRONTIER_SETTLE)
        self.opening.done.drain(0)
        whole = opened == n and self.refusals() == before
        return n, whole and w.verify() >= held + n

    def _add_one_by_one(
        self, evicted: Callable[[int], None], enough: Callable[[int], bool] | None = None
    ) -> tuple[int, FrontierEnd]:
        """One connection at a time, settled and swept, until `enough` (None: the
        first eviction) or TOP_UP_MOST; `evicted` hears the count an addition
        evicted at. Returns how many it added and what ended it."""
        c, w = self.c, self.c.watching
        for added in range(TOP_UP_MOST):
            held = w.verify()
            if c.releasing:
                return added, "stopped"
            if enough is not None and enough(held):
                return added, "held"
            before = w.totals["evicted"]
            if not self.opening.connector.open_one():
                return added, "stopped"
            self.opening.finish_in_flight()
            if w.totals["evicted"] > before:
                evicted(held)
                if enough is None:
                    return added + 1, "evicted"
        return TOP_UP_MOST, "attempts"

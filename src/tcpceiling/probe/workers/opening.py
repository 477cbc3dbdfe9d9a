"""The opening and its pace: the fast path toward the built-in sink (batches, no
pacing), and toward a real server or at --rate one connection at a time within the
window of what the server is asked to answer (pacing.Window), until the share, a
limit, the memory guard or the server's stop; then the handshakes and checks under
way are let end."""

from __future__ import annotations

import time
from collections.abc import Callable

from tcpceiling.probe.run import budget
from tcpceiling.probe.serving.watch import SETTLE_RTTS
from tcpceiling.probe.uring.connect import UringBatches
from tcpceiling.probe.workers.completions import Completions
from tcpceiling.probe.workers.connector import Connector
from tcpceiling.probe.workers.conns import ClientPlan, Conns

REPORT_EVERY = 0.25
FAST_BATCH = 256


def settle_most(plan: ClientPlan) -> float:
    """The longest a served connection settles: SETTLE_RTTS check round trips, each at
    most the check timeout, or the settle floor."""
    return max(plan.settle, SETTLE_RTTS * plan.check_timeout)


class Opening:
    """Opens a worker's share and says when to stop."""

    def __init__(
        self, c: Conns, connector: Connector, done: Completions, report: Callable[[], None]
    ) -> None:
        self.c, self.connector, self.done, self.report = c, connector, done, report
        self.batches: UringBatches | None = None  # the fast path on io_uring, when it runs

    def over_memory(self) -> bool:
        """The memory guard: has the run's Slab outgrown its room (slabmeter), or a
        memory cgroup's working set passed its line (budget.cgroup_breach)?"""
        c = self.c
        meter = c.plan.slab_meter
        slab = meter is not None and meter.over(*c.stats.meminfo_fields(meter.fields))
        if slab or budget.cgroup_breach(c.plan.cgroup_lines) is not None:
            c.guard = "memory"
        return c.guard == "memory"

    def server_stopped(self) -> bool:
        return self.c.watch is not None and self.c.watch.limit_kind is not None

    def room(self) -> int:
        """How many more may start: within --max-pending in flight, and within the
        window (pacing.Window) of what the server is asked to answer: handshakes, and
        checks when there is one (a check-less connection waits out its timeout with
        nothing asked of the server, so its handshake is its answer)."""
        c = self.c
        room = c.plan.max_pending - c.in_flight()
        if c.plan.rate or c.watch is None:
            return room
        asked = len(c.pending)
        if c.watch.check.kind != "none":
            asked += len(c.watch.checking)
        return min(room, c.window.limit - asked)

    def open_fast(self) -> None:
        """Open the share in batches with the fewest steps per connection: socket,
        setsockopt, bind (with a source), connect (as benchmarks/cref.c) in one tight loop,
        then one poll() per batch to see which completed; the few still pending go to
        the epoll path. On loopback the handshake completes inside connect(), so its
        duration is the latency."""
        c, plan = self.c, self.c.plan
        opened, last = 0, time.perf_counter()
        while not c.stopping and opened < plan.share and not c.tally.failure.limit:
            if c.in_flight() >= plan.max_pending:
                self.done.drain(0.02)
                continue
            n = min(FAST_BATCH, plan.share - opened)
            tried, more = self._batch(n)
            opened += tried
            if not more or self.over_memory():
                break
            if time.perf_counter() - last > REPORT_EVERY:
                last = time.perf_counter()
                self.done.drain(0)
                self.report()
        self.finish_in_flight()

    def _batch(self, n: int) -> tuple[int, bool]:
        """n started and heard complete: (tried, more may start)."""
        if self.batches is not None:
            return self.batches.open_batch(n)
        fds, took, tried, more = self.connector.connect_batch(n)
        self.done.complete_batch(fds, took)
        return tried, more

    def open_all(self) -> None:
        c, plan = self.c, self.c.plan
        if c.watch is None and not plan.rate:
            return self.open_fast()
        start = last = time.perf_counter()
        opened, more = 0, True
        while more and not c.stopping and opened < plan.share:
            room = self.room()
            if room <= 0 or (c.watch is not None and c.watch.undecided):
                # bounded: a silent server must not collect every fd; a close while
                # settling waits for the newer ones to settle (serving/watch.py)
                self.done.drain(0.02)
                if self.server_stopped():
                    break
                continue
            n = min(plan.batch, plan.share - opened, room)
            if plan.rate:
                time.sleep(max(0.0, start + opened / plan.rate - time.perf_counter()))
                n = min(n, 1)
            more, added = self._open_some(n)
            opened += added
            if self.server_stopped() or self.over_memory():
                break
            if time.perf_counter() - last > REPORT_EVERY:
                last = time.perf_counter()
                self.report()
        self.finish_in_flight()

    def _open_some(self, n: int) -> tuple[bool, int]:
        """Up to n, each drained right away (the latency is the handshake's, not the
        batch's): (more may start, how many were tried)."""
        for i in range(n):
            more = self.connector.open_one()
            self.done.drain(0)
            if not more:
                return False, i + 1
        return True, n

    def finish_in_flight(self) -> None:
        """Let handshakes (and checks) under way end in a verdict or a timeout, and
        the served ones settle."""
        c = self.c
        wait = c.plan.connect_timeout
        if c.watch:
            wait += c.plan.check_timeout + settle_most(c.plan)
        self._until(time.perf_counter() + wait + 1, c.unsettled)

    def hear_late(self) -> None:
        """Connections judged silent still wait in the server's queue, where a worker
        started on demand may take them (PHP-FPM's ondemand pool forks one as they
        wait, fpm_pctl_on_socket_accept in fpm_process_ctl.c): one more check timeout
        to hear them, then the settle of those answered. Those never answered stay
        silent; a run that stops on silence is that much longer. Once, at the end of
        the opening (not after each of the frontier's steps)."""
        c = self.c
        if c.watch is None or not c.watch.late:
            return
        late = c.watch.late
        t = time.perf_counter()
        self._until(t + c.plan.check_timeout, lambda: len(late))
        self._until(t + c.plan.check_timeout + settle_most(c.plan) + 1, c.unsettled)

    def _until(self, deadline: float, left: Callable[[], int]) -> None:
        c, last = self.c, time.perf_counter()
        while left() and time.perf_counter() < deadline and not c.releasing:
            self.done.drain(0.05)
            if time.perf_counter() - last > REPORT_EVERY:
                last = time.perf_counter()
                self.report()

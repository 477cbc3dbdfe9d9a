"""A client worker: opens its share of connections and holds them as raw fds.

Its parts, each with one job, share its state (conns.py): the connector starts
connections, the completions hear them complete, the opening paces them, the
frontier search finds what a real server holds after a stop. This class is the
worker's life: its signals, its reports, holding, the active phase, and release.
Signals: SIGUSR1 stop opening, SIGUSR2 run the active phase (traffic at the plan's
message rate, then wake-up round trips), SIGTERM release (RST via SO_LINGER 0), exit.
"""

from __future__ import annotations

import os
import select
import signal
import time
from array import array

from tcpceiling.probe.serving import checks
from tcpceiling.probe.serving.watch import Watch
from tcpceiling.probe.uring.connect import UringBatches, connect_ops
from tcpceiling.probe.uring.engine import Engine, open_ring
from tcpceiling.probe.workers import active
from tcpceiling.probe.workers.completions import Completions
from tcpceiling.probe.workers.connector import IP_BIND_ADDRESS_NO_PORT, Connector
from tcpceiling.probe.workers.conns import ClientPlan, Conns
from tcpceiling.probe.workers.frontier import FrontierSearch
from tcpceiling.probe.workers.histogram import Histogram
from tcpceiling.probe.workers.messages import ActiveDone, ClientProgress, ClientStart, Released
from tcpceiling.probe.workers.opening import REPORT_EVERY, Opening
from tcpceiling.probe.workers.procs import Reporter
from tcpceiling.probe.workers.worker import close_with_rst, raise_nofile

__all__ = ["IP_BIND_ADDRESS_NO_PORT", "REPORT_EVERY", "ClientPlan", "ClientWorker", "run_client"]


class ClientWorker:
    def __init__(self, plan: ClientPlan, rep: Reporter) -> None:
        self.rep = rep
        self.c = Conns(plan)
        self.connector = Connector(self.c)
        self.done = Completions(self.c)
        self.opening = Opening(self.c, self.connector, self.done, self.progress)
        self.frontier = FrontierSearch(self.c, self.opening)

    # -- signals ---------------------------------------------------------------
    def _on_stop(self, *_: object) -> None:
        self.c.stopping = True

    def _on_release(self, *_: object) -> None:
        self.c.stopping = self.c.releasing = True

    def _on_go(self, *_: object) -> None:
        self.c.go = True

    def _verdict(self, seconds: float, answered: bool) -> None:
        """A first check's verdict paces the opening (pacing.Window)."""
        if answered:
            self.c.window.answer(seconds)
        else:
            self.c.window.timed_out()

    # -- reports ---------------------------------------------------------------------
    def progress(self, final: bool = False) -> None:
        c = self.c
        self.rep.send(
            ClientProgress(
                index=c.plan.index,
                established=c.established(),
                pending=len(c.pending),
                final=final,
                short=final and c.established() < c.plan.share,
                errors=dict(c.tally.errors),
                failure=c.tally.failure,
                watch=c.watch.summary() if c.watch else None,
                hist=self._histogram().counts if final else {},
                rss=c.stats.rss(),
                guard=c.guard,
                halvings=c.window.cuts,
                frontier=self.frontier.done,
            )
        )

    def _histogram(self) -> Histogram:
        c = self.c
        for seconds in c.latencies:
            c.hist.add(seconds * 1e6)
        c.latencies = array("f")
        return c.hist

    # -- holding -----------------------------------------------------------------------
    def tend(self) -> None:
        """While holding: watch the held connections (server mode) or just sleep."""
        c, last = self.c, 0.0
        while not c.releasing:
            if c.go:
                c.go = False
                self.active_phase()
            if c.watch is None:
                time.sleep(0.2)  # signal handlers run during the sleep
                continue
            self.done.drain(0.1)
            if time.monotonic() - last > 2 * REPORT_EVERY:
                last = time.monotonic()
                c.watch.verify()
                self.progress()

    def active_phase(self) -> None:
        c, t0 = self.c, time.perf_counter()
        plan, sent = c.plan, 0
        if plan.message_rate > 0:
            sent = active.traffic(
                c.fds,
                plan.message_rate,
                plan.message_bytes,
                plan.traffic_seconds,
                lambda: c.releasing,
            )
        seconds = time.perf_counter() - t0
        time.sleep(0.2)  # let the last echoes land before timing wake-ups
        wake = active.wake_ups(c.fds, plan.wake_samples)
        self.rep.send(ActiveDone(plan.index, sent, seconds, wake.counts))

    def release(self) -> None:
        c = self.c
        if c.watch is not None:
            c.fds.extend(c.watch.release())
            c.fds.extend(c.pending)
        close_with_rst(c.fds)
        c.fds = array("i")

    def _watch(self) -> Watch | None:
        p = self.c.plan
        if not p.watch:
            return None
        check = checks.parse(p.check)
        return Watch(self.c.epoll, check, p.check_timeout, p.check_every, os.close,
                     settle=p.settle, verdicts=self._verdict)  # fmt: skip

    def _engine(self) -> tuple[Engine, str]:
        """io_uring for the fast path toward the sink when asked and allowed; a real
        server's paced opening (one connection at a time, each checked) and --rate
        run on epoll."""
        p = self.c.plan
        if p.watch or p.rate:
            return "epoll", ""
        ring, refused = open_ring(p.engine, connect_ops(p))
        if ring is None:
            return "epoll", refused
        self.opening.batches = UringBatches(self.c, self.connector, ring)
        return "uring", ""

    def run(self) -> None:
        c = self.c
        signal.signal(signal.SIGUSR1, self._on_stop)
        signal.signal(signal.SIGTERM, self._on_release)
        signal.signal(signal.SIGUSR2, self._on_go)
        soft = raise_nofile(c.plan.nofile)
        engine, refused = self._engine()  # before the count: the ring is an fd of ours
        base = c.stats.open_fds()
        c.ep = select.epoll()  # analyze counts this fd as the epoll overhead
        c.watch = self._watch()
        self.rep.send(ClientStart(c.plan.index, os.getpid(), soft, base, c.stats.rss(),
                                  engine, refused))  # fmt: skip
        self.opening.open_all()
        self.opening.hear_late()
        if c.watch is not None:
            self.frontier.after_stop()
            c.watch.verify()
        self.progress(final=True)
        self.tend()
        self.release()
        self.rep.send(Released(c.plan.index))


def run_client(plan: ClientPlan, rep: Reporter) -> None:
    ClientWorker(plan, rep).run()

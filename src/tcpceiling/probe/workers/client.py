"""A client worker: opens its share of connections and holds them as raw fds.

Per connection: socket(), IP_BIND_ADDRESS_NO_PORT + bind(src, 0) when a source is
set (so bind() reserves no port: docs/limits.md §1), non-blocking
connect(), then epoll for completion (the watch is removed once it completes).
Established fds live in an array('i'); no Python object outlives its connection.
Signals: SIGUSR1 stop opening, SIGUSR2 run the active phase (traffic at the plan's
message rate, then wake-up round trips), SIGTERM release (RST via SO_LINGER 0), exit.
"""

from __future__ import annotations

import _socket
import errno
import os
import select
import signal
import socket
import time
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

from tcpceiling.probe.run import budget
from tcpceiling.probe.serving import checks
from tcpceiling.probe.serving.watch import SETTLE_RTTS, Watch
from tcpceiling.probe.workers import active, pacing
from tcpceiling.probe.workers.errnos import ERRNO_CONSTRAINT
from tcpceiling.probe.workers.histogram import Histogram
from tcpceiling.probe.workers.messages import (
    ActiveDone,
    ClientProgress,
    ClientStart,
    Failure,
    Frontier,
    FrontierEnd,
    Released,
)
from tcpceiling.probe.workers.procs import Reporter
from tcpceiling.probe.workers.worker import SelfStats, close_with_rst, raise_nofile

IP_BIND_ADDRESS_NO_PORT = 24  # include/uapi/linux/in.h
REPORT_EVERY = 0.25
DONE_EVENTS = select.EPOLLERR | select.EPOLLHUP
TIMEOUTS_ARE_A_LIMIT = 10
TOP_UP_MOST = 64  # connections added one by one after a stop by evictions
#: after each of the frontier's steps, the pause before it is judged: the server's
#: later words on the step's connections (an answer, then a close past its cap) land
FRONTIER_SETTLE = 0.2
#: the failures that end the frontier's steps after a stop by refusals (watch.py)
REFUSALS = ("error_reply", "closed", "reset", "refused", "silent", "timeout", "evicted")
FRONTIER_S = 60.0  # the frontier's steps end by then, wherever they are
#: before the frontier's first step and its first one-at-a-time step: a refused
#: attempt can leave a proxy's port toward its upstream in TIME_WAIT, which connect()
#: takes over only once it is tcp_tw_reuse_delay old (1 s by default, loopback with
#: tcp_tw_reuse 2; net/ipv4/tcp_ipv4.c tcp_twsk_unique): wait that out first
TW_REUSE_S = 1.2
FAST_BATCH = 256
POLL_BAD = select.POLLERR | select.POLLHUP
STREAM_NONBLOCK = socket.SOCK_STREAM | socket.SOCK_NONBLOCK
#: With a real server these errnos are the server's doing, judged by the Watch.
SERVER_ERRNOS = {
    errno.ECONNREFUSED: "refused",
    errno.ECONNRESET: "reset",
    errno.ETIMEDOUT: "timeout",
    errno.EPIPE: "reset",
}


@dataclass(frozen=True)
class ClientPlan:
    index: int
    share: int
    tuples: tuple[tuple[str | None, str, int], ...]  # (source or None, dst host, dst port)
    nofile: int | None = None
    rate: float | None = None
    connect_timeout: float = 5.0
    batch: int = 64
    slab_limit: int = 0  # stop before Slab grows past this (measure.slab_limit)
    cgroup_lines: tuple[budget.CgroupLine, ...] = ()  # stop before any is crossed
    watch: bool = False  # the peer is a real server: check and watch every connection
    check: str = "none"
    check_timeout: float = 2.0
    check_every: float | None = None
    settle: float = 0.1  # seconds a passing check must stay unrefused (watch.py)
    max_pending: int = 1024  # handshakes and checks in flight at once (the most)
    message_rate: float = 0.0  # per held connection per second, on SIGUSR2
    message_bytes: int = 64
    traffic_seconds: float = 5.0
    wake_samples: int = 0
    first: int = 0  # where in the turn over the tuples this worker starts (connections)
    burst: int = 1  # connections in a row toward one tuple (the fast path)


def start_connect(
    family: int, src: tuple[str, int] | None, dst: tuple[str, int]
) -> tuple[int, int, float]:
    """socket(), IP_BIND_ADDRESS_NO_PORT + bind(src) when a source is given (so bind()
    reserves no port: docs/limits.md §1), and a non-blocking connect():
    (raw fd, connect errno, connect() seconds). socket() failing raises OSError."""
    s = _socket.socket(family, STREAM_NONBLOCK)
    try:
        if src is not None:
            s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            s.bind(src)
        t0 = time.perf_counter()
        err = s.connect_ex(dst)
        return s.detach(), err, time.perf_counter() - t0
    except OSError as exc:  # bind(): the source is not local, and the like
        return s.detach(), exc.errno or 0, 0.0


class ClientWorker:
    def __init__(self, plan: ClientPlan, rep: Reporter) -> None:
        self.plan, self.rep = plan, rep
        self.fds = array("i")
        self.pending: dict[int, float] = {}
        self.errors: Counter[int] = Counter()
        self.failure = Failure()
        self.hist = Histogram()
        self.latencies = array("f")  # seconds, bucketed into hist once opening is over
        #: (family, bind address or None, connect address) per tuple, built once.
        self.targets = [
            (
                socket.AF_INET6 if ":" in host else socket.AF_INET,
                None if src is None else (src, 0),
                (host, port),
            )
            for src, host, port in plan.tuples
        ]
        self.exhausted: set[int] = set()
        self.live = self._live()
        self.stopping = self.releasing = self.go = False
        self.opened = 0  # connections the opening started (open_all)
        self.frontier_left = 0  # attempts the frontier may still make
        self.frontier: Frontier | None = None  # what it did, once it has run
        self.guard: Literal["memory"] | None = None
        self.ep: select.epoll | None = None
        self.watch: Watch | None = None
        self.window = pacing.Window(plan.max_pending)
        self.pending_host: dict[int, tuple[str, int]] = {}  # server mode: (host, attempt)
        self.attempts = 0
        self.next_tuple = plan.first  # the fast path counts connections, bursts of plan.burst
        self.last_expiry = 0.0
        self.stats = SelfStats()

    # -- signals ---------------------------------------------------------------
    def _on_stop(self, *_: object) -> None:
        self.stopping = True

    def _on_release(self, *_: object) -> None:
        self.stopping = self.releasing = True

    def _on_go(self, *_: object) -> None:
        self.go = True

    def _verdict(self, seconds: float, answered: bool) -> None:
        """A first check's verdict paces the opening (pacing.Window)."""
        if answered:
            self.window.answer(seconds)
        else:
            self.window.timed_out()

    # -- one connection ------------------------------------------------------------
    def _fail(self, num: int, seq: int | None = None) -> None:
        self.errors[num] += 1
        f = self.failure
        if not f.first:
            self.failure = f = replace(f, first=num)
        if self.watch is not None and num in SERVER_ERRNOS:
            self.watch.fail(SERVER_ERRNOS[num], self.attempts if seq is None else seq)
            return
        if not f.client:
            self.failure = f = replace(f, client=num)
        repeated_timeouts = num == errno.ETIMEDOUT and self.errors[num] >= TIMEOUTS_ARE_A_LIMIT
        if not f.limit and (
            repeated_timeouts
            or (num in ERRNO_CONSTRAINT and num not in (errno.EADDRNOTAVAIL, errno.ETIMEDOUT))
        ):
            self.failure = replace(f, limit=num)

    def _pick_tuple(self) -> int | None:
        """The next tuple with ports left, one connection each (the paced path)."""
        if not self.live:
            return None
        ti = self.live[self.next_tuple % len(self.live)][0]
        self.next_tuple += 1
        return ti

    def _start(self, ti: int) -> tuple[int, int, float] | None:
        """start_connect() toward tuple ti; None when socket() itself failed (counted)."""
        self.attempts += 1
        try:
            return start_connect(*self.targets[ti])
        except OSError as exc:
            self._fail(exc.errno or 0)
            return None

    def open_one(self) -> bool:
        """Start one connection; False when no tuple is left or a limit was hit."""
        ti = self._pick_tuple()
        started = None if ti is None else self._start(ti)
        if ti is None or started is None:
            return False
        fd, err, _took = started
        if err in (errno.EINPROGRESS, 0):
            self.pending[fd] = time.perf_counter()
            self._ep.register(fd, select.EPOLLOUT)
            if self.watch is not None:
                self.pending_host[fd] = (self.plan.tuples[ti][1], self.attempts)
            return True
        return self._connect_failed(fd, err, ti)

    @property
    def _ep(self) -> select.epoll:
        assert self.ep is not None
        return self.ep

    # -- completions -----------------------------------------------------------------
    def _socket_error(self, fd: int) -> int:
        s = socket.socket(fileno=fd)
        try:
            return s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) or errno.ECONNRESET
        finally:
            s.detach()

    def drain(self, timeout: float = 0) -> None:
        events_ = self._ep.poll(timeout, 4096)
        now = time.perf_counter()
        for fd, events in events_:
            started = self.pending.pop(fd, None)
            if started is None:
                self._watch.on_event(fd, events)
            elif events & DONE_EVENTS:
                self._ep.unregister(fd)
                _host, seq = self.pending_host.pop(fd, ("", self.attempts))
                self._fail(self._socket_error(fd), seq)
                os.close(fd)
            else:
                self.hist.add((now - started) * 1e6)
                if self.watch is None:
                    self._ep.unregister(fd)
                    self.fds.append(fd)
                else:
                    self.window.connected(now - started)
                    if self.watch.check.kind == "none":
                        self.window.answer(now - started)
                    self.watch.established(fd, *self.pending_host.pop(fd))
        if now - self.last_expiry > 0.1:
            self.last_expiry = now
            self._expire(now)
            if self.watch is not None:
                self.watch.tick()

    @property
    def _watch(self) -> Watch:
        assert self.watch is not None
        return self.watch

    def in_flight(self) -> int:
        return len(self.pending) + (len(self.watch.checking) if self.watch else 0)

    def _room(self) -> int:
        """How many more may start: within --max-pending in flight, and within the
        window (pacing.Window) of what the server is asked to answer: handshakes, and
        checks when there is one (a check-less connection waits out its timeout with
        nothing asked of the server, so its handshake is its answer)."""
        room = self.plan.max_pending - self.in_flight()
        if self.plan.rate or self.watch is None:
            return room
        asked = len(self.pending)
        if self.watch.check.kind != "none":
            asked += len(self.watch.checking)
        return min(room, self.window.limit - asked)

    def unsettled(self) -> int:
        """In flight, or served so recently that a refusal may still come."""
        return self.in_flight() + (len(self.watch.settling) if self.watch else 0)

    def established(self) -> int:
        return self.watch.open_count if self.watch else len(self.fds)

    def _expire(self, now: float) -> None:
        limit = self.plan.connect_timeout
        for fd in [fd for fd, t in self.pending.items() if now - t > limit]:
            self._ep.unregister(fd)
            del self.pending[fd]
            _host, seq = self.pending_host.pop(fd, ("", self.attempts))
            os.close(fd)
            self._fail(errno.ETIMEDOUT, seq)

    # -- phases ----------------------------------------------------------------------
    def progress(self, final: bool = False) -> None:
        self.rep.send(
            ClientProgress(
                index=self.plan.index,
                established=self.established(),
                pending=len(self.pending),
                final=final,
                short=final and self.established() < self.plan.share,
                errors=dict(self.errors),
                failure=self.failure,
                watch=self.watch.summary() if self.watch else None,
                hist=self._histogram().counts if final else {},
                rss=self.stats.rss(),
                guard=self.guard,
                halvings=self.window.cuts,
                frontier=self.frontier,
            )
        )

    def _over_memory(self) -> bool:
        """The memory guard: has Slab grown past the plan's limit (measure.slab_limit),
        or a memory cgroup's working set past its line (budget.cgroup_breach)?"""
        limit = self.plan.slab_limit
        slab = bool(limit) and self.stats.meminfo_field(b"Slab:") > limit
        if slab or budget.cgroup_breach(self.plan.cgroup_lines) is not None:
            self.guard = "memory"
        return self.guard == "memory"

    def _server_stopped(self) -> bool:
        return self.watch is not None and self.watch.limit_kind is not None

    # -- the fast path: the built-in sink, no pacing ----------------------------------
    def open_fast(self) -> None:
        """Open the share in batches with the fewest steps per connection: socket,
        setsockopt, bind (with a source), connect (as benchmarks/cref.c) in one tight loop,
        then one poll() per batch to see which completed; the few still pending go to
        the epoll path. On loopback the handshake completes inside connect(), so its
        duration is the latency."""
        plan, opened, last = self.plan, 0, time.perf_counter()
        while not self.stopping and opened < plan.share and not self.failure.limit:
            if self.in_flight() >= plan.max_pending:
                self.drain(0.02)
                continue
            fds, took, tried, more = self._connect_batch(min(FAST_BATCH, plan.share - opened))
            opened += tried
            self._complete_batch(fds, took)
            if not more or self._over_memory():
                break
            if time.perf_counter() - last > REPORT_EVERY:
                last = time.perf_counter()
                self.drain(0)
                self.progress()
        self.finish_in_flight()

    def _connect_batch(self, n: int) -> tuple[array[int], array[float], int, bool]:
        """Up to n non-blocking connects round robin over the live tuples, with no
        Python step that is not needed (each costs about what a syscall does, by a py-spy
        profile). Returns the started fds, their connect() seconds, the attempts, and
        False when no tuple is left or a limit was hit. A failed connect ends the batch
        (the live tuples may have changed)."""
        fds, took = array("i"), array("f")
        live, k, burst = self.live, self.next_tuple, self.plan.burst
        if not live:
            return fds, took, 0, False
        start, inprogress, nl = start_connect, errno.EINPROGRESS, len(live)
        for j in range(n):
            ti, family, src, dst = live[k // burst % nl]
            k += 1
            try:
                fd, err, seconds = start(family, src, dst)
            except OSError as exc:  # socket(): EMFILE, ENFILE, ENOBUFS, ENOMEM
                self._fail(exc.errno or 0)
                return self._batch_end(fds, took, k, j + 1, False)
            if err == inprogress or err == 0:
                fds.append(fd)
                took.append(seconds)
                continue
            return self._batch_end(fds, took, k, j + 1, self._connect_failed(fd, err, ti))
        return self._batch_end(fds, took, k, n, True)

    def _batch_end(
        self, fds: array[int], took: array[float], k: int, tried: int, more: bool
    ) -> tuple[array[int], array[float], int, bool]:
        self.next_tuple = k
        self.attempts += tried
        return fds, took, tried, more

    def _connect_failed(self, fd: int, err: int, ti: int) -> bool:
        os.close(fd)
        self._fail(err)
        if err in (errno.EADDRNOTAVAIL, errno.EADDRINUSE):
            self.exhausted.add(ti)
            self.live = self._live()
            return bool(self.live)
        return not self.failure.limit

    def _live(self) -> list[tuple[int, int, tuple[str, int] | None, tuple[str, int]]]:
        """The tuples with ports left: (index, family, bind address, connect address)."""
        return [(i, *t) for i, t in enumerate(self.targets) if i not in self.exhausted]

    def _complete_batch(self, fds: array[int], took: array[float]) -> None:
        """One poll() for the batch: completed ones are held (all of them, as a rule,
        on loopback), failed ones named, the rest wait on epoll with their start time."""
        if not fds:
            return
        po = select.poll()
        register = po.register
        for fd in fds:
            register(fd, select.POLLOUT)
        ready = po.poll(0)
        if len(ready) == len(fds) and not any(ev & POLL_BAD for _fd, ev in ready):
            self.fds.extend(fds)
            self.latencies.extend(took)
            return
        events, now = dict(ready), time.perf_counter()
        for fd, t in zip(fds, took, strict=True):
            ev = events.get(fd)
            if ev is None:
                self.pending[fd] = now - t
                self._ep.register(fd, select.EPOLLOUT)
            elif ev & POLL_BAD:
                self._fail(self._socket_error(fd))
                os.close(fd)
            else:
                self.fds.append(fd)
                self.latencies.append(t)

    def open_all(self) -> None:
        if self.watch is None and not self.plan.rate:
            return self.open_fast()
        plan, start = self.plan, time.perf_counter()
        opened, last = 0, start
        more = True
        while more and not self.stopping and opened < plan.share:
            room = self._room()
            if room <= 0 or (self.watch is not None and self.watch.undecided):
                # bounded: a silent server must not collect every fd; a close while
                # settling waits for the newer ones to settle (watch.py)
                self.drain(0.02)
                if self._server_stopped():
                    break
                continue
            n = min(plan.batch, plan.share - opened, room)
            if plan.rate:
                due = start + opened / plan.rate
                time.sleep(max(0.0, due - time.perf_counter()))
                n = min(n, 1)
            for _ in range(n):
                more = self.open_one()
                opened += 1
                self.drain(0)  # right away: the latency is the handshake's, not the batch's
                if not more:
                    break
            if self._server_stopped():
                break
            if self._over_memory():
                break
            if time.perf_counter() - last > REPORT_EVERY:
                last = time.perf_counter()
                self.progress()
        self.finish_in_flight()
        self.opened = opened

    def finish_in_flight(self) -> None:
        """Let handshakes (and checks) under way end in a verdict or a timeout, and
        the served ones settle."""
        wait = self.plan.connect_timeout
        if self.watch:
            wait += self.plan.check_timeout + settle_most(self.plan)
        deadline = time.perf_counter() + wait + 1
        last = time.perf_counter()
        while self.unsettled() and time.perf_counter() < deadline and not self.releasing:
            self.drain(0.05)
            if time.perf_counter() - last > REPORT_EVERY:
                last = time.perf_counter()
                self.progress()

    def top_up(self) -> None:
        """After evictions the server may hold fewer than it did at its high: it
        evicts in waves (nginx drains up to 32 idle connections at once,
        ngx_drain_connections), and the stop came after a wave. Add one connection
        at a time, each settled and swept, until the server evicts again (or
        TOP_UP_MOST): the best sweep is then the most it holds at once. Then refill,
        one at a time, up to that best and no further, so a hold holds the server
        at its top rather than just after a wave."""
        w = self._watch
        if not w.totals["evicted"]:
            self._frontier()
            return
        start = Frontier(opening_best=w.best, one_at_a_time=True, after="evictions")
        first, ended = self._add_one_by_one(lambda held: None)
        goal = w.best

        def lower_goal(held: int) -> None:  # one more than `held` made it evict
            nonlocal goal
            goal = min(goal, held)

        refill, ended = self._add_one_by_one(lower_goal, lambda held: held >= goal)
        added = first + refill
        self.frontier = replace(start, added=added, steps=added, best=w.best, ended=ended)

    def _frontier(self) -> None:
        """After the server refused (or reset, or closed), what it holds at once, found
        as a careful client would: its own traffic no longer competing with the cap
        (connections opened while others were still being answered, or its refusals
        still lingering in the server). Settle, then add connections in steps, each
        settled and swept before the next: twice as many after each step the server
        took whole (at most the opening's window), and after the step it refused in,
        settle again and go on one at a time (what the step's own crowd cost comes
        back). Bounded by the worker's share of the target in connections held (the
        refused ones held nothing), by as many attempts again as the share, and by
        FRONTIER_S. The most served at once is then what the server holds, not what it
        held while the probe was still opening (`best` keeps the higher of the two);
        `self.frontier` says what it did."""
        w = self._watch
        if not sum(w.totals[k] for k in REFUSALS) or self.stopping or self.releasing:
            return
        self.frontier_left = self.plan.share  # attempts: as many again as the share
        done = Frontier(opening_best=w.best)
        end = time.monotonic() + FRONTIER_S
        step, wait = 1, TW_REUSE_S
        while isinstance(took := self._frontier_step(step, end, wait), tuple):
            done = replace(done, added=done.added + took[0], steps=done.steps + 1)
            if not took[1]:
                break
            step, wait = min(2 * step, self.window.limit), 0.0
        if step > 1 and isinstance(took, tuple):  # the last step crowded the server
            done = replace(done, one_at_a_time=True)
            wait = TW_REUSE_S
            while isinstance(took := self._frontier_step(1, end, wait), tuple):
                done = replace(done, added=done.added + took[0], steps=done.steps + 1)
                if not took[1]:
                    break
                wait = 0.0
        ended: FrontierEnd = "refused" if isinstance(took, tuple) else took
        self.frontier = replace(done, best=w.best, ended=ended)

    def _frontier_step(self, n: int, end: float, wait: float) -> tuple[int, bool] | FrontierEnd:
        """Wait `wait`, add up to n connections (no more than the share still lacks in
        connections held), let them settle and the server's later words on them land
        (FRONTIER_SETTLE), then sweep: (added, taken whole: none refused and every one
        held), or why there is nothing more to add."""
        w = self._watch
        if self.stopping or self.releasing:
            return "stopped"
        if self.frontier_left <= 0 or time.monotonic() > end:
            return "attempts" if self.frontier_left <= 0 else "time"
        time.sleep(wait)
        self.drain(0)
        held = w.verify()
        n = min(n, self.frontier_left, self.plan.share - held)
        if n <= 0:
            return "held"
        before = sum(w.totals[k] for k in REFUSALS)
        opened = sum(1 for _ in range(n) if self.open_one())
        self.frontier_left -= n
        self.finish_in_flight()
        time.sleep(FRONTIER_SETTLE)
        self.drain(0)
        whole = opened == n and sum(w.totals[k] for k in REFUSALS) == before
        return n, whole and w.verify() >= held + n

    def _add_one_by_one(
        self,
        evicted: Callable[[int], None],
        enough: Callable[[int], bool] | None = None,
    ) -> tuple[int, FrontierEnd]:
        """One connection at a time, settled and swept, until `enough` (None: the
        first eviction) or TOP_UP_MOST; `evicted` hears the count an addition
        evicted at. Returns how many it added and what ended it."""
        w = self._watch
        for added in range(TOP_UP_MOST):
            held = w.verify()
            if self.releasing:
                return added, "stopped"
            if enough is not None and enough(held):
                return added, "held"
            before = w.totals["evicted"]
            if not self.open_one():
                return added, "stopped"
            self.finish_in_flight()
            if w.totals["evicted"] > before:
                evicted(held)
                if enough is None:
                    return added + 1, "evicted"
        return TOP_UP_MOST, "attempts"

    def tend(self) -> None:
        """While holding: watch the held connections (server mode) or just sleep."""
        last = 0.0
        while not self.releasing:
            if self.go:
                self.go = False
                self.active_phase()
            if self.watch is None:
                time.sleep(0.2)  # signal handlers run during the sleep
                continue
            self.drain(0.1)
            if time.monotonic() - last > 2 * REPORT_EVERY:
                last = time.monotonic()
                self._watch.verify()
                self.progress()

    # -- the active phase ------------------------------------------------------------
    def active_phase(self) -> None:
        plan, t0 = self.plan, time.perf_counter()
        sent = 0
        if plan.message_rate > 0:
            sent = active.traffic(
                self.fds,
                plan.message_rate,
                plan.message_bytes,
                plan.traffic_seconds,
                lambda: self.releasing,
            )
        seconds = time.perf_counter() - t0
        time.sleep(0.2)  # let the last echoes land before timing wake-ups
        wake = active.wake_ups(self.fds, plan.wake_samples)
        self.rep.send(ActiveDone(plan.index, sent, seconds, wake.counts))

    def _histogram(self) -> Histogram:
        for seconds in self.latencies:
            self.hist.add(seconds * 1e6)
        self.latencies = array("f")
        return self.hist

    def release(self) -> None:
        if self.watch is not None:
            self.fds.extend(self.watch.release())
            self.fds.extend(self.pending)
        close_with_rst(self.fds)
        self.fds = array("i")

    def run(self) -> None:
        signal.signal(signal.SIGUSR1, self._on_stop)
        signal.signal(signal.SIGTERM, self._on_release)
        signal.signal(signal.SIGUSR2, self._on_go)
        soft = raise_nofile(self.plan.nofile)
        base = self.stats.open_fds()
        self.ep = select.epoll()  # analyze counts this fd as the epoll overhead
        if self.plan.watch:
            p, check = self.plan, checks.parse(self.plan.check)
            self.watch = Watch(
                self.ep,
                check,
                p.check_timeout,
                p.check_every,
                os.close,
                settle=p.settle,
                verdicts=self._verdict,
            )
        self.rep.send(ClientStart(self.plan.index, os.getpid(), soft, base, self.stats.rss()))
        self.open_all()
        if self.watch is not None:
            self.top_up()
            self.watch.verify()
        self.progress(final=True)
        self.tend()
        self.release()
        self.rep.send(Released(self.plan.index))


def run_client(plan: ClientPlan, rep: Reporter) -> None:
    ClientWorker(plan, rep).run()


def settle_most(plan: ClientPlan) -> float:
    """The longest a served connection settles: SETTLE_RTTS check round trips, each at
    most the check timeout, or the settle floor."""
    return max(plan.settle, SETTLE_RTTS * plan.check_timeout)

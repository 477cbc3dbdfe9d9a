"""What a client worker's parts share: its plan, its connections (held fds, those
still connecting, the watch of a real server's), what went wrong (Tally), and the
flags its signals set. Plain state: the parts that act on it are connector.py
(starting connections), completions.py (hearing them complete), opening.py (the
opening's pace), frontier.py (the frontier after a stop) and client.py (the
worker's life)."""

from __future__ import annotations

import errno
import select
from array import array
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Literal

from tcpceiling.probe.run import budget
from tcpceiling.probe.run.slabmeter import SlabMeter
from tcpceiling.probe.serving.watch import Watch
from tcpceiling.probe.uring.engine import EngineChoice
from tcpceiling.probe.workers import pacing
from tcpceiling.probe.workers.errnos import ERRNO_CONSTRAINT
from tcpceiling.probe.workers.histogram import Histogram
from tcpceiling.probe.workers.messages import Failure
from tcpceiling.probe.workers.worker import SelfStats

TIMEOUTS_ARE_A_LIMIT = 10
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
    slab_meter: SlabMeter | None = None  # stop before the run's Slab outgrows its room
    cgroup_lines: tuple[budget.CgroupLine, ...] = ()  # stop before any is crossed
    watch: bool = False  # the peer is a real server: check and watch every connection
    check: str = "none"
    check_timeout: float = 2.0
    check_every: float | None = None
    settle: float = 0.1  # seconds a passing check must stay unrefused (serving/watch.py)
    max_pending: int = 1024  # handshakes and checks in flight at once (the most)
    message_rate: float = 0.0  # per held connection per second, on SIGUSR2
    message_bytes: int = 64
    traffic_seconds: float = 5.0
    wake_samples: int = 0
    first: int = 0  # where in the turn over the tuples this worker starts (connections)
    burst: int = 1  # connections in a row toward one tuple (the fast path)
    engine: EngineChoice = "epoll"  # the fast path's (probe/uring/engine.py)


class Tally:
    """The errnos a worker saw, by what they mean (messages.Failure): with a real
    server its refusals, resets and timeouts go to the watch, the rest are ours."""

    def __init__(self) -> None:
        self.errors: Counter[int] = Counter()
        self.failure = Failure()

    def record(self, num: int, watch: Watch | None, seq: int) -> None:
        self.errors[num] += 1
        f = self.failure
        if not f.first:
            self.failure = f = replace(f, first=num)
        if watch is not None and num in SERVER_ERRNOS:
            watch.fail(SERVER_ERRNOS[num], seq)
            return
        if not f.client:
            self.failure = f = replace(f, client=num)
        repeated_timeouts = num == errno.ETIMEDOUT and self.errors[num] >= TIMEOUTS_ARE_A_LIMIT
        if not f.limit and (
            repeated_timeouts
            or (num in ERRNO_CONSTRAINT and num not in (errno.EADDRNOTAVAIL, errno.ETIMEDOUT))
        ):
            self.failure = replace(f, limit=num)


@dataclass
class Conns:
    """One client worker's connections and flags."""

    plan: ClientPlan
    fds: array[int] = field(default_factory=lambda: array("i"))
    pending: dict[int, float] = field(default_factory=dict)  # fd -> connect() started
    pending_host: dict[int, tuple[str, int]] = field(default_factory=dict)  # (host, attempt)
    tally: Tally = field(default_factory=Tally)
    hist: Histogram = field(default_factory=Histogram)
    latencies: array[float] = field(default_factory=lambda: array("f"))  # seconds
    ep: select.epoll | None = None
    watch: Watch | None = None
    window: pacing.Window = field(init=False)  # of the plan's max_pending
    stats: SelfStats = field(default_factory=SelfStats)
    attempts: int = 0
    stopping: bool = False
    releasing: bool = False
    go: bool = False
    guard: Literal["memory"] | None = None

    def __post_init__(self) -> None:
        self.window = pacing.Window(self.plan.max_pending)

    @property
    def epoll(self) -> select.epoll:
        assert self.ep is not None
        return self.ep

    @property
    def watching(self) -> Watch:
        assert self.watch is not None
        return self.watch

    def fail(self, num: int, seq: int | None = None) -> None:
        self.tally.record(num, self.watch, self.attempts if seq is None else seq)

    def in_flight(self) -> int:
        return len(self.pending) + (len(self.watch.checking) if self.watch else 0)

    def unsettled(self) -> int:
        """In flight, or served so recently that a refusal may still come."""
        return self.in_flight() + (len(self.watch.settling) if self.watch else 0)

    def established(self) -> int:
        return self.watch.open_count if self.watch else len(self.fds)

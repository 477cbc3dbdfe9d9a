"""What `tcpceiling rate` is asked (ChurnConfig) and what it answers (ChurnResult),
with the constants its parts share."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from typing import Literal

from tcpceiling.analysis.model import Endpoint
from tcpceiling.errors import InputError
from tcpceiling.probe.run.result import Stop
from tcpceiling.probe.serving import checks
from tcpceiling.probe.uring.engine import EngineChoice, EngineRan

CloseMode = Literal["client", "server", "rst"]
SINK_PORT = 32000
REPORT_EVERY = 0.5
BURST = 64  # cycles between clock reads when not paced
#: on io_uring: cycles per burst (probe/uring/churn.py). Larger bursts leave more of
#: the loopback packets' softirq work to ksoftirqd, which the worker then waits for:
#: over 5 s of one worker, ksoftirqd ran 0.22 s at 16, 0.46 s at 64, 0.75 s at 256,
#: and the rate peaked at 32-64 (docs/benchmarks.md, "Churn")
URING_BURST = 64
#: Counters that say why the rate stopped growing (/proc/net/netstat TcpExt).
COUNTERS = (
    "TCPTimeWaitOverflow",
    "TWRecycled",
    "ListenOverflows",
    "ListenDrops",
    "TCPReqQFullDrop",
    "SyncookiesSent",
)
#: The client's port search fails this way when every port is in TIME_WAIT.
PORTS_GONE = (errno.EADDRNOTAVAIL, errno.EADDRINUSE)


@dataclass(frozen=True)
class ChurnConfig:
    """rate None: as fast as the workers go (the plateau)."""

    rate: float | None = None
    duration: float = 5.0
    close: CloseMode = "client"
    workers: int = 1
    sysctls: tuple[tuple[str, str], ...] = ()
    isolate: bool | None = None
    connect_timeout: float = 1.0
    ramp: bool = False  # rate None only: double the workers up to `workers` until the
    # rate stops growing (< 5 % more) or errors begin; the best step is the plateau
    connect: Endpoint | None = None  # a real server instead of the built-in pairs
    check: str = "none"  # a request whose valid reply makes the cycle count
    netns: str | None = None  # an existing namespace to run in
    cgroup_floor: int | None = None  # None: the memory guard's default (probe.budget)
    #: source addresses the cycles rotate over (each its own 4-tuples: ports x sources
    #: per TIME_WAIT period); () lets the kernel pick
    sources: tuple[str, ...] = ()
    #: the built-in pairs' cycles in io_uring bursts where allowed (auto), or not
    engine: EngineChoice = "auto"

    def __post_init__(self) -> None:
        if checks.parse(self.check).kind != "none" and self.connect is None:
            raise InputError("--check needs --connect (the built-in sink is not a service)")
        if self.rate is not None and self.rate <= 0:
            raise InputError("--rate must be positive (or 'max')")
        if not 0 < self.duration <= 3600:
            raise InputError("--duration must be in (0, 3600] seconds")
        if self.workers < 1:
            raise InputError("--workers must be at least 1")

    @property
    def isolated(self) -> bool:
        """A private namespace: by default when root and the sink is ours."""
        if self.isolate is None:
            return os.geteuid() == 0 and self.connect is None and self.netns is None
        return self.isolate


@dataclass(frozen=True)
class ChurnResult:
    close: CloseMode
    rate_asked: float | None
    duration: float
    completed: int
    #: what can be sustained: the run's own rate, or once the ports ran out the
    #: long-run rate TIME_WAIT lets through, measured (steady_per_s) when the run
    #: went on a TIME_WAIT period past the shortage, else predicted (analyze's
    #: time_wait for the run's namespace); sustained_from says which
    sustained_per_s: float
    #: completed cycles per second of the run, summed over the workers
    per_second: tuple[int, ...]
    connect_latency_us: dict[str, float | None]
    #: connect() latency as (bucket's upper edge in µs, count): the distribution
    connect_latency_histogram: tuple[tuple[float, int], ...]
    #: analyze's rate ceiling for the run's namespace and the limit it names
    predicted_per_s: float | None
    predicted_binding: str | None
    #: connect latency percentiles of every second (p50, p95, p99)
    latency_per_second_us: tuple[dict[str, float | None], ...]
    #: once the ports ran out: the cycles after / the time after, when the run went on
    #: for a TIME_WAIT period (60 s) past it; the rate TIME_WAIT lets through
    steady_per_s: float | None
    errno_counts: dict[str, int]
    time_wait: dict[str, int]  # TIME_WAIT entries at the end, by side
    counters: dict[str, int]  # deltas over the run
    #: both ends (one process) per cycle, from the bursts that completed cycles (a
    #: remote server's side: its CPU over the run)
    cpu_us_per_cycle: dict[str, float | None]
    stop: Stop
    isolated: bool
    netns: str | None
    notes: tuple[str, ...] = ()
    engine: EngineRan = "epoll"  # what the cycles ran on (probe/uring/engine.py)
    steps: tuple[tuple[int, float], ...] = ()  # the ramp: (workers, sustained per s)
    sustained_from: Literal["run", "measured", "predicted"] = "run"
    worker_cpu_seconds: float = 0.0  # the workers' CPU over the whole run, retries included
    burst_per_s: float = 0.0  # completed / duration: the first range's burst included

"""The result of a probe run: plain data that serialises to JSON and merges."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from tcpceiling.analysis.model import ConstraintId, IoModel
from tcpceiling.probe.uring.engine import EngineRan
from tcpceiling.probe.workers.messages import Frontier

#: Why opening stopped: the target, a limit of this host (a constraint id, named
#: from the errno), a guard, the user, a dead worker, or the server's doing.
ServerReason = Literal[
    "server",  # a real server's connections kept failing; attributed to one of:
    "server_reply",
    "server_evicted",
    "server_closed",
    "server_nofile",
    "server_refused",
    "server_reset",
    "server_silent",
    "server_queued",
    "server_timeout",
    "refused",
    "reset",
]
StopReason = (
    ConstraintId
    | ServerReason
    | Literal["target", "guard:memory", "guard:duration", "interrupted", "worker_died", "unknown"]
    | Literal["tw_buckets"]  # a churn run: TIME_WAIT entries skipped past tcp_max_tw_buckets
)


@dataclass(frozen=True)
class Stop:
    """Why opening stopped: 'target', a constraint id, 'guard:memory', 'guard:duration',
    'interrupted', 'worker_died', or with a real server one of evidence.py's server
    reasons; which side hit its limit; the first errno seen and the count per errno;
    the evidence read on this host (server side)."""

    reason: StopReason
    errno: str | None = None
    errno_counts: dict[str, int] = field(default_factory=dict)
    detail: str = ""
    side: str | None = None  # "client" | "server" when a limit stopped the run
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Predicted:
    ceiling: int | None
    binding: str | None
    runners_up: tuple[str, ...] = ()
    #: analyze's kernel memory per connection for the run (both ends when the peer is
    #: on this host), to set beside the measured per_connection.kernel_bytes
    bytes_per_connection: float | None = None


@dataclass(frozen=True)
class PerConnection:
    """Bytes per established connection (both ends: client and sink are on this host)."""

    kernel_bytes: float | None
    user_bytes: float | None
    mem_available_bytes: float | None
    slab_breakdown: dict[str, float] = field(default_factory=dict)
    #: breakdown names whose cache SLUB merged with others (parse.slab_aliases): the
    #: bytes under "eventpoll_epi" are tcp_bind_bucket's too on this machine
    slab_shared: dict[str, list[str]] = field(default_factory=dict)
    #: Slab + KernelStack + PageTables growth plus RSS growth of every process: what
    #: a connection costs whole (a thread's kernel stack and page tables are not Slab).
    total_bytes: float | None = None
    task_bytes: float | None = None  # KernelStack + PageTables growth alone
    #: reclaimable Slab growth past the sockets' own inodes and dentries, left out of
    #: kernel_bytes (probe/run/slabmeter.py): the proc inodes and dentries another
    #: process made reading /proc/PID/fd of the run's workers, freed under pressure
    foreign_reclaimable_bytes: float | None = None


@dataclass(frozen=True)
class Traffic:
    """A traffic profile run on the held connections, and what it cost the server
    (the sink: psutil CPU times of its processes, all threads included)."""

    message_rate: float  # per connection per second
    message_bytes: int
    seconds: float
    messages: int
    server_cpu_seconds: float
    cpu_us_per_message: float | None  # microseconds of server CPU per message echoed
    cpu_us_per_connect: float | None  # the sink's CPU while accepting, per connection
    kernel_bytes_active: float | None  # Slab growth per connection after the traffic


@dataclass(frozen=True)
class GuardedCgroup:
    """A memory cgroup the run's processes were in: its line and the kernel's count
    of OOM kills in it before and after (unchanged means the guard held)."""

    path: str
    limit: int
    floor: int
    working_set_start: int
    oom_kills_before: int | None
    oom_kills_after: int | None


@dataclass(frozen=True)
class MemoryGuard:
    """The run's memory budget (probe.budget): bytes it could take, and what bounds it."""

    room: int
    protects: Literal["memory", "cgroup_memory"]
    host_floor: int
    cgroups: tuple[GuardedCgroup, ...] = ()


@dataclass(frozen=True)
class ProbeResult:
    established: int
    target: int | None
    stop: Stop
    predicted: Predicted
    per_connection: PerConnection
    rate_per_s: float
    open_seconds: float
    workers: int
    sink_workers: int
    connect_latency_us: dict[str, float | None]
    cpu_seconds_per_1000: float | None
    sink_accepted: int
    isolated: bool
    netns: str | None
    sources: int
    sink_endpoints: tuple[str, ...]
    worker_pids: tuple[int, ...] = ()
    notes: tuple[str, ...] = ()
    mode: Literal["sink", "server"] = "sink"  # the built-in sink, or --connect
    check: str = "none"
    #: most connections served and still open at once, by a poll() sweep of every
    #: worker's served connections after opening and after the hold (None: no check)
    served: int | None = None
    #: first checks the server answered (served or refused in its words) per second of
    #: opening: its accept rate as the probe saw it (with a check)
    answered_per_s: float | None = None
    window_halvings: int = 0  # times the opening window halved (probe/workers/pacing.py)
    #: what the frontier did after a stop by refusals, one per client worker where it
    #: ran (probe/workers/frontier.py FrontierSearch)
    frontier: tuple[Frontier, ...] = ()
    side: str | None = None
    outcomes: dict[str, int] = field(default_factory=dict)
    replies: dict[str, int] = field(default_factory=dict)
    timeline: tuple[tuple[float, int, int | None], ...] = ()  # (s, established, served)
    #: (s, established, Slab bytes, workers' RSS bytes) every half second: the report
    #: fits bytes per connection on it
    memory_curve: tuple[tuple[float, int, int, int], ...] = ()
    io_model: IoModel = "epoll"
    #: what opened and accepted: io_uring batches, epoll, or both (some workers were
    #: refused io_uring; the notes say why): probe/uring/engine.py
    engine: EngineRan = "epoll"
    setup_seconds: float | None = None  # until the server side held every connection
    cpu_seconds: float | None = None  # every process of the run, coordinator included
    traffic: Traffic | None = None
    wake_latency_us: dict[str, float | None] | None = None
    memory_guard: MemoryGuard | None = None
    #: connect() latency as (bucket's upper edge in µs, count): the distribution
    connect_latency_histogram: tuple[tuple[float, int], ...] = ()

    @property
    def target_reached(self) -> bool:
        return self.stop.reason == "target"

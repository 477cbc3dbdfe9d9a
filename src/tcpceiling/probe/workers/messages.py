"""What workers tell the coordinator: typed messages, one JSON line each.

Every message is a frozen dataclass; `encode` and `decode` are the one pair that
turns them into a line on the worker's pipe and back. The coordinator keeps one
`WorkerState` per child, updated by `WorkerState.apply`, and reads typed fields,
never string keys.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from tcpceiling.probe.uring.engine import Engine

Role = Literal["client", "sink"]
FrontierEnd = Literal["refused", "evicted", "held", "attempts", "time", "stopped"]


@dataclass(frozen=True)
class Failure:
    """The errnos a client worker saw, by what they mean (0: none yet).

    first: the first errno of any kind (reported as the run's first errno).
    client: the first that is not the server's doing (with a real server, refused,
    reset and timeouts are the server's; a local EMFILE is not).
    limit: one that names a limit of this host by itself (EMFILE, ENFILE, ENOMEM,
    repeated timeouts...): the worker stops on it."""

    first: int = 0
    client: int = 0
    limit: int = 0


@dataclass(frozen=True)
class WatchSummary:
    """A real-server worker's view of its connections (tcpceiling.probe.serving.watch)."""

    open: int = 0
    served: int | None = None
    held: int = 0
    silent: int = 0
    checking: int = 0
    settling: int = 0
    verified: int | None = None  # served and open at the latest sweep (None: none yet)
    sweeps: int = 0
    best: int = 0  # the most one sweep counted (one worker's sweep is one moment)
    answered: int = 0  # first checks the server answered, either way
    totals: dict[str, int] = field(default_factory=dict)
    replies: dict[str, int] = field(default_factory=dict)
    limit_kind: str | None = None


@dataclass(frozen=True)
class Frontier:
    """What a client worker's frontier did after a stop by refusals (client.py
    ClientWorker._frontier) or by evictions (ClientWorker.top_up): the most its sweeps
    counted at once before it and after it, the connections it added, in how many
    settled steps, whether it went on one at a time, and what ended it: a step the
    server refused in, an eviction, the worker's share of the target held (or, after
    evictions, the most it held refilled), as many attempts again as the share made
    (TOP_UP_MOST after evictions), its time (FRONTIER_S) up, or the run stopping."""

    opening_best: int = 0
    best: int = 0
    added: int = 0
    steps: int = 0
    one_at_a_time: bool = False
    ended: FrontierEnd = "refused"
    after: Literal["refusals", "evictions"] = "refusals"


@dataclass(frozen=True)
class ClientStart:
    index: int
    pid: int
    nofile: int
    open_fds: int
    rss: int
    engine: Engine = "epoll"
    refused: str = ""  # why io_uring was not used, when it was asked for


@dataclass(frozen=True)
class ClientProgress:
    """Where a client worker stands; `final` once it has stopped opening."""

    index: int
    established: int
    pending: int = 0
    final: bool = False
    short: bool = False  # final, short of its share
    errors: dict[int, int] = field(default_factory=dict)
    failure: Failure = Failure()
    watch: WatchSummary | None = None
    hist: dict[int, int] = field(default_factory=dict)  # latency buckets, final only
    rss: int = 0
    guard: Literal["memory"] | None = None
    halvings: int = 0  # times the opening window halved (pacing.Window)
    frontier: Frontier | None = None  # once the frontier has run (a stop by refusals)


@dataclass(frozen=True)
class ActiveDone:
    index: int
    messages: int
    seconds: float
    wake_hist: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class SinkReady:
    index: int
    pid: int
    rss: int
    engine: Engine = "epoll"
    refused: str = ""


@dataclass(frozen=True)
class SinkProgress:
    index: int
    accepted: int
    full_errno: int = 0  # why it accepts no more (EMFILE, EAGAIN from pthread_create)
    guard: Literal["memory"] | None = None  # it stopped accepting at the memory guard
    rss: int = 0
    cpu: float = 0.0
    releasing: bool = False


@dataclass(frozen=True)
class Released:
    index: int
    accepted: int = 0


@dataclass(frozen=True)
class Crash:
    error: str


@dataclass(frozen=True)
class ChurnProgress:
    """A churn worker's cycles so far: completed per second of its run (index =
    second), errnos, connect latency buckets; the sink's accepted and closed."""

    index: int
    role: Literal["client", "sink"]
    completed: int = 0
    per_second: tuple[int, ...] = ()
    errors: dict[int, int] = field(default_factory=dict)
    hist: dict[int, int] = field(default_factory=dict)
    final: bool = False
    cpu: float = 0.0  # the worker's own user + system CPU seconds
    per_second_hist: tuple[dict[int, int], ...] = ()  # connect latency buckets by second
    exhausted_at: float | None = None  # seconds into the run of the first port shortage
    after_exhausted: int = 0  # cycles completed after it
    cpu_cycling: float = 0.0  # of `cpu`, spent in bursts that completed cycles
    engine: Engine = "epoll"
    refused: str = ""


Message: TypeAlias = (
    ClientStart
    | ClientProgress
    | ActiveDone
    | SinkReady
    | SinkProgress
    | Released
    | Crash
    | ChurnProgress
)
KINDS: dict[str, type[Any]] = {
    cls.__name__: cls
    for cls in (
        ClientStart,
        ClientProgress,
        ActiveDone,
        SinkReady,
        SinkProgress,
        Released,
        Crash,
        ChurnProgress,
    )
}
_NESTED: dict[str, type[Any]] = {"failure": Failure, "watch": WatchSummary, "frontier": Frontier}
_INT_KEYS = {"errors", "hist", "wake_hist"}


def encode(msg: Message) -> bytes:
    data = {"kind": type(msg).__name__, **dataclasses.asdict(msg)}
    return (json.dumps(data, separators=(",", ":")) + "\n").encode()


def decode(line: bytes | str) -> Message:
    """One line back into its message (JSON turned int keys into strings)."""
    data = json.loads(line)
    cls = KINDS[data.pop("kind")]
    for name, value in list(data.items()):
        if name in _NESTED and value is not None:
            data[name] = _NESTED[name](**value)
        elif name == "per_second":
            data[name] = tuple(value)
        elif name == "per_second_hist":
            data[name] = tuple({int(k): v for k, v in h.items()} for h in value)
        elif name in _INT_KEYS:
            data[name] = {int(k): v for k, v in value.items()}
    return cls(**data)  # type: ignore[no-any-return]


def recorded(role: str, index: int, msg: Message) -> str:
    """One line of a recorded stream: which child said it, and the message."""
    return json.dumps({"role": role, "index": index, "msg": encode(msg).decode().strip()}) + "\n"


def replay(lines: list[str]) -> tuple[list[WorkerState], list[WorkerState]]:
    """A recorded stream back into the (clients, sinks) states it built."""
    states: dict[tuple[str, int], WorkerState] = {}
    for line in lines:
        if not line.strip():
            continue
        rec = json.loads(line)
        key = (rec["role"], int(rec["index"]))
        state = states.setdefault(key, WorkerState(rec["role"], key[1]))
        state.apply(decode(rec["msg"]))
    ordered = [states[k] for k in sorted(states)]
    return [s for s in ordered if s.role == "client"], [s for s in ordered if s.role == "sink"]


@dataclass
class WorkerState:
    """All the coordinator knows of one child, from its messages."""

    role: Role
    index: int
    pid: int = 0
    start_rss: int = 0
    started: bool = False
    client: ClientProgress | None = None  # the latest
    finished: bool = False  # a client's final progress came (it stopped opening)
    short: bool = False  # ... short of its share
    hist: dict[int, int] = field(default_factory=dict)  # connect latencies, from the final
    sink: SinkProgress | None = None  # the latest
    nofile: int | None = None
    open_fds: int | None = None
    active: ActiveDone | None = None
    released: bool = False
    crash: str | None = None
    churn: ChurnProgress | None = None  # the latest, for a churn worker
    engine: Engine = "epoll"  # what it ran on (probe/uring/engine.py)
    refused: str = ""

    def apply(self, msg: Message) -> None:
        match msg:
            case ClientStart():
                self.started, self.pid, self.start_rss = True, msg.pid, msg.rss
                self.nofile, self.open_fds = msg.nofile, msg.open_fds
                self.engine, self.refused = msg.engine, msg.refused
            case SinkReady():
                self.started, self.pid, self.start_rss = True, msg.pid, msg.rss
                self.engine, self.refused = msg.engine, msg.refused
            case ClientProgress():
                self.client = msg
                if msg.final:  # later progress (while holding) does not undo this
                    self.finished, self.short, self.hist = True, msg.short, msg.hist
            case SinkProgress():
                self.sink = msg
            case ActiveDone():
                self.active = msg
            case Released():
                self.released = True
                if self.sink is not None:
                    self.sink = dataclasses.replace(self.sink, accepted=msg.accepted)
            case Crash():
                self.crash = msg.error
            case ChurnProgress():
                self.churn = msg
                self.engine, self.refused = msg.engine, msg.refused
                if msg.final:
                    self.finished = True

    @property
    def established(self) -> int:
        return self.client.established if self.client else 0

    @property
    def accepted(self) -> int:
        return self.sink.accepted if self.sink else 0

    @property
    def watch(self) -> WatchSummary:
        return (self.client.watch if self.client else None) or WatchSummary()

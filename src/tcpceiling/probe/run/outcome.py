"""The result of a run, assembled from what the coordinator gathered: the workers'
states, the memory samples, the prediction, and the server-side counts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from tcpceiling.analysis.analyze import evaluate
from tcpceiling.analysis.model import ScenarioResult
from tcpceiling.host import parse
from tcpceiling.host.parse import RLimit
from tcpceiling.host.roots import Roots
from tcpceiling.probe.run import measure, slabmeter
from tcpceiling.probe.run.budget import MemoryBudget, oom_kills
from tcpceiling.probe.run.config import ProbeConfig
from tcpceiling.probe.run.plan import Plan, client_scenario
from tcpceiling.probe.run.result import (
    GuardedCgroup,
    MemoryGuard,
    Predicted,
    ProbeResult,
    Stop,
    Traffic,
)
from tcpceiling.probe.serving import attribution, checks, evidence
from tcpceiling.probe.uring.engine import EngineRan, ran_on, refusal_notes
from tcpceiling.probe.workers.histogram import Histogram
from tcpceiling.probe.workers.messages import Frontier, WorkerState

TIMELINE_POINTS = 3600


def watch_counts(clients: Sequence[WorkerState], key: str) -> dict[str, int]:
    """A per-worker Watch counter ("totals" or "replies") summed over the workers."""
    out: dict[str, int] = {}
    for w in clients:
        counter = w.watch.totals if key == "totals" else w.watch.replies
        for k, n in counter.items():
            out[k] = out.get(k, 0) + n
    return out


#: One point of the memory curve: (seconds, established, Slab bytes, workers' RSS bytes).
MemoryPoint = tuple[float, int, int, int]
MEMORY_STEP_S = 0.5
TIMELINE_STEP_S = 0.25


@dataclass
class Watched:
    """The run over time: established (and with a real server, served) every quarter
    second; with a real server the most served at once. The memory curve (Slab and
    the workers' RSS against established) every half second, for the report's
    bytes-per-connection fit."""

    timeline: list[tuple[float, int, int | None]] = field(default_factory=list)
    memory: list[MemoryPoint] = field(default_factory=list)

    def sample_memory(self, t: float, established: int, slab: int, rss: int) -> None:
        if len(self.memory) < TIMELINE_POINTS:
            self.memory.append((round(t, 2), established, slab, rss))

    def memory_due(self, t: float) -> bool:
        return not self.memory or t - self.memory[-1][0] >= MEMORY_STEP_S

    def sample(self, clients: Sequence[WorkerState], t: float, cfg: ProbeConfig) -> None:
        t = round(t, 2)
        if (not self.timeline or t - self.timeline[-1][0] >= TIMELINE_STEP_S) and len(
            self.timeline
        ) < TIMELINE_POINTS:
            served = sum(w.watch.served or 0 for w in clients) if cfg.check != "none" else None
            self.timeline.append((t, sum(w.established for w in clients), served))


@dataclass(frozen=True)
class Timing:
    open_seconds: float
    setup: float | None = None  # until the sink had accepted what was established
    sink_cpu_open: float = 0.0  # the sink's CPU seconds over the opening


@dataclass(frozen=True)
class ActiveWindow:
    """The traffic window: the sink's CPU over it, memory before opening and after."""

    cpu: float
    before: measure.Sample
    after: measure.Sample
    held: int


@dataclass(frozen=True)
class Inputs:
    cfg: ProbeConfig
    plan: Plan
    stop: Stop
    held: int
    timing: Timing
    before: measure.Sample
    after: measure.Sample
    usage: measure.Usage
    clients: Sequence[WorkerState]
    sinks: Sequence[WorkerState]
    worker_pids: tuple[int, ...]
    netns: str | None
    notes: tuple[str, ...]
    server_prediction: ScenarioResult | None
    server_before: evidence.ServerSample | None
    watched: Watched
    active: ActiveWindow | None
    budget: MemoryBudget | None = None
    served: int | None = None  # verified: served and open at once (coordinator.verified)


def prediction(i: Inputs, meminfo: parse.Meminfo) -> Predicted:
    """analyze's client scenario with the workers' real fd limits and the memory
    that was available when opening began (the memory guard's budget too); the
    thread sink's own prediction when it is lower."""
    plan = i.plan
    first = next((w for w in i.clients if w.nofile is not None), None)
    snap = replace(plan.snapshot, system=replace(plan.snapshot.system, meminfo=meminfo))
    if i.budget is not None:  # the cgroup as opening began: the run's processes charged
        snap = replace(snap, cgroup=i.budget.view)
    if first is not None and first.nofile is not None and first.open_fds is not None:
        soft = first.nofile
        proc = replace(
            snap.process,
            open_fds=first.open_fds,
            limits=replace(snap.process.limits, nofile=RLimit(soft, soft)),
        )
        snap = replace(snap, process=proc)
    processes = len(i.clients) if i.cfg.workers or i.cfg.target else 10_000
    scenario = client_scenario(i.cfg, plan, max(1, processes))
    res = evaluate(snap, scenario, plan.routes)
    per = _kernel_bytes(evaluate(snap, replace(scenario, peer_local=True), plan.routes)
                        if not i.cfg.server_mode else res)  # fmt: skip
    srv = i.server_prediction
    if srv and srv.ceiling is not None and (res.ceiling is None or srv.ceiling < res.ceiling):
        return Predicted(srv.ceiling, srv.binding, (*srv.runners_up, "client"), per)
    return Predicted(res.ceiling, res.binding, res.runners_up, per)


def _kernel_bytes(res: ScenarioResult) -> float | None:
    """analyze's kernel memory per connection (the memory constraint's cost): both
    ends for the built-in sink (evaluated with the peer local), the client's own
    against a server."""
    try:
        return res.constraint("memory").per_connection
    except KeyError:
        return None


def traffic(i: Inputs) -> tuple[Traffic | None, dict[str, float | None] | None]:
    """The active phase's figures: traffic CPU per message, wake-up latencies."""
    a = i.active
    if a is None:
        return None, None
    done = [w.active for w in i.clients if w.active is not None]
    hist = Histogram()
    for d in done:
        hist.merge(d.wake_hist)
    wake = hist.summary() if i.cfg.wake_samples else None
    if i.cfg.message_rate <= 0:
        return None, wake
    messages = sum(d.messages for d in done)
    n = a.held
    return (
        Traffic(
            message_rate=i.cfg.message_rate,
            message_bytes=i.cfg.message_bytes,
            seconds=round(max((d.seconds for d in done), default=0.0), 3),
            messages=messages,
            server_cpu_seconds=round(a.cpu, 4),
            cpu_us_per_message=round(a.cpu * 1e6 / messages, 3) if messages else None,
            cpu_us_per_connect=round(i.timing.sink_cpu_open * 1e6 / n, 3) if n else None,
            kernel_bytes_active=round((a.after.meminfo.slab - a.before.meminfo.slab) / n, 1),
        ),
        wake,
    )


def mode_notes(i: Inputs) -> tuple[str, ...]:
    notes = []
    if not i.netns:
        notes.append("ran in the host's network namespace (not isolated)")
    if i.cfg.server_mode and i.cfg.check == "none":
        notes.append(
            "no --check: 'established' is all that is known; the server may not have "
            "accepted, let alone served, these connections"
        )
    served = checks.parse(i.cfg.check).served_means
    if i.cfg.server_mode and served:
        notes.append(served)
    halvings = sum(w.client.halvings for w in i.clients if w.client)
    rate = answered_rate(i)
    if halvings and rate is not None:
        notes.append(
            f"opening was paced to the server: it answered about {rate:,.0f} new connections/s "
            f"(the window of handshakes and checks in flight halved {halvings} time(s) when "
            "answers slowed): its accept rate, a rate finding, not a limit on how many it holds"
        )
    if i.cfg.server_mode and i.server_before is None:
        notes.append("the server is not on this host: no server-side evidence was read")
    if ran := frontiers(i.clients):
        notes.append(frontier_note(ran, i.served))
    return tuple(notes) + engine_notes(i)


def engine_of(i: Inputs) -> EngineRan:
    """What the workers ran on (a thread per connection accepts in its threads, on
    either engine: its sinks are left out)."""
    sinks = i.sinks if i.cfg.io_model == "epoll" else []
    return ran_on(w.engine for w in [*i.clients, *sinks] if w.started)


def engine_notes(i: Inputs) -> tuple[str, ...]:
    """Why io_uring was not used where it was asked for."""
    notes: list[str] = []
    if i.cfg.engine == "uring" and i.cfg.server_mode:
        notes.append(
            "toward a real server the opening is paced and each connection checked, one "
            "at a time: it runs on epoll whatever --engine says"
        )
    notes += refusal_notes(i.cfg.engine, (w.refused for w in [*i.clients, *i.sinks]))
    return tuple(notes)


def frontiers(clients: Sequence[WorkerState]) -> tuple[Frontier, ...]:
    """What each client worker's frontier did, for those where it ran."""
    return tuple(w.client.frontier for w in clients if w.client and w.client.frontier)


FRONTIER_ENDS = {
    "refused": "until the server refused again",
    "evicted": "until the server evicted again",
    "held": "until the target's share was held",
    "attempts": "until it had tried as many again as the target",
    "time": "until its time was up",
    "stopped": "until the run stopped",
}


def frontier_note(ran: Sequence[Frontier], served: int | None) -> str:
    """What the frontiers did, in a sentence: the connections added in settled steps,
    what ended them, and the most served at once before them (the workers' sweeps
    while opening, summed) and in the end (the run's served)."""
    before = sum(f.opening_best for f in ran)
    after = f"{served:,}" if served is not None else "unknown"
    steps, added = max(f.steps for f in ran), sum(f.added for f in ran)
    at_once = f"served at once {before:,} while it was still opening, {after} after"
    first = "eviction" if any(f.after == "evictions" for f in ran) else "refusal"
    words = {**FRONTIER_ENDS, "held": "until it held the most it had held again"}
    if first == "refusal":
        words = FRONTIER_ENDS
    ends = " or ".join(words[e] for e in sorted({f.ended for f in ran}))
    if not steps:
        return (
            f"after the first {first} the probe settled and swept again: nothing left to "
            f"add ({at_once})"
        )
    if first == "eviction":
        return (
            f"after the first eviction the probe added {added:,} connection(s) one at a "
            f"time, each settled and swept, {ends}: {at_once}"
        )
    if steps == 1 and all(f.ended == "refused" for f in ran):
        return (
            f"after the first refusal the probe settled, then tried {added:,} more: the "
            f"server refused again ({at_once})"
        )
    how = "doubling after each step the server took whole"
    if any(f.one_at_a_time for f in ran):
        how += ", then one at a time after the step it refused in"
    return (
        f"after the first refusal the probe settled, then added {added:,} connection(s) in "
        f"{steps} settled step(s), {how}, {ends}: {at_once}"
    )


def answered_rate(i: Inputs) -> float | None:
    """First checks answered per second of opening (None without a check)."""
    if not i.cfg.server_mode or i.cfg.check == "none" or not i.timing.open_seconds:
        return None
    answered = sum(w.watch.answered for w in i.clients)
    return round(answered / i.timing.open_seconds, 1)


def build(i: Inputs) -> ProbeResult:
    est, cfg, server = i.held, i.cfg, i.cfg.server_mode
    hist = Histogram()
    for w in i.clients:
        hist.merge(w.hist)
    outcomes: dict[str, int] = {}
    if server:
        outcomes = watch_counts(i.clients, "totals")
        outcomes["open_at_end"] = sum(w.established for w in i.clients)
        outcomes["silent_at_end"] = sum(w.watch.silent for w in i.clients)
    start_rss = sum(w.start_rss for w in [*i.clients, *i.sinks])
    served = attribution.accepted(i.sinks) if not server else i.served
    traffic_, wake = traffic(i)
    seconds, setup = i.timing.open_seconds, i.timing.setup
    share = slabmeter.socket_share(i.plan.snapshot.system.slabs)  # as the guard meters
    return ProbeResult(
        established=est,
        target=cfg.target,
        stop=i.stop,
        predicted=prediction(i, i.before.meminfo),
        per_connection=measure.per_connection(i.before, i.after, est, i.usage, start_rss, share),
        rate_per_s=round(est / seconds, 1) if seconds else 0.0,
        open_seconds=seconds,
        workers=len(i.clients),
        sink_workers=len(i.sinks),
        connect_latency_us=hist.summary(),
        cpu_seconds_per_1000=round(i.usage.cpu_seconds * 1000 / est, 4) if est else None,
        sink_accepted=attribution.accepted(i.sinks),
        isolated=cfg.isolated,
        netns=i.netns,
        sources=len(i.plan.sources),
        sink_endpoints=tuple(str(e) for e in i.plan.endpoints),
        worker_pids=i.worker_pids,
        notes=i.notes + tuple(i.plan.notes) + mode_notes(i),
        mode="server" if server else "sink",
        check=cfg.check,
        served=served,
        answered_per_s=answered_rate(i),
        window_halvings=sum(w.client.halvings for w in i.clients if w.client),
        frontier=frontiers(i.clients),
        side=i.stop.side,
        outcomes=outcomes,
        replies=watch_counts(i.clients, "replies") if server else {},
        timeline=tuple(i.watched.timeline),
        memory_curve=tuple(i.watched.memory),
        io_model=cfg.io_model,
        engine=engine_of(i),
        setup_seconds=round(setup, 3) if setup else None,
        cpu_seconds=round(i.usage.cpu_seconds, 3),
        traffic=traffic_,
        wake_latency_us=wake,
        memory_guard=memory_guard(i.budget),
        connect_latency_histogram=hist.buckets(),
    )


def memory_guard(b: MemoryBudget | None) -> MemoryGuard | None:
    """The budget as the result reports it, with each cgroup's OOM kills now."""
    if b is None:
        return None
    after = oom_kills(b.cgroups, Roots())
    return MemoryGuard(
        room=b.room,
        protects=b.protects,
        host_floor=b.host_floor,
        cgroups=tuple(
            GuardedCgroup(c.path, c.limit, c.floor, c.working_set, c.oom_kills, after.get(c.path))
            for c in b.cgroups
        ),
    )

"""The coordinator: carries out a plan (tcpceiling.probe.run.plan). It starts the sink
shards and the client workers (tcpceiling.probe.workers.children; forked, `parallel` at a
time as the previous ones fill their share), watches the guards, stops, measures,
releases, and leaves nothing behind. Why it stopped is decided from the workers'
messages by tcpceiling.probe.serving.attribution; the result is assembled by
tcpceiling.probe.outcome.
"""

from __future__ import annotations

import signal
import time
from contextlib import ExitStack
from dataclasses import replace
from functools import partial
from typing import Any

from tcpceiling.analysis.analyze import evaluate, sources_here
from tcpceiling.analysis.model import Endpoint, ScenarioResult
from tcpceiling.host import netns as netns_mod
from tcpceiling.host import parse, read
from tcpceiling.host.cgroups import read_cgroup
from tcpceiling.host.roots import Roots
from tcpceiling.probe.run import budget, isolate, measure, outcome, path
from tcpceiling.probe.run.config import ProbeConfig
from tcpceiling.probe.run.plan import (
    MAX_EXPECTED,
    PORT_BURST,
    Plan,
    make_plan,
    thread_sink_scenario,
)
from tcpceiling.probe.run.progress import Progress, RunProgress, ignore
from tcpceiling.probe.run.result import ProbeResult, Stop
from tcpceiling.probe.serving import attribution, evidence
from tcpceiling.probe.serving import upstream as proxy
from tcpceiling.probe.workers.children import Children
from tcpceiling.probe.workers.client import ClientPlan, run_client
from tcpceiling.probe.workers.sink import SinkMode, SinkPlan, run_sink
from tcpceiling.servers.find import find_listener
from tcpceiling.servers.model import AppLimit
from tcpceiling.servers.registry import app_limit

UNBOUNDED = 1 << 40
VERIFY_WAIT_S = 3.0  # a holding worker sweeps every 0.5 s (client.REPORT_EVERY x 2)


class Run:
    """One probe run; execute() returns the ProbeResult."""

    def __init__(self, cfg: ProbeConfig, progress: Progress | None = None) -> None:
        self.cfg = cfg
        self.report = progress or ignore
        self.kids = Children()
        self.assigned = 0
        self.stop: Stop | None = None
        self.interrupted = False
        self.netns: str | None = None
        self.notes: list[str] = []
        self.t0 = time.monotonic()
        self.slab_limit = 0
        self.budget: budget.MemoryBudget | None = None
        self.server_limit: AppLimit | None = None
        self.proxy_at: proxy.Where | None = None  # the server, found in its namespace
        self.in_flight_most: int | None = None  # per worker, within the listener's queue
        self.path_before: path.PathSample | None = None
        self.server_prediction: ScenarioResult | None = None
        self.watched = outcome.Watched()
        self.active_window: outcome.ActiveWindow | None = None

    # -- signals and children ---------------------------------------------------------
    def _on_signal(self, signum: int, _frame: object) -> None:
        self.interrupted = True

    def _pump(self) -> None:
        self.kids.pump()
        died = self.kids.died
        if died is not None and (self.stop is None or self.stop.reason != "worker_died"):
            self.stop = died
        t = time.monotonic() - self.t0
        self.watched.sample(self.kids.client_states, t, self.cfg)
        if self.watched.memory_due(t):
            pids = self.kids.live_pids(self.kids.clients) + self.kids.live_pids(self.kids.sinks)
            rss = measure.process_usage(pids).rss_bytes
            self.watched.sample_memory(t, self.established(), measure.mem_field("Slab"), rss)

    def established(self) -> int:
        return sum(w.established for w in self.kids.client_states)

    def sink_accepted(self) -> int:
        return attribution.accepted(self.kids.sink_states)

    # -- starting -----------------------------------------------------------------------
    def start_sinks(self, plan: Plan) -> None:
        eps = tuple((e.host, e.port) for e in plan.endpoints)
        backlog = plan.snapshot.net.somaxconn
        mode: SinkMode = "echo" if self.cfg.active else "hold"
        lines = budget.cgroup_lines(Roots(), self.cfg.cgroup_floor)
        for i in range(plan.sink_shards):
            k = plan.owned_ports
            mine = eps[i * k : (i + 1) * k] if k else eps
            sp = SinkPlan(i, mine, backlog, mode, io_model=self.cfg.io_model, cgroup_lines=lines)
            self.kids.spawn("sink", partial(run_sink, sp))
        self.kids.wait_for(self.kids.sinks, lambda w: w.started, 10, lambda: self.interrupted)

    def _spawn_client(self, plan: Plan) -> None:
        remaining = (self.cfg.target or MAX_EXPECTED * 10) - self.assigned
        index = len(self.kids.clients)
        last_allowed = self.cfg.workers is not None and index == self.cfg.workers - 1
        # --target max with the last allowed worker: it opens until a limit stops it.
        share = (
            UNBOUNDED
            if self.cfg.target is None and last_allowed
            else min(plan.client_capacity, remaining)
        )
        tuples = tuple(
            (s, e.host, e.port) for s in (plan.sources or (None,)) for e in plan.endpoints
        )
        cfg = self.cfg
        cp = ClientPlan(
            index=index,
            share=share,
            tuples=tuples,
            first=self.assigned,  # the turn over the tuples goes on where the last left it
            burst=PORT_BURST,
            nofile=cfg.worker_nofile,
            rate=cfg.rate,
            connect_timeout=cfg.connect_timeout,
            slab_limit=self.slab_limit,
            cgroup_lines=self.budget.cgroups if self.budget else (),
            watch=cfg.server_mode,
            check=cfg.check,
            check_timeout=cfg.check_timeout,
            check_every=cfg.check_every,
            settle=cfg.settle,
            max_pending=min(cfg.max_pending, self.in_flight_most or cfg.max_pending),
            message_rate=cfg.message_rate,
            message_bytes=cfg.message_bytes,
            traffic_seconds=cfg.traffic_seconds,
            wake_samples=cfg.wake_samples,
        )
        self.kids.spawn("client", partial(run_client, cp))
        self.assigned += share

    # -- the opening phase ---------------------------------------------------------------
    def _opening(self) -> list[Any]:
        return [
            c
            for c in self.kids.clients
            if not (self.kids.state(c).finished or self.kids.state(c).released)
            and c.exit_status is None
        ]

    def _task_limit(self) -> attribution.TaskLimit:
        """threads or cgroup_pids: whichever the server-side prediction says binds."""
        pred = self.server_prediction
        if pred is None:
            return "threads"
        ceilings: dict[str, int] = {
            c.id: int(c.ceiling) for c in pred.constraints if c.ceiling is not None
        }
        limits: tuple[attribution.TaskLimit, ...] = ("cgroup_pids", "threads")
        return min(limits, key=lambda k: ceilings.get(k, UNBOUNDED))

    def _limit_stop(self) -> Stop | None:
        return attribution.limit_stop(
            self.kids.client_states,
            self.kids.sink_states,
            self.cfg.server_mode,
            self._task_limit(),
        )

    def _may_spawn(self) -> bool:
        cfg = self.cfg
        return (
            (cfg.target is None or self.assigned < cfg.target)
            and (cfg.workers is None or len(self.kids.clients) < cfg.workers)
            and len(self._opening()) < (1 if cfg.rate else cfg.parallel)
        )

    def _guard(self, t0: float) -> Stop | None:
        """Ctrl-C/SIGTERM, the duration guard, the memory guard (the run's own Slab
        growth against its budget, measure.slab_limit, and every memory cgroup's
        working set against its line, budget.cgroup_breach)."""
        if self.interrupted:
            return Stop("interrupted")
        if time.monotonic() - t0 > self.cfg.max_duration:
            return Stop("guard:duration")
        breach = self._memory_breach()
        return budget.guard_stop(breach) if breach else None

    def _memory_breach(self) -> budget.Breach | None:
        if self.slab_limit and (slab := measure.mem_field("Slab")) > self.slab_limit:
            b = self.budget
            floor = b.host_floor if b else 0
            limit = self.slab_limit + floor  # the Slab level that would use up MemAvailable
            return budget.Breach("memory", "host", slab, self.slab_limit, limit, floor)
        return budget.cgroup_breach(self.budget.cgroups) if self.budget else None

    def _with_guard_evidence(self, stop: Stop) -> Stop:
        """A worker's guard stop carries no numbers: name the line from a reading now
        (the tightest cgroup when none is past its line any more)."""
        if stop.reason != "guard:memory" or stop.evidence:
            return stop
        breach = self._memory_breach() or (budget.nearest(self.budget) if self.budget else None)
        return budget.guard_stop(breach) if breach else stop

    def _tick(self, plan: Plan, t0: float) -> bool:
        """One pass of the opening loop; False when opening is over."""
        self._pump()
        self.stop = self.stop or self._guard(t0) or self._limit_stop()
        if self.stop is not None:
            return False
        while self._may_spawn():
            self._spawn_client(plan)
        est = self.established()
        self.report(
            RunProgress(
                "opening",
                est,
                self.cfg.target,
                time.monotonic() - t0,
                est,
                len(self.kids.clients),
                attribution.errno_counts(self.kids.client_states),
                measure.mem_available(),
            )
        )
        return bool(self._opening()) or self._may_spawn()

    def open_phase(self, plan: Plan) -> float:
        t0 = time.monotonic()
        while self._tick(plan, t0):
            time.sleep(0.05)
        self.kids.signal(self._opening(), signal.SIGUSR1)
        self.kids.wait_for(
            self.kids.clients,
            lambda w: w.finished,
            self.cfg.connect_timeout + 10,
            lambda: self.interrupted,
        )
        return time.monotonic() - t0

    def _settle_sinks(self, timeout: float = 3.0) -> None:
        """Wait until the sink reports it accepted what the clients established (or
        a full shard says it never will)."""
        deadline = time.monotonic() + max(timeout, self.established() / 5000)
        while time.monotonic() < deadline and self.sink_accepted() < self.established():
            self._pump()
            if attribution.sink_stop(self.kids.sink_states, self._task_limit()) is not None:
                break
            time.sleep(0.05)

    def verified(self) -> int | None:
        """Served and still open at once: the sum of every client worker's first
        poll() sweep (watch.Watch.verify) made after this call, all workers having
        stopped opening, so no sweep counts a connection another worker's later
        opening made the server drop; or one worker's best sweep, when larger (one
        worker's sweep is one moment: watch.Watch.verify). None without a check."""
        if not self.cfg.server_mode or self.cfg.check == "none":
            return None
        kids = self.kids
        after = {c.index: kids.state(c).watch.sweeps for c in kids.clients}
        kids.wait_for(
            kids.clients,
            lambda w: w.watch.sweeps > after[w.index],
            VERIFY_WAIT_S,
            lambda: self.interrupted,
        )
        at_once = sum(w.watch.verified or 0 for w in kids.client_states)
        return max([at_once, *(w.watch.best for w in kids.client_states)])

    # -- the active phase ------------------------------------------------------------------
    def active_phase(self, before: measure.Sample, held: int) -> None:
        """Traffic on the held connections, then wake-up round trips; the sink's CPU
        over the window gives the CPU cost per message."""
        cpu0 = measure.cpu_seconds(self.kids.live_pids(self.kids.sinks))
        self.kids.signal(self.kids.clients, signal.SIGUSR2)
        deadline = time.monotonic() + self.cfg.traffic_seconds + 60
        while time.monotonic() < deadline and not self.interrupted:
            self._pump()
            live = [self.kids.state(c) for c in self.kids.clients if c.exit_status is None]
            if all(w.active is not None for w in live):
                break
            time.sleep(0.05)
        cpu = measure.cpu_seconds(self.kids.live_pids(self.kids.sinks)) - cpu0
        self.active_window = outcome.ActiveWindow(cpu, before, measure.Sample.take(), held)

    # -- hold and release ------------------------------------------------------------------
    def hold(self) -> None:
        start = time.monotonic()
        deadline = start + self.cfg.hold
        while time.monotonic() < deadline and not self.interrupted:
            self._pump()
            if self.stop is not None and self.stop.reason == "worker_died":
                return
            now = time.monotonic()
            est = self.established()
            self.report(RunProgress("holding", now - start, self.cfg.hold, now - self.t0, est))
            time.sleep(0.1)

    # -- the whole run ------------------------------------------------------------------------
    def execute(self) -> ProbeResult:
        self.cfg.check_environment()
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            with ExitStack() as stack:
                if self.cfg.record is not None:
                    self.kids.record = stack.enter_context(open(self.cfg.record, "x"))
                self.netns = self.cfg.netns
                if self.cfg.isolated:
                    self.netns = stack.enter_context(isolate.private_netns(self.cfg.sysctls))
                return self._execute()
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def _sources_here(self) -> None:
        """Source addresses must be local where the run happens: the run's own
        namespace gets the missing ones on its loopback (and the result says so);
        anywhere else a missing one is an input error, before any connection."""
        note = sources_here(self.cfg.sources, self.netns, self.cfg.isolated)
        if note:
            self.notes.append(note)

    def _execute(self) -> ProbeResult:
        self._sources_here()
        if not measure.wait_settled():
            self.notes.append(
                "memory was still moving at the start: per-connection figures may be off"
            )
        plan = make_plan(self.cfg, self.netns)
        with netns_mod.inside(self.netns):
            return self._run(plan)

    def _run(self, plan: Plan) -> ProbeResult:
        kids, server_mode = self.kids, self.cfg.server_mode
        try:
            server_before = None
            if server_mode:
                if self.cfg.path_netns:
                    self.path_before = path.sample(self.cfg.path_netns)
                self.server_limit = self._known_server(plan)
                server_before = self._server_sample(plan)
                self.in_flight_most = self._below_backlog(plan, server_before)
            else:
                self.start_sinks(plan)
                self.server_prediction = self._predict_server(plan)
            before = measure.Sample.take()
            m = before.meminfo
            self.slab_limit = measure.slab_limit(m.mem_available, m.slab, plan.floor)
            self.budget = budget.read_budget(
                Roots(), m.mem_available, plan.floor, self.cfg.cgroup_floor
            )
            sink_cpu = measure.cpu_seconds(kids.live_pids(kids.sinks))
            self.t0 = time.monotonic()
            seconds = self.open_phase(plan)
            timing = outcome.Timing(seconds)
            server_after = None
            if server_mode:
                server_after = self._server_sample(plan)
            else:
                self._settle_sinks()
                timing = outcome.Timing(
                    seconds,
                    setup=time.monotonic() - self.t0,
                    sink_cpu_open=measure.cpu_seconds(kids.live_pids(kids.sinks)) - sink_cpu,
                )
            after = measure.Sample.take()
            held = self.established()  # the result is about the opening phase
            served = self.verified()
            usage = measure.process_usage(kids.live_pids([*kids.clients, *kids.sinks]))
            guarded = self.stop is not None and self.stop.reason == "guard:memory"
            if self.cfg.active and held and not self.interrupted and not guarded:
                self.active_phase(before, held)
            else:
                if self.cfg.active and guarded:
                    self.notes.append(
                        "no traffic phase: the memory guard stopped the run (traffic would "
                        "charge socket buffers to memory already at its line)"
                    )
                self.hold()
            if served is not None and self.cfg.hold:
                served = max(served, self.verified() or 0)
            stop = attribution.final_stop(
                self.stop,
                self.cfg.target,
                held,
                kids.client_states,
                kids.sink_states,
                server_mode,
                self._task_limit(),
                partial(self._server_stop, server_before, server_after, plan.endpoints),
                served,
            )
            stop = self._with_guard_evidence(stop)
            return outcome.build(
                outcome.Inputs(
                    cfg=self.cfg,
                    plan=plan,
                    stop=stop,
                    held=held,
                    timing=timing,
                    before=before,
                    after=after,
                    usage=usage,
                    clients=kids.client_states,
                    sinks=kids.sink_states,
                    worker_pids=tuple(c.pid for c in kids.clients),
                    netns=self.netns,
                    notes=tuple(self.notes),
                    server_prediction=self.server_prediction,
                    server_before=server_before,
                    watched=self.watched,
                    served=served,
                    active=self.active_window,
                    budget=self.budget,
                )
            )
        finally:
            self.report(RunProgress("releasing", 0, None, time.monotonic() - self.t0))
            kids.release()

    def _below_backlog(self, plan: Plan, before: evidence.ServerSample | None) -> int | None:
        """Handshakes and checks each opening worker may keep in flight so that, all
        together, they stay within the listener's accept queue (backlog + 1, read
        with sock_diag where the listener is on this host): a slow server's queue is
        not flooded by the probe's own pace. None: no listener seen (a remote server:
        the pacing window learns from its retransmits)."""
        listeners = before.listeners if before is not None else ()
        if not listeners:
            return None
        room = min(ln.backlog for ln in listeners) + 1
        target = self.cfg.target or plan.client_capacity * self.cfg.parallel
        at_once = max(1, min(self.cfg.parallel, -(-target // max(1, plan.client_capacity))))
        return max(1, room // at_once)

    def _known_server(self, plan: Plan) -> AppLimit | None:
        """The server behind the first local endpoint, as tcpceiling.servers reads it
        (its own setting and words explain a server-side stop); else the server in
        another network namespace of this host that holds the address."""
        local = [e for e in plan.endpoints if plan.routes.get(e, (None, False))[1]]
        found = find_listener(Roots(), local[0].host, local[0].port) if local else None
        if found is not None:
            self.proxy_at = proxy.Where(None, local[0])
            return app_limit(found, Roots())
        elsewhere = None if local else proxy.locate(plan.endpoints, Roots())
        if elsewhere is None:
            return None
        self.proxy_at, limit = elsewhere
        self.notes.append(
            f"the server on {self.proxy_at.endpoint} runs in another network namespace of "
            f"this host ({limit.server}, pid {limit.pid}): its side was read there"
        )
        return limit

    def _server_sample(self, plan: Plan) -> evidence.ServerSample | None:
        """The server side as this host sees it, in the server's namespace; None when
        no destination is on this host."""
        where = self.proxy_at
        if where is not None and where.pid is not None:
            with proxy.entered(where, Roots()):
                return evidence.sample((where.endpoint,), self.cfg.server_pid)
        if not any(local for _src, local in plan.routes.values()):
            return None
        return evidence.sample(plan.endpoints, self.cfg.server_pid)

    def _server_stop(
        self,
        before: evidence.ServerSample | None,
        after: evidence.ServerSample | None,
        endpoints: tuple[Endpoint, ...],
        stop: Stop,
    ) -> Stop:
        """Attribute a server-side stop with the evidence read before and after."""
        empty = evidence.ServerSample()
        states = self.kids.client_states
        replies = outcome.watch_counts(states, "replies")
        silent = sum(w.watch.silent for w in states)
        server = self.server_limit
        if self.path_before is not None and self.cfg.path_netns:
            after_path = path.sample(self.cfg.path_netns)
            found = path.attribute(stop.detail, self.path_before, after_path, endpoints)
            if found is not None:
                return found
        found = evidence.attribute(
            stop.detail, replies, before or empty, after or empty, silent, server
        )
        reply = found.evidence.get("reply") or ""
        if self.proxy_at is not None and server is not None and server.upstreams:
            # read again only a proxy: reading a server at its cap can cost it a slot
            # (redis counts our own query among its rejected connections)
            return proxy.attribute(found, reply, proxy.view(self.proxy_at, Roots()))
        far = before is None and endpoints  # the server is not on this host
        note = proxy.remote_note(reply, endpoints[0]) if far else None
        if note:
            self.notes.append(note)
        return found

    def _predict_server(self, plan: Plan) -> ScenarioResult | None:
        """The thread sink's own ceiling: analyze's server scenario with the sink
        process's limits and cgroup (read now, with the sink started)."""
        if self.cfg.io_model != "threads" or not self.kids.sinks:
            return None
        roots = Roots()
        proc = read.read_process(roots, str(self.kids.sinks[0].pid))
        tasks = parse.parse_loadavg_tasks((roots.procfs / "loadavg").read_text())
        snap = replace(
            plan.snapshot,
            process=proc,
            cgroup=read_cgroup(roots, proc),
            system=replace(plan.snapshot.system, tasks=tasks, pids=read.read_pids(roots)),
        )
        scenario = thread_sink_scenario(self.cfg, plan, len(self.kids.sinks))
        return evaluate(snap, scenario, plan.routes)


def run(cfg: ProbeConfig, progress: Progress | None = None) -> ProbeResult:
    return Run(cfg, progress).execute()

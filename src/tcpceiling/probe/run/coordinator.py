"""The coordinator: carries out a plan (tcpceiling.probe.run.plan). Its parts: the
launcher forks the sink shards and the client workers (launch.py), the guards say
when the run must stop (guards.py), the server side reads a real server before and
after and names its stop (server_side.py). The Run sequences the phases: open,
measure, traffic or hold, release, and leaves nothing behind. Why opening stopped
is decided from the workers' messages by tcpceiling.probe.serving.attribution; the
result is assembled by tcpceiling.probe.run.outcome.
"""

from __future__ import annotations

import signal
import time
from contextlib import ExitStack
from dataclasses import dataclass, replace
from functools import partial

from tcpceiling.analysis.analyze import sources_here
from tcpceiling.host import netns as netns_mod
from tcpceiling.host.roots import Roots
from tcpceiling.probe.run import budget, isolate, measure, outcome, path, slabmeter
from tcpceiling.probe.run.config import ProbeConfig
from tcpceiling.probe.run.guards import Guards
from tcpceiling.probe.run.launch import Launcher
from tcpceiling.probe.run.phases import Phases
from tcpceiling.probe.run.plan import Plan, make_plan
from tcpceiling.probe.run.progress import Progress, RunProgress, ignore
from tcpceiling.probe.run.result import ProbeResult
from tcpceiling.probe.run.server_side import ServerSide
from tcpceiling.probe.serving import attribution, evidence
from tcpceiling.probe.workers.children import Children


@dataclass(frozen=True)
class Opened:
    """What the opening phase left: the server's side read before and after, the
    samples around it, the timing, what was held and served, and the workers' use."""

    before: measure.Sample
    after: measure.Sample
    timing: outcome.Timing
    held: int
    served: int | None
    usage: measure.Usage
    server_before: evidence.ServerSample | None
    server_after: evidence.ServerSample | None


class Run:
    """One probe run; execute() returns the ProbeResult."""

    def __init__(self, cfg: ProbeConfig, progress: Progress | None = None) -> None:
        self.cfg = cfg
        self.report = progress or ignore
        self.kids = Children()
        self.netns: str | None = None
        self.notes: list[str] = []
        self.launcher = Launcher(cfg, self.kids, lambda: self.guards.interrupted)
        self.guards = Guards(cfg, self.launcher)
        self.server = ServerSide(cfg, self.kids, self.notes)
        self.phases = Phases(cfg, self.kids, self.launcher, self.guards, self.server,
                             self.report)  # fmt: skip

    # -- the whole run ------------------------------------------------------------------------
    def execute(self) -> ProbeResult:
        self.cfg.check_environment()
        handler = self.guards.on_signal
        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
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

    def _execute(self) -> ProbeResult:
        # Source addresses must be local where the run happens: the run's own
        # namespace gets the missing ones on its loopback (and the result says so);
        # anywhere else a missing one is an input error, before any connection.
        note = sources_here(self.cfg.sources, self.netns, self.cfg.isolated)
        if note:
            self.notes.append(note)
        if not measure.wait_settled():
            self.notes.append(
                "memory was still moving at the start: per-connection figures may be off"
            )
        plan = make_plan(self.cfg, self.netns)
        with netns_mod.inside(self.netns):
            return self._run(plan)

    def _run(self, plan: Plan) -> ProbeResult:
        try:
            server_before = self._prepare(plan)
            opened = self._opened(plan, server_before)
            served = self._after_opening(opened)
            return self._result(plan, replace(opened, served=served))
        finally:
            self.report(RunProgress("releasing", 0, None, time.monotonic() - self.phases.t0))
            self.kids.release()

    def _prepare(self, plan: Plan) -> evidence.ServerSample | None:
        """Before opening: a real server read (and the accept queue the pace keeps
        within), or the sink started and its own ceiling predicted."""
        if not self.cfg.server_mode:
            self.launcher.start_sinks(plan)
            self.server.predict_sink(plan)
            return None
        if self.cfg.path_netns:
            self.server.path_before = path.sample(self.cfg.path_netns)
        self.server.known_server(plan)
        before = self.server.sample(plan)
        self.launcher.in_flight_most = self.server.below_backlog(plan, before)
        return before

    def _opened(self, plan: Plan, server_before: evidence.ServerSample | None) -> Opened:
        """The opening phase between two samples of the machine."""
        kids, launcher = self.kids, self.launcher
        before = measure.Sample.take()
        m = before.meminfo
        launcher.slab_meter = slabmeter.start(m, plan.floor, plan.snapshot.system.slabs)
        launcher.budget = budget.read_budget(
            Roots(), m.mem_available, plan.floor, self.cfg.cgroup_floor
        )
        sink_cpu = measure.cpu_seconds(kids.live_pids(kids.sinks))
        phases = self.phases
        phases.t0 = time.monotonic()
        timing = outcome.Timing(phases.open_phase(plan))
        server_after = None
        if self.cfg.server_mode:
            server_after = self.server.sample(plan)
        else:
            phases.settle_sinks()
            timing = outcome.Timing(
                timing.open_seconds,
                setup=time.monotonic() - phases.t0,
                sink_cpu_open=measure.cpu_seconds(kids.live_pids(kids.sinks)) - sink_cpu,
            )
        after = measure.Sample.take()
        held = phases.established()  # the result is about the opening phase
        served = phases.verified()
        usage = measure.process_usage(kids.live_pids([*kids.clients, *kids.sinks]))
        return Opened(before, after, timing, held, served, usage, server_before, server_after)

    def _after_opening(self, o: Opened) -> int | None:
        """Traffic on the held connections, or the hold; what was served, verified
        again after a hold."""
        phases = self.phases
        guarded = phases.stop is not None and phases.stop.reason == "guard:memory"
        if self.cfg.active and o.held and not self.guards.interrupted and not guarded:
            phases.active_phase(o.before, o.held)
        else:
            if self.cfg.active and guarded:
                self.notes.append(
                    "no traffic phase: the memory guard stopped the run (traffic would "
                    "charge socket buffers to memory already at its line)"
                )
            phases.hold()
        if o.served is not None and self.cfg.hold:
            return max(o.served, phases.verified() or 0)
        return o.served

    def _result(self, plan: Plan, o: Opened) -> ProbeResult:
        kids = self.kids
        server_stop = partial(self.server.stop, o.server_before, o.server_after, plan.endpoints)
        phases = self.phases
        stop = attribution.final_stop(phases.stop, self.cfg.target, o.held, kids.client_states,
                                      kids.sink_states, self.cfg.server_mode,
                                      phases.task_limit(), server_stop, o.served)  # fmt: skip
        return outcome.build(
            outcome.Inputs(
                cfg=self.cfg,
                plan=plan,
                stop=self.guards.with_evidence(stop),
                held=o.held,
                timing=o.timing,
                before=o.before,
                after=o.after,
                usage=o.usage,
                clients=kids.client_states,
                sinks=kids.sink_states,
                worker_pids=tuple(c.pid for c in kids.clients),
                netns=self.netns,
                notes=tuple(self.notes),
                server_prediction=self.server.prediction,
                server_before=o.server_before,
                watched=phases.watched,
                served=o.served,
                active=phases.active_window,
                budget=self.launcher.budget,
            )
        )


def run(cfg: ProbeConfig, progress: Progress | None = None) -> ProbeResult:
    return Run(cfg, progress).execute()

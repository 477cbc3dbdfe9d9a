"""The loops of a run's phases: the opening (forking workers as the previous ones
fill their share, until a guard, a limit or the target), the sinks settling, the
sweep of what is served at once, the traffic phase and the hold; and the state they
keep: the stop, once decided, and what was watched over time."""

from __future__ import annotations

import signal
import time

from tcpceiling.probe.run import measure, outcome
from tcpceiling.probe.run.config import ProbeConfig
from tcpceiling.probe.run.guards import Guards
from tcpceiling.probe.run.launch import UNBOUNDED, Launcher
from tcpceiling.probe.run.plan import Plan
from tcpceiling.probe.run.progress import Progress, RunProgress
from tcpceiling.probe.run.result import Stop
from tcpceiling.probe.run.server_side import ServerSide
from tcpceiling.probe.serving import attribution
from tcpceiling.probe.workers.children import Children

VERIFY_WAIT_S = 3.0  # a holding worker sweeps every 0.5 s (client.REPORT_EVERY x 2)


class Phases:
    """Runs each phase's loop over the workers' messages."""

    def __init__(
        self,
        cfg: ProbeConfig,
        kids: Children,
        launcher: Launcher,
        guards: Guards,
        server: ServerSide,
        report: Progress,
    ) -> None:
        self.cfg, self.kids, self.launcher, self.guards = cfg, kids, launcher, guards
        self.server, self.report = server, report
        self.stop: Stop | None = None
        self.t0 = time.monotonic()
        self.watched = outcome.Watched()
        self.active_window: outcome.ActiveWindow | None = None

    @property
    def interrupted(self) -> bool:
        return self.guards.interrupted

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

    def task_limit(self) -> attribution.TaskLimit:
        """threads or cgroup_pids: whichever the server-side prediction says binds."""
        pred = self.server.prediction
        if pred is None:
            return "threads"
        ceilings: dict[str, int] = {
            c.id: int(c.ceiling) for c in pred.constraints if c.ceiling is not None
        }
        limits: tuple[attribution.TaskLimit, ...] = ("cgroup_pids", "threads")
        return min(limits, key=lambda k: ceilings.get(k, UNBOUNDED))

    # -- the opening phase ---------------------------------------------------------------
    def _tick(self, plan: Plan, t0: float) -> bool:
        """One pass of the opening loop; False when opening is over."""
        self._pump()
        limit = attribution.limit_stop(self.kids.client_states, self.kids.sink_states,
                                       self.cfg.server_mode, self.task_limit())  # fmt: skip
        self.stop = self.stop or self.guards.stop(t0) or limit
        if self.stop is not None:
            return False
        while self.launcher.may_spawn():
            self.launcher.spawn_client(plan)
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
        return bool(self.launcher.opening()) or self.launcher.may_spawn()

    def open_phase(self, plan: Plan) -> float:
        t0 = time.monotonic()
        while self._tick(plan, t0):
            time.sleep(0.05)
        self.kids.signal(self.launcher.opening(), signal.SIGUSR1)
        self.kids.wait_for(
            self.kids.clients,
            lambda w: w.finished,
            self.cfg.connect_timeout + 10,
            lambda: self.interrupted,
        )
        return time.monotonic() - t0

    def settle_sinks(self, timeout: float = 3.0) -> None:
        """Wait until the sink reports it accepted what the clients established (or
        a full shard says it never will)."""
        deadline = time.monotonic() + max(timeout, self.established() / 5000)
        while time.monotonic() < deadline and self.sink_accepted() < self.established():
            self._pump()
            if attribution.sink_stop(self.kids.sink_states, self.task_limit()) is not None:
                break
            time.sleep(0.05)

    def verified(self) -> int | None:
        """Served and still open at once: the sum of every client worker's first
        poll() sweep (serving/rounds.Rounds.verify) made after this call, all workers
        having stopped opening, so no sweep counts a connection another worker's later
        opening made the server drop; or one worker's best sweep, when larger (one
        worker's sweep is one moment). None without a check."""
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

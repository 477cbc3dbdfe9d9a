"""The run's guards: Ctrl-C and SIGTERM, the duration, and the memory guard (the
run's own Slab growth against its budget, slabmeter, and every memory cgroup's
working set against its line, budget.cgroup_breach), with the numbers a guard stop
carries."""

from __future__ import annotations

import time

from tcpceiling.probe.run import budget, measure, slabmeter
from tcpceiling.probe.run.config import ProbeConfig
from tcpceiling.probe.run.launch import Launcher
from tcpceiling.probe.run.result import Stop


class Guards:
    """Whether the run must stop now, whatever the workers say."""

    def __init__(self, cfg: ProbeConfig, launcher: Launcher) -> None:
        self.cfg, self.launcher = cfg, launcher
        self.interrupted = False

    def on_signal(self, signum: int, _frame: object) -> None:
        self.interrupted = True

    def stop(self, t0: float) -> Stop | None:
        if self.interrupted:
            return Stop("interrupted")
        if time.monotonic() - t0 > self.cfg.max_duration:
            return Stop("guard:duration")
        breach = self.memory_breach()
        return budget.guard_stop(breach) if breach else None

    def memory_breach(self) -> budget.Breach | None:
        meter, b = self.launcher.slab_meter, self.launcher.budget
        if meter is not None:
            grown = meter.grown(*slabmeter.reading(measure.meminfo()))
            if grown > meter.room:
                floor = b.host_floor if b else 0
                # growth past room + floor would use up MemAvailable
                return budget.Breach("memory", "host", grown, meter.room, meter.room + floor, floor)
        return budget.cgroup_breach(b.cgroups) if b else None

    def with_evidence(self, stop: Stop) -> Stop:
        """A worker's guard stop carries no numbers: name the line from a reading now
        (the tightest cgroup when none is past its line any more)."""
        if stop.reason != "guard:memory" or stop.evidence:
            return stop
        b = self.launcher.budget
        breach = self.memory_breach() or (budget.nearest(b) if b else None)
        return budget.guard_stop(breach) if breach else stop

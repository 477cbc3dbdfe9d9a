"""The other half of the question: how many new connections per second, and what
stops the rate. `tcpceiling rate` runs cycles of connect -> close over and over
against a sink of its own (in a private network namespace when root), at a fixed
rate or as fast as the workers go, and names the limit from the evidence.

Who closes first keeps TIME_WAIT (docs/limits.md §2): `client` (the client's port
toward the sink stays busy 60 s), `server` (the sink's end closes first and keeps
it), `rst` (SO_LINGER 0: no TIME_WAIT at all). Each worker accepts on a listener of
its own in the same process, as the C reference (benchmarks/cref.c churn) does: the
CPU per cycle is both ends' together.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import replace
from functools import partial
from typing import Literal

import psutil

from tcpceiling.analysis.analyze import analyze, sources_here
from tcpceiling.analysis.model import ScenarioResult, build_scenarios
from tcpceiling.errors import InputError
from tcpceiling.host import netns as netns_mod
from tcpceiling.host.roots import Roots
from tcpceiling.probe.run import budget, isolate, measure
from tcpceiling.probe.run.config import check_sysctl_key
from tcpceiling.probe.run.progress import Progress, RunProgress, ignore
from tcpceiling.probe.run.result import Stop
from tcpceiling.probe.uring.engine import ran_on, refusal_notes
from tcpceiling.probe.workers import errnos
from tcpceiling.probe.workers.children import Children
from tcpceiling.probe.workers.histogram import Histogram
from tcpceiling.probe.workers.messages import ChurnProgress
from tcpceiling.rate.config import COUNTERS, SINK_PORT, ChurnConfig, ChurnResult
from tcpceiling.rate.cycles import churn_worker
from tcpceiling.rate.evidence import (
    attribute,
    cpu_evidence,
    server_pids,
    steady_rate,
    tcpext,
    time_wait_by_side,
)
from tcpceiling.signals import ended_by_signal, raise_if_caught

GROWTH = 1.05  # a ramp step must beat the best by this much to go on


def ramp_counts(cfg: ChurnConfig) -> list[int]:
    """Worker counts to try: 1, 2, 4 ... up to cfg.workers when ramping."""
    if not cfg.ramp or cfg.rate is not None:
        return [cfg.workers]
    counts, n = [], 1
    while n < cfg.workers:
        counts.append(n)
        n *= 2
    return [*counts, cfg.workers]


class ChurnRun:
    def __init__(self, cfg: ChurnConfig, progress: Progress = ignore) -> None:
        self.cfg, self.progress = cfg, progress
        self.kids = Children()
        self.lines = budget.cgroup_lines(Roots(), cfg.cgroup_floor)
        self.breach: budget.Breach | None = None
        self.notes: tuple[str, ...] = ()

    def _guard(self) -> None:
        """The memory guard: past a memory cgroup's line, every worker ends now."""
        if self.breach is None and self.lines:
            self.breach = budget.cgroup_breach(self.lines)
            if self.breach is not None:
                self.kids.signal(self.kids.clients, signal.SIGUSR1)

    def _tick(self, cfg: ChurnConfig, t0: float) -> None:
        """Cycles so far, against the run's duration (one step of a ramp at a time);
        the memory guard; a signal whose interrupt was lost (in a fork) ends it here."""
        raise_if_caught()
        self._guard()
        done = sum(p.completed for p in churned(self.kids))
        elapsed = time.monotonic() - t0
        label = f"{cfg.workers} worker{'s' if cfg.workers > 1 else ''}"
        event = RunProgress("churning", min(elapsed, cfg.duration), cfg.duration, elapsed, done)
        self.progress(replace(event, workers=cfg.workers, label=label))

    def execute(self) -> ChurnResult:
        for key, _v in self.cfg.sysctls:
            check_sysctl_key(key)
        if self.cfg.sysctls and not self.cfg.isolated:
            raise InputError("--sysctl needs the run's own namespace (root, --isolate)")
        with ExitStack() as stack:
            stack.enter_context(ended_by_signal())  # SIGTERM too: the namespace goes
            ns = self.cfg.netns
            if self.cfg.isolated:
                ns = stack.enter_context(isolate.private_netns(self.cfg.sysctls))
            note = sources_here(self.cfg.sources, ns, self.cfg.isolated)
            self.notes = (note,) if note else ()
            with netns_mod.inside(ns):
                return self._ramp(ns)
        raise AssertionError("unreachable")

    def _ramp(self, ns: str | None) -> ChurnResult:
        """One step, or the ramp: the best step, with every step's rate."""
        best: ChurnResult | None = None
        steps: list[tuple[int, float]] = []
        for workers in ramp_counts(self.cfg):
            self.kids = Children()
            try:
                r = self._run(ns, replace(self.cfg, workers=workers))
            finally:
                self.kids.release()
            steps.append((workers, r.sustained_per_s))
            grew = best is None or r.sustained_per_s >= GROWTH * best.sustained_per_s
            if best is None or r.sustained_per_s > best.sustained_per_s:
                best = r
            if not grew or r.errno_counts or self.breach is not None:
                break
        assert best is not None
        if self.breach is not None:  # whichever step it ended, the guard ended the run
            best = replace(best, stop=budget.guard_stop(self.breach))
        return replace(best, steps=tuple(steps))

    def _run(self, ns: str | None, cfg: ChurnConfig) -> ChurnResult:
        roots, kids = Roots(), self.kids
        ports = [SINK_PORT + i for i in range(cfg.workers)]
        if cfg.connect is not None:
            ports = [cfg.connect.port] * cfg.workers
        before = tcpext(roots)
        per = cfg.rate / cfg.workers if cfg.rate else None
        for i, port in enumerate(ports):
            kids.spawn("client", partial(churn_worker, port, i, per, cfg))
        server = server_pids(cfg)
        server_cpu = measure.cpu_seconds(server)
        softirq = measure.softirq_threads()
        softirq_cpu = measure.cpu_seconds(softirq)
        psutil.cpu_percent(percpu=True)  # starts the per-CPU window
        t0 = time.monotonic()
        kids.wait_for(
            kids.clients, lambda w: w.finished, cfg.duration + 30, tick=partial(self._tick, cfg, t0)
        )
        # CPU per cycle from the bursts that did cycles: a run out of ports spends its
        # other seconds retrying connect() (each scans the range), which is no cycle's
        mine = sum(p.cpu_cycling for p in churned(kids))
        spent = sum(p.cpu for p in churned(kids))
        # the softirq work the kernel handed to ksoftirqd (a burst of loopback handshakes
        # past net_rx_action's budget) is the cycles' too; its share of the bursts' time
        handed = measure.cpu_seconds(softirq) - softirq_cpu
        cpu = {"both": mine + handed * (mine / spent if spent else 1.0)}
        if cfg.connect is not None:
            cpu = {"client": mine}
            if server:
                cpu["server"] = measure.cpu_seconds(server) - server_cpu
        per_cpu = [round(p, 1) for p in psutil.cpu_percent(percpu=True)]
        tw = time_wait_by_side(set(ports))
        after = tcpext(roots)
        result = replace(
            assemble(churned(kids), self.notes, cfg, ns, before, after, tw, cpu),
            worker_cpu_seconds=round(spent, 3),
        )
        if self.breach is not None:  # the stop is the guard's: _ramp gives it to the run
            return result
        lost = [w for w in kids.client_states if not w.finished]
        if lost:  # a worker that died counted nothing of its share: say so
            names = ", ".join(f"{w.index} (pid {w.pid})" for w in lost)
            stop = Stop("worker_died", detail=f"churn worker(s) {names} ended without a result")
            return replace(result, stop=stop)
        if result.stop.reason != "cpu":
            return result
        return replace(result, stop=cpu_evidence(result.stop, per_cpu, cpu, server))


def churned(kids: Children) -> list[ChurnProgress]:
    """The workers' last reports."""
    return [w.churn for w in kids.client_states if w.churn is not None]


def long_run(
    run: float, steady: float | None, predicted: float | None
) -> tuple[float, Literal["run", "measured", "predicted"]]:
    """The rate to headline: the run's own unless the ports ran out; then the rate
    after the shortage when the run lasted a TIME_WAIT period past it, else the
    prediction (a 20 s run in 100 ports did 100 in its first second, then nothing:
    what it sustains is 100 / 60 s, not 5/s)."""
    if steady is not None:
        return steady, "measured"
    if predicted is not None:
        return min(run, predicted), "predicted"
    return run, "run"


def _client_analysis(cfg: ChurnConfig, ns: str | None) -> ScenarioResult:
    """analyze's client scenario for the run's destinations in its namespace."""
    dests = (
        (str(cfg.connect),)
        if cfg.connect
        else tuple(f"127.0.0.1:{SINK_PORT + i}" for i in range(cfg.workers))
    )
    scenarios = build_scenarios("client", connect=dests, source_ip=cfg.sources)
    return analyze(scenarios, Roots(), netns=ns).scenarios[0]


def predicted_rate(cfg: ChurnConfig, ns: str | None) -> float | None:
    """analyze's time_wait rate for the run's destinations in its namespace (None:
    TIME_WAIT does not bind there, e.g. tcp_tw_reuse applies)."""
    ceiling = _client_analysis(cfg, ns).constraint("time_wait").ceiling
    return None if ceiling is None else float(ceiling)


def prediction(cfg: ChurnConfig, ns: str | None) -> tuple[float | None, str | None]:
    """analyze's rate ceiling for the run and the limit it names (report beside the
    proof: what the run sustained)."""
    r = _client_analysis(cfg, ns)
    return r.rate_ceiling, r.rate_binding


def run_churn(cfg: ChurnConfig, progress: Progress = ignore) -> ChurnResult:
    return ChurnRun(cfg, progress).execute()


def assemble(
    states: list[ChurnProgress],
    notes: tuple[str, ...],
    cfg: ChurnConfig,
    ns: str | None,
    before: dict[str, int],
    after: dict[str, int],
    tw: dict[str, int],
    cpu: dict[str, float],
) -> ChurnResult:
    progress = states
    completed = sum(p.completed for p in progress)
    seconds = max((len(p.per_second) for p in progress), default=0)
    per_second = tuple(
        sum(p.per_second[i] for p in progress if i < len(p.per_second)) for i in range(seconds)
    )
    errors: Counter[int] = Counter()
    hist = Histogram()
    seconds_hist = [Histogram() for _ in range(seconds)]
    for p in progress:
        errors.update(p.errors)
        hist.merge(p.hist)
        for i, h in enumerate(p.per_second_hist[:seconds]):
            seconds_hist[i].merge(h)
    d = {k: after.get(k, 0) - before.get(k, 0) for k in (*COUNTERS, "conntrack_drop")}
    burst = round(completed / cfg.duration, 1)
    steady = steady_rate(progress, cfg.duration)
    short = any(p.exhausted_at is not None for p in progress)
    sustained, source = long_run(burst, steady, predicted_rate(cfg, ns) if short else None)
    predicted_per_s, predicted_binding = prediction(cfg, ns)
    return ChurnResult(
        close=cfg.close,
        rate_asked=cfg.rate,
        duration=cfg.duration,
        completed=completed,
        sustained_per_s=sustained,
        sustained_from=source,
        burst_per_s=burst,
        per_second=per_second,
        connect_latency_us=hist.summary(),
        connect_latency_histogram=hist.buckets(),
        predicted_per_s=predicted_per_s,
        predicted_binding=predicted_binding,
        latency_per_second_us=tuple(h.summary() for h in seconds_hist),
        steady_per_s=steady,
        errno_counts={errnos.name(k): v for k, v in errors.items()},
        time_wait=tw,
        counters=d,
        cpu_us_per_cycle={
            side: round(sec * 1e6 / completed, 2) if completed else None
            for side, sec in cpu.items()
        },
        stop=attribute(cfg, burst, dict(errors), d),
        isolated=cfg.isolated,
        netns=ns,
        notes=notes + engine_notes(cfg, progress),
        engine=ran_on(p.engine for p in progress),
    )


def engine_notes(cfg: ChurnConfig, progress: list[ChurnProgress]) -> tuple[str, ...]:
    """Why io_uring was not used where it was asked for."""
    notes = refusal_notes(cfg.engine, (p.refused for p in progress))
    if cfg.engine == "uring" and (cfg.connect or cfg.rate is not None):
        notes.append(
            "cycles toward a real server, or paced by --rate, go one at a time: they run "
            "on epoll whatever --engine says"
        )
    return tuple(notes)

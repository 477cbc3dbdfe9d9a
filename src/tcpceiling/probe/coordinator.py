"""The coordinator: carries out a plan (tcpceiling.probe.plan). It starts the sink
shards and the client workers (forked, `parallel` at a time as the previous ones
fill their share), watches the guards, stops, measures, releases, and leaves
nothing behind.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import replace
from functools import partial
from typing import Any

from tcpceiling.analysis.analyze import check_sources, evaluate, not_local
from tcpceiling.analysis.model import ScenarioResult
from tcpceiling.host import netns as netns_mod
from tcpceiling.host import parse, read
from tcpceiling.host.cgroups import read_cgroup
from tcpceiling.host.parse import RLimit
from tcpceiling.host.roots import Roots
from tcpceiling.probe import errnos, evidence, isolate, measure
from tcpceiling.probe.client import ClientPlan, run_client
from tcpceiling.probe.config import ProbeConfig
from tcpceiling.probe.histogram import Histogram
from tcpceiling.probe.plan import (
    MAX_EXPECTED,
    PORT_BURST,
    Plan,
    client_scenario,
    make_plan,
    thread_sink_scenario,
)
from tcpceiling.probe.procs import Child, close_pipe, read_messages, reap, signal_child, spawn
from tcpceiling.probe.result import Predicted, ProbeResult, Stop, Traffic
from tcpceiling.probe.sink import SinkPlan, run_sink

UNBOUNDED = 1 << 40
Progress = Callable[[dict[str, Any]], None]


class Run:
    """One probe run; execute() returns the ProbeResult."""

    def __init__(self, cfg: ProbeConfig, progress: Progress | None = None) -> None:
        self.cfg = cfg
        self.report = progress or (lambda _msg: None)
        self.clients: list[Child] = []
        self.sinks: list[Child] = []
        self.state: dict[tuple[str, int], dict[str, Any]] = {}
        self.assigned = 0
        self.stop: Stop | None = None
        self.interrupted = False
        self.netns: str | None = None
        self.notes: list[str] = []
        self.max_served = 0
        self.timeline: list[tuple[float, int, int | None]] = []
        self.server_before: evidence.ServerSample | None = None
        self.server_after: evidence.ServerSample | None = None
        self.t0 = time.monotonic()
        self.held = 0
        self.server_prediction: ScenarioResult | None = None
        self.setup_seconds: float | None = None
        self.traffic: Traffic | None = None
        self.wake: dict[str, float | None] | None = None
        self.sink_cpu_open = 0.0

    # -- signals ---------------------------------------------------------------------
    def _on_signal(self, signum: int, _frame: object) -> None:
        self.interrupted = True

    # -- children --------------------------------------------------------------------
    def _pump(self) -> None:
        """Read what the children said: one poll() finds the pipes with news, so a
        tick costs no syscall per quiet child (about a hundred at 1M connections)."""
        children = {c.reader: c for c in [*self.clients, *self.sinks] if c.reader >= 0}
        po = select.poll()
        for fd in children:
            po.register(fd, select.POLLIN)
        for fd, _events in po.poll(0):
            child = children[fd]
            msgs, closed = read_messages(child)
            for msg in msgs:
                key = (child.role, child.index)
                st = self.state.setdefault(key, {})
                if msg.get("type") in ("start", "ready"):
                    st["start_rss"] = msg.get("rss", 0)
                if msg.get("type") == "active_done":
                    st["active"] = msg
                    continue
                st[f"seen_{msg.get('type')}"] = True  # a later progress line overwrites type
                st.update(msg)
                if msg.get("type") == "crash" and self.stop is None:
                    self.stop = Stop(
                        "worker_died",
                        detail=f"{child.role} worker {child.index} "
                        f"(pid {child.pid}) crashed: {msg.get('error')}",
                    )
            if closed or reap(child):
                self._check_dead(child)
        if self.cfg.server_mode:
            self.max_served = max(self.max_served, self._served_peak())
            self._sample_timeline()

    def _served_peak(self) -> int:
        """Most connections served at once. One worker knows its exact peak; across
        workers only the sum of their latest reports is simultaneous."""
        peaks = [int((s.get("watch") or {}).get("max_served", 0)) for s in self._client_states()]
        return max(self._watch_sum("held"), max(peaks, default=0))

    def _watch_sum(self, key: str) -> int:
        return sum(int((s.get("watch") or {}).get(key, 0)) for s in self._client_states())

    def _sample_timeline(self) -> None:
        """(seconds, established, served) about once a second, at most 3600 points."""
        t = round(time.monotonic() - self.t0, 1)
        if (not self.timeline or t - self.timeline[-1][0] >= 1.0) and len(self.timeline) < 3600:
            served = self._watch_sum("served") if self.cfg.check != "none" else None
            self.timeline.append((t, self.established(), served))

    def _check_dead(self, child: Child) -> None:
        reap(child)
        st = self.state.get((child.role, child.index), {})
        if st.get("type") == "released" or (
            self.stop is not None and self.stop.reason == "worker_died"
        ):
            return
        if child.exit_status is None:
            return
        how = (
            f"killed by signal {os.WTERMSIG(child.exit_status)}"
            if os.WIFSIGNALED(child.exit_status)
            else f"exit {child.exit_status}"
        )
        self.stop = Stop(
            "worker_died", detail=f"{child.role} worker {child.index} (pid {child.pid}) {how}"
        )

    def _wait_for(self, children: list[Child], kind: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not (self.interrupted and kind != "released"):
            self._pump()
            if all(
                self.state.get((c.role, c.index), {}).get(f"seen_{kind}")
                or self.state.get((c.role, c.index), {}).get("type") == "released"
                or c.exit_status is not None
                for c in children
            ):
                return
            time.sleep(0.02)

    def start_sinks(self, plan: Plan) -> None:
        eps = tuple((e.host, e.port) for e in plan.endpoints)
        backlog = plan.snapshot.net.somaxconn
        mode = "echo" if self.cfg.active else "hold"
        for i in range(plan.sink_shards):
            k = plan.owned_ports
            mine = eps[i * k : (i + 1) * k] if k else eps
            sp = SinkPlan(i, mine, backlog, mode=mode, io_model=self.cfg.io_model)
            self.sinks.append(spawn("sink", i, partial(run_sink, sp)))
        self._wait_for(self.sinks, "ready", 10)

    def _spawn_client(self, plan: Plan) -> None:
        remaining = (self.cfg.target or MAX_EXPECTED * 10) - self.assigned
        index = len(self.clients)
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
        cp = ClientPlan(
            index=index,
            share=share,
            tuples=tuples,
            first=self.assigned,  # the turn over the tuples goes on where the last left it
            burst=PORT_BURST,
            nofile=self.cfg.worker_nofile,
            rate=self.cfg.rate,
            connect_timeout=self.cfg.connect_timeout,
            slab_limit=plan.slab_limit,
            watch=self.cfg.server_mode,
            check=self.cfg.check,
            check_timeout=self.cfg.check_timeout,
            check_every=self.cfg.check_every,
            max_pending=self.cfg.max_pending,
            message_rate=self.cfg.message_rate,
            message_bytes=self.cfg.message_bytes,
            traffic_seconds=self.cfg.traffic_seconds,
            wake_samples=self.cfg.wake_samples,
        )
        self.clients.append(spawn("client", index, partial(run_client, cp)))
        self.assigned += share

    # -- the opening phase ---------------------------------------------------------------
    def _client_states(self) -> list[dict[str, Any]]:
        return [self.state.get(("client", c.index), {}) for c in self.clients]

    def established(self) -> int:
        return sum(int(s.get("established", 0)) for s in self._client_states())

    def _opening(self) -> list[Child]:
        return [
            c
            for c in self.clients
            if not self.state.get(("client", c.index), {}).get("seen_done")
            and self.state.get(("client", c.index), {}).get("type") != "released"
            and c.exit_status is None
        ]

    def _sink_stop(self) -> Stop | None:
        """A sink shard that could take no more (EMFILE; EAGAIN from pthread_create in
        the threads model) names the server side's limit."""
        for c in self.sinks:
            num = self.state.get(("sink", c.index), {}).get("full_errno")
            if num:
                cid = self._task_limit() if num == errno.EAGAIN else errnos.constraint_for(num)
                detail = f"sink shard {c.index} (pid {c.pid}) accepted {self.sink_accepted():,}"
                return Stop(cid, errno=errnos.name(num), side="server", detail=detail)
        return None

    def _task_limit(self) -> str:
        """threads or cgroup_pids: whichever the server-side prediction says binds."""
        pred = self.server_prediction
        if pred is None:
            return "threads"
        ceilings = {c.id: c.ceiling for c in pred.constraints if c.ceiling is not None}
        return min(("cgroup_pids", "threads"), key=lambda k: ceilings.get(k, UNBOUNDED))

    def _limit_stop(self) -> Stop | None:
        """A worker that finished short of its share names the limit by its errno;
        with a real server, a worker whose connections kept failing names the kind."""
        sink = self._sink_stop()
        if sink is not None:
            return sink
        for st in self._client_states():
            if not st.get("seen_done"):
                continue
            if st.get("guard"):
                return Stop(f"guard:{st['guard']}")
            if st.get("limit_errno"):
                num = int(st["limit_errno"])
                return Stop(errnos.constraint_for(num), errno=errnos.name(num), side="client")
            kind = (st.get("watch") or {}).get("limit_kind")
            if kind:
                return Stop("server", detail=kind, side="server")
            which = "client_errno" if self.cfg.server_mode else "first_errno"
            first = st.get(which) if st.get("short") else None
            if first:
                num = int(first)
                return Stop(errnos.constraint_for(num), errno=errnos.name(num), side="client")
        return None

    def _may_spawn(self) -> bool:
        cfg = self.cfg
        return (
            (cfg.target is None or self.assigned < cfg.target)
            and (cfg.workers is None or len(self.clients) < cfg.workers)
            and len(self._opening()) < (1 if cfg.rate else cfg.parallel)
        )

    def _tick(self, plan: Plan, t0: float) -> bool:
        """One pass of the opening loop; False when opening is over."""
        self._pump()
        if self.interrupted:
            self.stop = self.stop or Stop("interrupted")
        elif time.monotonic() - t0 > self.cfg.max_duration:
            self.stop = self.stop or Stop("guard:duration")
        elif plan.slab_limit and measure.mem_field("Slab") > plan.slab_limit:
            self.stop = self.stop or Stop("guard:memory")
        self.stop = self.stop or self._limit_stop()
        if self.stop is not None:
            return False
        while self._may_spawn():
            self._spawn_client(plan)
        self.report(
            {
                "type": "progress",
                "established": self.established(),
                "workers": len(self.clients),
                "elapsed": time.monotonic() - t0,
                "errors": self._errno_counts(),
                "mem_available": measure.mem_available(),
            }
        )
        return bool(self._opening()) or self._may_spawn()

    def open_phase(self, plan: Plan) -> float:
        t0 = time.monotonic()
        while self._tick(plan, t0):
            time.sleep(0.05)
        for c in self._opening():
            signal_child(c, signal.SIGUSR1)
        self._wait_for(self.clients, "done", self.cfg.connect_timeout + 10)
        return time.monotonic() - t0

    def _errno_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for st in self._client_states():
            for num, n in (st.get("errors") or {}).items():
                key = errnos.name(int(num))
                counts[key] = counts.get(key, 0) + int(n)
        return counts

    def sink_accepted(self) -> int:
        return sum(
            int(self.state.get(("sink", c.index), {}).get("accepted", 0)) for c in self.sinks
        )

    def _settle_sinks(self, timeout: float = 3.0) -> None:
        """Wait until the sink reports it accepted what the clients established (or
        a full shard says it never will)."""
        deadline = time.monotonic() + max(timeout, self.established() / 5000)
        while time.monotonic() < deadline and self.sink_accepted() < self.established():
            self._pump()
            if self._sink_stop() is not None:
                break
            time.sleep(0.05)

    def _sink_pids(self) -> list[int]:
        return [c.pid for c in self.sinks if c.exit_status is None]

    # -- the active phase (issue 5) ----------------------------------------------------------
    def active_phase(self, before: measure.Sample) -> None:
        """Traffic on the held connections, then wake-up round trips; the sink's CPU
        over the window gives the CPU cost per message."""
        cpu0 = measure.cpu_seconds(self._sink_pids())
        for c in self.clients:
            signal_child(c, signal.SIGUSR2)
        deadline = time.monotonic() + self.cfg.traffic_seconds + 60
        while time.monotonic() < deadline and not self.interrupted:
            self._pump()
            live = [s for c, s in zip(self.clients, self._client_states(), strict=True)
                    if c.exit_status is None]  # fmt: skip
            if all("active" in s for s in live):
                break
            time.sleep(0.05)
        cpu = measure.cpu_seconds(self._sink_pids()) - cpu0
        self._active_result(cpu, before, measure.Sample.take())

    def _active_result(self, cpu: float, before: measure.Sample, after: measure.Sample) -> None:
        done = [s["active"] for s in self._client_states() if "active" in s]
        hist = Histogram()
        for d in done:
            hist.merge({int(k): v for k, v in (d.get("wake_hist") or {}).items()})
        if self.cfg.wake_samples:
            self.wake = hist.summary()
        if self.cfg.message_rate <= 0:
            return
        messages = sum(int(d.get("messages", 0)) for d in done)
        n = self.held
        self.traffic = Traffic(
            message_rate=self.cfg.message_rate,
            message_bytes=self.cfg.message_bytes,
            seconds=round(max((float(d.get("seconds", 0)) for d in done), default=0.0), 3),
            messages=messages,
            server_cpu_seconds=round(cpu, 4),
            cpu_us_per_message=round(cpu * 1e6 / messages, 3) if messages else None,
            cpu_us_per_connect=round(self.sink_cpu_open * 1e6 / n, 3) if n else None,
            kernel_bytes_active=round((after.meminfo.slab - before.meminfo.slab) / n, 1),
        )

    # -- hold and release ------------------------------------------------------------------
    def hold(self) -> None:
        deadline = time.monotonic() + self.cfg.hold
        while time.monotonic() < deadline and not self.interrupted:
            self._pump()
            if self.stop is not None and self.stop.reason == "worker_died":
                return
            time.sleep(0.1)

    def release(self) -> None:
        """Clients first (RST, no TIME_WAIT), then the sink; SIGKILL what lingers."""
        for group in (self.clients, self.sinks):
            for c in group:
                signal_child(c, signal.SIGTERM)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not all(reap(c) for c in group):
                self._pump()
                time.sleep(0.02)
            for c in group:
                if not reap(c):
                    signal_child(c, signal.SIGKILL)
                    reap(c, block=True)
                self._pump()
                close_pipe(c)

    # -- the whole run ------------------------------------------------------------------------
    def execute(self) -> ProbeResult:
        self.cfg.check_environment()
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            with ExitStack() as stack:
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
        if self.cfg.isolated and self.netns:
            missing = tuple(not_local(self.cfg.sources, self.netns))
            if missing:
                netns_mod.add_addresses(self.netns, missing)
                shown = ", ".join(missing[:3]) + (" …" if len(missing) > 3 else "")
                self.notes.append(
                    f"added {len(missing):,} source address(es) to loopback in the run's "
                    f"namespace: {shown}"
                )
        else:
            check_sources(self.cfg.sources, self.netns)

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
        try:
            if self.cfg.server_mode:
                self.server_before = self._server_sample(plan)
            else:
                self.start_sinks(plan)
                self.server_prediction = self._predict_server(plan)
            before = measure.Sample.take()
            m = before.meminfo
            plan.slab_limit = measure.slab_limit(m.mem_available, m.slab, plan.floor)
            sink_cpu = measure.cpu_seconds(self._sink_pids())
            self.t0 = time.monotonic()
            seconds = self.open_phase(plan)
            if self.cfg.server_mode:
                self.server_after = self._server_sample(plan)
            else:
                self._settle_sinks()
                self.setup_seconds = time.monotonic() - self.t0
                self.sink_cpu_open = measure.cpu_seconds(self._sink_pids()) - sink_cpu
            after = measure.Sample.take()
            self.held = self.established()  # the result is about the opening phase
            pids = [c.pid for c in [*self.clients, *self.sinks] if c.exit_status is None]
            usage = measure.process_usage(pids)
            if self.cfg.active and self.held and not self.interrupted:
                self.active_phase(before)
            else:
                self.hold()
            return self._result(plan, seconds, before, after, usage)
        finally:
            self.release()

    def _server_sample(self, plan: Plan) -> evidence.ServerSample | None:
        """The server side as this host sees it; None when no destination is local."""
        if not any(local for _src, local in plan.routes.values()):
            return None
        return evidence.sample(plan.endpoints, self.cfg.server_pid)

    def _watch_counts(self, key: str) -> dict[str, int]:
        """A per-worker Watch counter (totals, replies) summed over the workers."""
        out: dict[str, int] = {}
        for st in self._client_states():
            for k, n in ((st.get("watch") or {}).get(key) or {}).items():
                out[k] = out.get(k, 0) + int(n)
        return out

    def _server_stop(self, stop: Stop) -> Stop:
        """Attribute a server-side stop with the evidence read before and after."""
        empty = evidence.ServerSample()
        return evidence.attribute(
            stop.detail,
            self._watch_counts("replies"),
            self.server_before or empty,
            self.server_after or empty,
        )

    def _outcomes(self) -> dict[str, int]:
        totals = self._watch_counts("totals")
        totals["open_at_end"] = self.established()
        totals["silent_at_end"] = self._watch_sum("silent")
        return totals

    # -- the result -----------------------------------------------------------------------------
    def _prediction(self, plan: Plan, meminfo: parse.Meminfo) -> Predicted:
        """analyze's client scenario with the workers' real fd limits and the memory
        that was available when opening began (the memory guard's budget too)."""
        first = next((s for s in self._client_states() if "open_fds" in s), None)
        snap = replace(plan.snapshot, system=replace(plan.snapshot.system, meminfo=meminfo))
        if first is not None:
            soft = int(first["nofile"])
            proc = replace(
                snap.process,
                open_fds=int(first["open_fds"]),
                limits=replace(snap.process.limits, nofile=RLimit(soft, soft)),
            )
            snap = replace(snap, process=proc)
        processes = len(self.clients) if self.cfg.workers or self.cfg.target else 10_000
        res = evaluate(snap, client_scenario(self.cfg, plan, max(1, processes)), plan.routes)
        srv = self.server_prediction
        if srv and srv.ceiling is not None and (res.ceiling is None or srv.ceiling < res.ceiling):
            return Predicted(srv.ceiling, srv.binding, (*srv.runners_up, "client"))
        return Predicted(res.ceiling, res.binding, res.runners_up)

    def _predict_server(self, plan: Plan) -> ScenarioResult | None:
        """The thread sink's own ceiling: analyze's server scenario with the sink
        process's limits and cgroup (read now, with the sink started)."""
        if self.cfg.io_model != "threads" or not self.sinks:
            return None
        roots = Roots()
        proc = read.read_process(roots, str(self.sinks[0].pid))
        tasks = parse.parse_loadavg_tasks((roots.procfs / "loadavg").read_text())
        snap = replace(
            plan.snapshot,
            process=proc,
            cgroup=read_cgroup(roots, proc),
            system=replace(plan.snapshot.system, tasks=tasks, pids=read.read_pids(roots)),
        )
        return evaluate(snap, thread_sink_scenario(plan, len(self.sinks)), plan.routes)

    def _final_stop(self, est: int) -> Stop:
        """Why opening ended, with every errno the clients saw and the first one."""
        stop = self.stop or (
            Stop("target")
            if self.cfg.target and est >= self.cfg.target
            else self._limit_stop() or Stop("unknown")
        )
        first = next(
            (st.get("first_errno") for st in self._client_states() if st.get("first_errno")), None
        )
        if stop.reason == "server":
            stop = self._server_stop(stop)
        return replace(
            stop,
            errno_counts=self._errno_counts(),
            errno=stop.errno or (errnos.name(int(first)) if first else None),
        )

    def _result(
        self,
        plan: Plan,
        seconds: float,
        before: measure.Sample,
        after: measure.Sample,
        usage: measure.Usage,
    ) -> ProbeResult:
        est = self.held
        stop = self._final_stop(est)
        server = self.cfg.server_mode
        outcomes, replies = (
            (self._outcomes(), self._watch_counts("replies")) if server else ({}, {})
        )
        hist = Histogram()
        for st in self._client_states():
            hist.merge({int(k): v for k, v in (st.get("hist") or {}).items()})
        start_rss = sum(int(s.get("start_rss", 0)) for s in self.state.values())
        return ProbeResult(
            established=est,
            target=self.cfg.target,
            stop=stop,
            predicted=self._prediction(plan, before.meminfo),
            per_connection=measure.per_connection(before, after, est, usage, start_rss),
            rate_per_s=round(est / seconds, 1) if seconds else 0.0,
            open_seconds=seconds,
            workers=len(self.clients),
            sink_workers=len(self.sinks),
            connect_latency_us=hist.summary(),
            cpu_seconds_per_1000=round(usage.cpu_seconds * 1000 / est, 4) if est else None,
            sink_accepted=self.sink_accepted(),
            isolated=self.cfg.isolated,
            netns=self.netns,
            sources=len(plan.sources),
            sink_endpoints=tuple(str(e) for e in plan.endpoints),
            worker_pids=tuple(c.pid for c in self.clients),
            notes=tuple(self.notes) + tuple(plan.notes) + self._mode_notes(),
            mode="server" if self.cfg.server_mode else "sink",
            check=self.cfg.check,
            served=self._served(),
            side=stop.side,
            outcomes=outcomes,
            replies=replies,
            timeline=tuple(self.timeline),
            io_model=self.cfg.io_model,
            setup_seconds=round(self.setup_seconds, 3) if self.setup_seconds else None,
            cpu_seconds=round(usage.cpu_seconds, 3),
            traffic=self.traffic,
            wake_latency_us=self.wake,
        )

    def _served(self) -> int | None:
        """Server side's count: the most served at once (a checked real server), or
        what the sink accepted (the built-in sink)."""
        if not self.cfg.server_mode:
            return self.sink_accepted()
        return self.max_served if self.cfg.check != "none" else None

    def _mode_notes(self) -> tuple[str, ...]:
        notes = []
        if not self.netns:
            notes.append("ran in the host's network namespace (not isolated)")
        if self.cfg.server_mode and self.cfg.check == "none":
            notes.append(
                "no --check: 'established' is all that is known; the server may not have "
                "accepted, let alone served, these connections"
            )
        if self.cfg.server_mode and self.server_before is None:
            notes.append("the server is not on this host: no server-side evidence was read")
        return tuple(notes)


def run(cfg: ProbeConfig, progress: Progress | None = None) -> ProbeResult:
    return Run(cfg, progress).execute()

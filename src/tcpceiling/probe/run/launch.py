"""The run's workers and their shares: the sink shards, each with its own ports, and
the client workers, forked `parallel` at a time as the previous ones fill their
share (or one at a time with --rate), each told its plan (workers/conns.ClientPlan)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from tcpceiling.host.roots import Roots
from tcpceiling.probe.run import budget
from tcpceiling.probe.run.config import ProbeConfig
from tcpceiling.probe.run.plan import MAX_EXPECTED, PORT_BURST, Plan
from tcpceiling.probe.run.slabmeter import SlabMeter
from tcpceiling.probe.workers.children import Children
from tcpceiling.probe.workers.client import ClientPlan, run_client
from tcpceiling.probe.workers.sink import SinkMode, SinkPlan, run_sink

UNBOUNDED = 1 << 40


class Launcher:
    """Forks the sink shards and the client workers of one run."""

    def __init__(self, cfg: ProbeConfig, kids: Children, interrupted: Callable[[], bool]) -> None:
        self.cfg, self.kids, self.interrupted = cfg, kids, interrupted
        self.assigned = 0  # connections given to client workers so far
        self.slab_meter: SlabMeter | None = None  # set once the run measured its start
        self.budget: budget.MemoryBudget | None = None
        self.in_flight_most: int | None = None  # per worker, within the listener's queue

    def start_sinks(self, plan: Plan) -> None:
        eps = tuple((e.host, e.port) for e in plan.endpoints)
        backlog = plan.snapshot.net.somaxconn
        mode: SinkMode = "echo" if self.cfg.active else "hold"
        lines = budget.cgroup_lines(Roots(), self.cfg.cgroup_floor)
        for i in range(plan.sink_shards):
            k = plan.owned_ports
            mine = eps[i * k : (i + 1) * k] if k else eps
            sp = SinkPlan(i, mine, backlog, mode, io_model=self.cfg.io_model,
                          cgroup_lines=lines, engine=self.cfg.engine)  # fmt: skip
            self.kids.spawn("sink", partial(run_sink, sp))
        self.kids.wait_for(self.kids.sinks, lambda w: w.started, 10, self.interrupted)

    def opening(self) -> list[Any]:
        """The client workers still opening."""
        kids = self.kids
        return [
            c
            for c in kids.clients
            if not (kids.state(c).finished or kids.state(c).released) and c.exit_status is None
        ]

    def may_spawn(self) -> bool:
        cfg = self.cfg
        return (
            (cfg.target is None or self.assigned < cfg.target)
            and (cfg.workers is None or len(self.kids.clients) < cfg.workers)
            and len(self.opening()) < (1 if cfg.rate else cfg.parallel)
        )

    def spawn_client(self, plan: Plan) -> None:
        cfg = self.cfg
        remaining = (cfg.target or MAX_EXPECTED * 10) - self.assigned
        index = len(self.kids.clients)
        last_allowed = cfg.workers is not None and index == cfg.workers - 1
        # --target max with the last allowed worker: it opens until a limit stops it.
        share = (
            UNBOUNDED
            if cfg.target is None and last_allowed
            else min(plan.client_capacity, remaining)
        )
        self.kids.spawn("client", partial(run_client, self.client_plan(plan, index, share)))
        self.assigned += share

    def client_plan(self, plan: Plan, index: int, share: int) -> ClientPlan:
        cfg = self.cfg
        tuples = tuple(
            (s, e.host, e.port) for s in (plan.sources or (None,)) for e in plan.endpoints
        )
        return ClientPlan(
            index=index,
            share=share,
            tuples=tuples,
            first=self.assigned,  # the turn over the tuples goes on where the last left it
            burst=PORT_BURST,
            nofile=cfg.worker_nofile,
            rate=cfg.rate,
            connect_timeout=cfg.connect_timeout,
            slab_meter=self.slab_meter,
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
            engine=cfg.engine,
        )

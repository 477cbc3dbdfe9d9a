"""The server's side of a run against a real server: the server the registry knows
behind the endpoint (here, or in another network namespace of this host), its state
read before and after the opening, the accept queue the opening's pace must stay
within, the thread sink's own prediction, and a server-side stop attributed from
that evidence (a path's box, the server's words and counters, a proxy's upstream)."""

from __future__ import annotations

from dataclasses import replace

from tcpceiling.analysis.analyze import evaluate
from tcpceiling.analysis.model import Endpoint, ScenarioResult
from tcpceiling.host import parse, read
from tcpceiling.host.cgroups import read_cgroup
from tcpceiling.host.roots import Roots
from tcpceiling.probe.run import outcome, path
from tcpceiling.probe.run.config import ProbeConfig
from tcpceiling.probe.run.plan import Plan, thread_sink_scenario
from tcpceiling.probe.run.result import Stop
from tcpceiling.probe.serving import evidence
from tcpceiling.probe.serving import upstream as proxy
from tcpceiling.probe.workers.children import Children
from tcpceiling.servers.find import find_listener
from tcpceiling.servers.model import AppLimit
from tcpceiling.servers.registry import app_limit


class ServerSide:
    """What the run reads of the server, and the stop it names from it."""

    def __init__(self, cfg: ProbeConfig, kids: Children, notes: list[str]) -> None:
        self.cfg, self.kids, self.notes = cfg, kids, notes
        self.limit: AppLimit | None = None
        self.at: proxy.Where | None = None  # the server, found in its namespace
        self.path_before: path.PathSample | None = None
        self.prediction: ScenarioResult | None = None  # the thread sink's

    def below_backlog(self, plan: Plan, before: evidence.ServerSample | None) -> int | None:
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

    def known_server(self, plan: Plan) -> AppLimit | None:
        """The server behind the first local endpoint, as tcpceiling.servers reads it
        (its own setting and words explain a server-side stop); else the server in
        another network namespace of this host that holds the address."""
        local = [e for e in plan.endpoints if plan.routes.get(e, (None, False))[1]]
        found = find_listener(Roots(), local[0].host, local[0].port) if local else None
        if found is not None:
            self.at = proxy.Where(None, local[0])
            self.limit = app_limit(found, Roots())
            return self.limit
        elsewhere = None if local else proxy.locate(plan.endpoints, Roots())
        if elsewhere is None:
            return None
        self.at, self.limit = elsewhere
        self.notes.append(
            f"the server on {self.at.endpoint} runs in another network namespace of "
            f"this host ({self.limit.server}, pid {self.limit.pid}): its side was read there"
        )
        return self.limit

    def sample(self, plan: Plan) -> evidence.ServerSample | None:
        """The server side as this host sees it, in the server's namespace; None when
        no destination is on this host."""
        where = self.at
        if where is not None and where.pid is not None:
            with proxy.entered(where, Roots()):
                return evidence.sample((where.endpoint,), self.cfg.server_pid)
        if not any(local for _src, local in plan.routes.values()):
            return None
        return evidence.sample(plan.endpoints, self.cfg.server_pid)

    def stop(
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
        server = self.limit
        if self.path_before is not None and self.cfg.path_netns:
            after_path = path.sample(self.cfg.path_netns)
            found = path.attribute(stop.detail, self.path_before, after_path, endpoints)
            if found is not None:
                return found
        found = evidence.attribute(
            stop.detail, replies, before or empty, after or empty, silent, server
        )
        reply = found.evidence.get("reply") or ""
        if self.at is not None and server is not None and server.upstreams:
            # read again only a proxy: reading a server at its cap can cost it a slot
            # (redis counts our own query among its rejected connections)
            return proxy.attribute(found, reply, proxy.view(self.at, Roots()))
        far = before is None and endpoints  # the server is not on this host
        note = proxy.remote_note(reply, endpoints[0]) if far else None
        if note:
            self.notes.append(note)
        return found

    def predict_sink(self, plan: Plan) -> ScenarioResult | None:
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
        self.prediction = evaluate(snap, scenario, plan.routes)
        return self.prediction

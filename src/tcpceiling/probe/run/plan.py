"""The probe's plan: read the host, then size the run: how many connections to
expect, how many client and sink shards, which sink ports and sources (the 4-tuple
space), and analyze's scenario for the prediction. Pure arithmetic on a Plan but
for make_plan's reads; the coordinator carries the plan out.

One process can hold at most RLIMIT_NOFILE fds (20000 here, hard limit fixed), so
the run is sharded. By default each sink shard owns a few sink ports and the
clients, unbound, turn over all ports in bursts, so the shares are even by
construction (5 % headroom); with --sink-ports or --source-ip every shard listens
on every port through SO_REUSEPORT, with 30 % headroom because the kernel spreads
connections among them by hash.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, field, replace

from tcpceiling.analysis.analyze import evaluate, read_snapshot, rescope, route_of
from tcpceiling.analysis.model import Endpoint, Scenario, resolve
from tcpceiling.host import netns as netns_mod
from tcpceiling.host.read import HostSnapshot
from tcpceiling.host.roots import Roots
from tcpceiling.probe.run.config import GIB, ProbeConfig

FD_MARGIN = 16  # fds a worker keeps for itself (stdio, pipe, epoll, listdir)
SINK_HEADROOM = 1.3
#: Default sink ports (or, with --sink-ports given, default sources) keep each
#: (source, sink port) pair at most 1/SPREAD full of ephemeral ports, so connect()'s
#: port search (__inet_hash_connect) finds a free port at once. Spreading over sink
#: ports rather than sources spares a setsockopt() and a bind() per connection (1.8
#: of 22 us per connect in a one-process micro-benchmark) and keeps the
#: kernel's bind2 buckets (one per source address and port in use) few.
SPREAD = 8
#: Owned ports: a shard's share is exact but for a burst per port, and a client that
#: stops early leaves its ports short: a little headroom covers both.
OWNED_HEADROOM = 1.05
#: Connections in a row toward one (source, sink port) before turning to the next.
PORT_BURST = 16
MAX_EXPECTED = 10_000_000


def default_floor(mem_total: int) -> int:
    """Keep max(1 GiB, 10 % of MemTotal) available."""
    return max(GIB, mem_total // 10)


@dataclass(frozen=True)
class Plan:
    client_capacity: int
    sink_capacity: int
    expected: int
    sink_shards: int
    endpoints: tuple[Endpoint, ...]
    sources: tuple[str, ...]
    floor: int
    snapshot: HostSnapshot
    owned_ports: int = 0  # ports per sink shard when each owns its own; 0: all share
    routes: dict[Endpoint, tuple[str | None, bool]] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


def sink_ports(port_range: tuple[int, int], count: int) -> list[int]:
    """Listener ports outside the ephemeral range, so they take no port from clients:
    below it when there is room above 1023, else above it (fewer when neither fits)."""
    low, high = port_range
    if low - count >= 1024:
        return list(range(low - count, low))
    count = min(count, max(1, 65535 - high))
    return list(range(high + 1, high + 1 + count))


def default_sources(host: str, count: int) -> tuple[str, ...]:
    if ":" in host:
        return ()
    first = int(ipaddress.IPv4Address("127.0.0.2"))
    return tuple(str(ipaddress.IPv4Address(first + i)) for i in range(count))


def pairs_needed(plan: Plan) -> int:
    """(source, sink port) pairs that keep each at most 1/SPREAD full of ports."""
    low, high = plan.snapshot.net.port_range
    return max(1, math.ceil(SPREAD * plan.expected / (high - low + 1)))


def shared_ports(cfg: ProbeConfig, plan: Plan, hard: int) -> Plan:
    """--sink-ports or --source-ip given: every shard listens on every sink port
    (SO_REUSEPORT spreads by hash, hence the headroom); sources fill the spread."""
    sources = plan.sources
    if not cfg.sources:
        n = math.ceil(pairs_needed(plan) / len(plan.endpoints))
        sources = default_sources(cfg.sink_host, n)
    capacity = hard - FD_MARGIN - len(plan.endpoints)  # its listeners are fds
    shards = max(1, math.ceil(plan.expected * SINK_HEADROOM / capacity))
    return replace(plan, sources=sources, sink_capacity=capacity, sink_shards=shards)


def owned_ports(cfg: ProbeConfig, plan: Plan, hard: int) -> Plan:
    """The default: no source binding; each sink shard owns `owned_ports` ports of
    its own, and the clients turn over all ports in bursts, so every shard gets an
    even share without SO_REUSEPORT's hashing (and its headroom) and every drain of
    a listener accepts a burst."""
    shards = max(1, math.ceil(plan.expected * OWNED_HEADROOM / (hard - FD_MARGIN)))
    per = max(1, math.ceil(pairs_needed(plan) / shards))  # then count its listeners
    capacity = hard - FD_MARGIN - per
    shards = max(1, math.ceil(plan.expected * OWNED_HEADROOM / capacity))
    ports = sink_ports(plan.snapshot.net.port_range, shards * per)
    per = max(1, len(ports) // shards)
    route = plan.routes[plan.endpoints[0]]
    endpoints = tuple(Endpoint(cfg.sink_host, p) for p in ports[: shards * per])
    return replace(
        plan,
        sink_capacity=capacity,
        endpoints=endpoints,
        routes={e: route for e in endpoints},
        sink_shards=shards,
        owned_ports=per,
    )


def epoll_watches(cfg: ProbeConfig, plan: Plan) -> int:
    """epoll watches per connection on this host. The clients watch none (a poll()
    per batch); the built-in sink watches its end only while it serves traffic (echo
    under epoll); a real server of this host is taken to watch its end (nginx and
    redis use epoll)."""
    if cfg.server_mode:
        return int(all(plan.routes.get(e, (None, False))[1] for e in plan.endpoints))
    return int(cfg.active and cfg.io_model == "epoll")


def client_scenario(cfg: ProbeConfig, plan: Plan, processes: int) -> Scenario:
    return Scenario(
        role="client",
        connect=plan.endpoints,
        sources=plan.sources,
        epoll_watches=epoll_watches(cfg, plan),
        processes=processes,
        memory_floor=plan.floor,
        cgroup_floor=cfg.cgroup_floor,
    )


def thread_sink_scenario(cfg: ProbeConfig, plan: Plan, shards: int) -> Scenario:
    """The thread sink's side; its clients are this run's, in its cgroup."""
    return Scenario(
        role="server",
        listen=plan.endpoints,
        io_model="threads",
        processes=shards,
        memory_floor=plan.floor,
        cgroup_floor=cfg.cgroup_floor,
        peer_local=True,
    )


def size(
    cfg: ProbeConfig,
    snap: HostSnapshot,
    endpoints: tuple[Endpoint, ...],
    routes: dict[Endpoint, tuple[str | None, bool]],
) -> Plan:
    """The whole plan from what was read, by arithmetic alone: how many connections
    to expect (analyze's client scenario, and the thread sink's own for threads),
    then the shards, sink ports and sources that spread them."""
    hard = snap.process.limits.nofile.hard or snap.system.nr_open
    client_cap = (cfg.worker_nofile or hard) - FD_MARGIN
    floor = (
        cfg.memory_floor
        if cfg.memory_floor is not None
        else default_floor(snap.system.meminfo.mem_total)
    )
    plan = Plan(
        client_cap, hard - FD_MARGIN, 0, 1, endpoints, cfg.sources, floor, snap, routes=routes
    )
    workers = cfg.workers or 10_000
    pred = evaluate(snap, client_scenario(cfg, plan, workers), routes)
    # With default sources or sink ports the port term is ours to size: no cap.
    ours = not cfg.sources and not cfg.server_mode
    ceilings = [
        int(c.ceiling)
        for c in pred.constraints
        if c.kind == "total" and c.ceiling is not None and not (ours and c.id == "ports")
    ]
    expected = min(cfg.target or MAX_EXPECTED, *ceilings, workers * client_cap)
    if cfg.io_model == "threads":  # the sink's task limits bound the run (and its shards)
        server = evaluate(snap, thread_sink_scenario(cfg, plan, 1), routes).ceiling
        expected = min(expected, server or MAX_EXPECTED)
    plan = replace(plan, expected=expected)
    if cfg.server_mode:  # a real server: the kernel picks sources, no sink of ours
        return replace(plan, sink_shards=0)
    if cfg.sink_ports is None and not cfg.sources:
        return owned_ports(cfg, plan, hard)
    return shared_ports(cfg, plan, hard)


def make_plan(cfg: ProbeConfig, netns: str | None) -> Plan:
    """Read the host (per-netns values inside the run's namespace), then size() the
    run. Called from the host namespace: tcp_mem and co. exist only there."""
    snap, _ = read_snapshot(Roots(), netns=netns)
    if cfg.server_mode:
        endpoints = tuple(dict.fromkeys(resolve(e) for e in cfg.connect))
    else:
        ports = sink_ports(snap.net.port_range, cfg.sink_ports or 1)
        endpoints = tuple(Endpoint(cfg.sink_host, p) for p in ports)
    with netns_mod.inside(netns):
        routes = {e: route_of(e.host, e.port) for e in endpoints}
    plan = size(cfg, rescope(snap, endpoints), endpoints, routes)
    if plan.endpoints != endpoints:  # the sink's ports: count what is toward them
        plan = replace(plan, snapshot=rescope(plan.snapshot, plan.endpoints))
    return plan

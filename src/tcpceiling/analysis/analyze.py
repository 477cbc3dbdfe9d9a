"""analyze: read the host once, evaluate every limit family for each scenario, and
name the binding constraint (the smallest total ceiling) and its two runners-up."""

from __future__ import annotations

import ipaddress
import itertools
import json
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from tcpceiling.analysis import whatif
from tcpceiling.analysis.context import Context, PathTuple, connection_cost, port_pool
from tcpceiling.analysis.model import (
    Analysis,
    Constraint,
    Endpoint,
    Scenario,
    ScenarioResult,
    resolve,
    total_ceiling,
)
from tcpceiling.analysis.registry import FAMILIES, NAT_FAMILIES
from tcpceiling.errors import InputError
from tcpceiling.host import nat, read, route, sockets
from tcpceiling.host import netns as netns_mod
from tcpceiling.host.cgroups import read_cgroup
from tcpceiling.host.roots import Roots
from tcpceiling.results import check_document
from tcpceiling.servers.find import find_listener, find_pid
from tcpceiling.servers.model import AppLimit
from tcpceiling.servers.registry import app_limit

Route = tuple[str | None, bool]  # (source the kernel picks, destination is local)


def route_of(host: str, port: int, live: bool = True) -> Route:
    if live:
        return route.source_for(host, port), route.is_local(host)
    return None, ipaddress.ip_address(host).is_loopback


def read_snapshot(
    roots: Roots,
    pid: str = "self",
    netns: str | None = None,
    destinations: tuple[Endpoint, ...] = (),
    table: sockets.SocketTable | None = None,
) -> tuple[read.HostSnapshot, dict[Endpoint, Route]]:
    """Read process, system and cgroup values here, per-netns values inside `netns`;
    the socket table too, unless the caller read it already (`table`)."""
    if pid != "self" and (not pid.isdigit() or not (roots.procfs / pid).is_dir()):
        raise InputError(f"no process {pid} under {roots.procfs}")
    process = read.read_process(roots, pid)
    system = read.read_system(roots)
    cgroup = read_cgroup(roots, process)
    with netns_mod.inside(netns):
        net = read.read_net(roots)
        if table is None:
            table = (
                sockets.read_live([(d.host, d.port) for d in destinations])
                if roots.live
                else sockets.read_fixture(roots.procfs.parent)
            )
        routes = {d: route_of(d.host, d.port, roots.live) for d in destinations}
    path = nat.read_path(roots, netns)
    snap = read.HostSnapshot(process, net, system, cgroup, table, roots, netns, path=path)
    return snap, routes


def rescope(snap: read.HostSnapshot, destinations: tuple[Endpoint, ...]) -> read.HostSnapshot:
    """The snapshot with its socket table read again for `destinations` (a live
    table counts only the connections toward the destinations it was read for)."""
    if not snap.roots.live:
        return snap
    with netns_mod.inside(snap.netns):
        table = sockets.read_live([(d.host, d.port) for d in destinations])
    return replace(snap, sockets=table)


def _tuples(scenario: Scenario, routes: dict[Endpoint, Route]) -> tuple[PathTuple, ...]:
    if scenario.role != "client":
        return ()
    if scenario.sources:
        return tuple(itertools.product(scenario.sources, scenario.connect))
    return tuple((routes.get(d, (None, False))[0], d) for d in scenario.connect)


def per_hosts(c: Constraint, hosts: int) -> Constraint:
    """A client's limit over `hosts` hosts like this one: each has its own ports, fds,
    memory, so the total ceiling adds up (`probe --scheduler` opens it)."""
    if c.kind != "total" or c.ceiling is None:
        return c
    note = f"{c.note}; x {hosts} client hosts like this one"
    return replace(c, ceiling=c.ceiling * hosts, note=note)


def _summary(role: str, ceiling: int | None, binding: str | None, scenario: Scenario) -> str:
    if ceiling is None:
        return f"no limit found for a {role}"
    if scenario.client_hosts > 1 and role == "client":
        dests = ", ".join(str(d) for d in scenario.connect)
        return (
            f"{scenario.client_hosts} client hosts like this one can hold about {ceiling:,} "
            f"connections to {dests}; the first limit each reaches is {binding}"
        )
    where = ""
    if role in ("client", "nat"):
        where = " to " + ", ".join(str(d) for d in scenario.connect)
    if role == "nat":
        return (
            f"this host can forward about {ceiling:,} connections{where}; "
            f"the first limit reached is {binding}"
        )
    return (
        f"this host can hold about {ceiling:,} connections as a {role}{where}; "
        f"the first limit reached is {binding}"
    )


def context(
    snap: read.HostSnapshot, scenario: Scenario, routes: dict[Endpoint, Route] | None = None
) -> Context:
    """What every limit family reads: the tuples, whether the peer is local, the cost."""
    routes = routes or {}
    local = scenario.peer_local or (
        scenario.role == "client"
        and bool(scenario.connect)
        and all(routes.get(d, (None, False))[1] for d in scenario.connect)
    )
    tuples = _tuples(scenario, routes)
    cost = connection_cost(snap, scenario, local, port_pool(snap, tuples))
    return Context(snap, scenario, tuples, local, cost)


def evaluate(
    snap: read.HostSnapshot, scenario: Scenario, routes: dict[Endpoint, Route] | None = None
) -> ScenarioResult:
    """Pure given a snapshot: one Constraint per limit and the verdict."""
    ctx = context(snap, scenario, routes)
    families = NAT_FAMILIES if scenario.role == "nat" else FAMILIES
    constraints = tuple(c for _, family in families for c in family(ctx))
    if scenario.role == "client" and scenario.client_hosts > 1:
        constraints = tuple(per_hosts(c, scenario.client_hosts) for c in constraints)
    ranked = sorted(
        (c for c in constraints if c.kind == "total" and c.ceiling is not None),
        key=lambda c: c.ceiling or 0,
    )
    binding = ranked[0] if ranked else None
    ceiling = total_ceiling(binding) if binding else None
    bid = binding.id if binding else None
    rates = sorted(
        (c for c in constraints if c.kind == "rate" and c.ceiling is not None),
        key=lambda c: c.ceiling or 0,
    )
    rate = rates[0] if rates else None
    return ScenarioResult(
        role=scenario.role,
        ceiling=ceiling,
        binding=bid,
        runners_up=tuple(c.id for c in ranked[1:3]),
        summary=_summary(scenario.role, ceiling, bid, scenario),
        scenario=scenario,
        constraints=constraints,
        rate_ceiling=rate.ceiling if rate else None,
        rate_binding=rate.id if rate else None,
        rate_summary=_rate_summary(scenario.role, rate, constraints),
    )


def _rate_summary(role: str, rate: Constraint | None, constraints: tuple[Constraint, ...]) -> str:
    """The other half of the answer: new connections per second."""
    if rate is not None:
        return (
            f"this host can sustain about {rate.ceiling:,} new connections/s as a {role}; "
            f"the first limit reached is {rate.id}"
        )
    cpu = next((c for c in constraints if c.id == "cpu_churn"), None)
    return f"new connections/s as a {role}: no rate limit found" + (
        f" ({cpu.note})" if cpu is not None and cpu.note else ""
    )


def _host_info(snap: read.HostSnapshot) -> dict[str, object]:
    live = snap.roots.live
    return {
        "procfs": str(snap.roots.procfs),
        "pid": snap.process.pid if snap.process.pid != "self" else (os.getpid() if live else None),
        "netns": snap.netns,
        "uid": snap.process.status.uid,
        "mem_total": snap.system.meminfo.mem_total,
        "sockets_source": snap.sockets.source,
    }


def not_local(sources: tuple[str, ...], netns: str | None) -> list[str]:
    """The source addresses that are no address of the namespace (the kernel would
    refuse to bind them: EADDRNOTAVAIL, which is not a port shortage)."""
    with netns_mod.inside(netns):
        return [s for s in sources if not route.is_local(s)]


def check_sources(sources: tuple[str, ...], netns: str | None) -> None:
    """Every source address must be local in the namespace the run reads or uses."""
    missing = not_local(sources, netns)
    if missing:
        where = f"network namespace {netns}" if netns else "this host's network namespace"
        cmd = f"ip -n {netns} addr add" if netns else "ip addr add"
        more = f" (and {len(missing) - 1:,} more)" if len(missing) > 1 else ""
        raise InputError(
            f"--source-ip {missing[0]}{more} is not an address of {where}: "
            f"add it first, e.g. `{cmd} {missing[0]}/{32 if ':' not in missing[0] else 128} dev lo`"
        )


def sources_here(sources: tuple[str, ...], netns: str | None, own: bool) -> str | None:
    """Source addresses must be local where a run happens: in the run's own
    namespace (`own`) the missing ones are added to its loopback, and the note saying
    so is returned; anywhere else a missing one is an input error."""
    if not (own and netns):
        check_sources(sources, netns)
        return None
    missing = tuple(not_local(sources, netns))
    if not missing:
        return None
    netns_mod.add_addresses(netns, missing)
    shown = ", ".join(missing[:3]) + (" …" if len(missing) > 3 else "")
    return f"added {len(missing):,} source address(es) to loopback in the run's namespace: {shown}"


def prepare(
    scenarios: list[Scenario],
    roots: Roots,
    pid: str = "self",
    netns: str | None = None,
    table: sockets.SocketTable | None = None,
) -> tuple[list[Scenario], read.HostSnapshot, dict[Endpoint, Route]]:
    """The scenarios with their destinations resolved, the snapshot and the routes."""
    scenarios = [replace(s, connect=tuple(resolve(d) for d in s.connect)) for s in scenarios]
    if roots.live:
        # a nat scenario's sources are the clients behind it, not addresses of its own
        mine = (s for sc in scenarios if sc.role != "nat" for s in sc.sources)
        check_sources(tuple(dict.fromkeys(mine)), netns)
    dests = tuple(dict.fromkeys(d for s in scenarios for d in s.connect))
    snap, routes = read_snapshot(roots, pid, netns, dests, table)
    if roots.live:
        listens = tuple(dict.fromkeys(e for s in scenarios for e in s.listen))
        snap = replace(snap, servers=servers_behind(roots, pid, listens, netns))
        snap = replace(snap, upstream_sockets=upstream_sockets(snap.servers, netns))
    return scenarios, snap, routes


def upstream_sockets(
    servers: tuple[AppLimit, ...], netns: str | None
) -> sockets.SocketTable | None:
    """The proxies' sockets toward their upstreams' addresses, selected by the kernel
    (one condition per address), in the namespace the proxies run in."""
    dests = sorted({(u.host, u.port) for s in servers for up in s.upstreams for u in up.servers})
    if not dests:
        return None
    with netns_mod.inside(netns):
        return sockets.read_live(dests)


def servers_behind(
    roots: Roots, pid: str, listens: tuple[Endpoint, ...], netns: str | None
) -> tuple[AppLimit, ...]:
    """The servers listening on `listens`, or the one `pid` belongs to, each with its
    own limit as tcpceiling.servers reads it (a live host only: sock_diag)."""
    with netns_mod.inside(netns):
        found = [find_listener(roots, e.host, e.port) for e in listens]
        if pid != "self":
            found.append(find_pid(roots, int(pid)))
        unique = {f.main.pid: f for f in found if f is not None}
        return tuple(app_limit(f, roots) for f in unique.values())


def analyze(
    scenarios: list[Scenario],
    roots: Roots | None = None,
    pid: str = "self",
    netns: str | None = None,
    settings: Sequence[whatif.Setting] = (),
) -> Analysis:
    """Read the host (or the fixture tree behind `roots`) and evaluate each scenario;
    with `settings`, as the host would be after them (whatif)."""
    scenarios, snap, routes = prepare(scenarios, roots or Roots(), pid, netns)
    snap = whatif.apply(snap, settings)
    results = tuple(evaluate(snap, s, routes) for s in scenarios)
    host = _host_info(snap) | ({"what_if": [f"{k}={v}" for k, v in settings]} if settings else {})
    return Analysis(scenarios=results, host=host)


def load_measured_cost(path: Path) -> dict[str, Any]:
    """What a previous `probe --json` measured: kernel bytes per connection, and
    when it ran a traffic profile, CPU per message and bytes per active connection.
    A `rate --json` result gives the CPU per connection cycle instead."""
    try:
        raw = json.loads(path.read_text())
        if isinstance(raw, dict) and raw.get("kind") == "rate":
            data = check_document(raw, "rate", f"--cost-from {path}")
            cycle = data["cpu_us_per_cycle"]
            # both ends of a cycle on this host: together, or as the two sides measured
            per = cycle.get("both") or sum(v for v in cycle.values() if v)
            if not per:
                raise InputError(f"--cost-from {path}: the rate run completed no cycle")
            return {"cpu_us_per_cycle": float(per)}
        data = check_document(raw, "probe", f"--cost-from {path}")
        out: dict[str, Any] = {"kernel_bytes": float(data["per_connection"]["kernel_bytes"])}
    except InputError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"--cost-from {path}: no per_connection.kernel_bytes ({exc})") from exc
    traffic = data.get("traffic") or {}
    if traffic.get("cpu_us_per_message") is not None:
        out["traffic"] = traffic
    return out


def with_measured_cost(scenarios: list[Scenario], path: Path | None) -> list[Scenario]:
    """Scenarios with the measured costs; an active scenario (message_rate > 0) takes
    the bytes per active connection and, unless given, the profile's rate and size."""
    if path is None:
        return scenarios
    cost = load_measured_cost(path)
    if "cpu_us_per_cycle" in cost:
        return [replace(s, cpu_us_per_cycle=cost["cpu_us_per_cycle"]) for s in scenarios]
    out = []
    for s in scenarios:
        s = replace(s, measured_kernel_bytes=cost["kernel_bytes"])
        traffic = cost.get("traffic")
        if traffic:
            rate = s.message_rate or float(traffic["message_rate"])
            size = s.message_bytes if s.message_rate else int(traffic["message_bytes"])
            active = traffic.get("kernel_bytes_active") or cost["kernel_bytes"]
            s = replace(
                s,
                message_rate=rate,
                message_bytes=size,
                cpu_us_per_message=s.cpu_us_per_message or float(traffic["cpu_us_per_message"]),
                measured_kernel_bytes=max(cost["kernel_bytes"], float(active)),
            )
        out.append(s)
    return out

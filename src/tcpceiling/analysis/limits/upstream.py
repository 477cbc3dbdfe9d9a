"""A reverse proxy is a client too: the ports toward its upstreams (`upstream_ports`)
and, without upstream keep-alive, the rate at which TIME_WAIT gives them back
(`upstream_time_wait`). Details per upstream server: docs/proxies.md.

Each client the proxy serves holds one connection toward the upstream it is sent to,
so that upstream's 4-tuples bound the clients served:
- per (source address, upstream address, port), the kernel hands out its range less
  reserved and listener-held ports (__inet_hash_connect, net/ipv4/inet_hashtables.c),
  when the proxy binds its source with IP_BIND_ADDRESS_NO_PORT (nginx's proxy_bind,
  HAProxy's `source ADDR`) or does not bind at all (one source: the route's);
- a proxy that binds a port itself (HAProxy `source ADDR:LO-HI`) hands out its own
  range, one pool per source address for every server that shares it;
- a server's own cap (nginx max_conns, HAProxy maxconn) bounds it first;
- the proxy balances over an upstream's servers and moves on from one that fails
  (nginx proxy_next_upstream error, HAProxy redispatch): the upstream holds the sum.
Closing first (no keep-alive toward the upstream), the proxy leaves a TIME_WAIT on
each port for 60 s, so requests per second toward one upstream are at most its ports
/ 60 s, unless tcp_tw_reuse lets connect() take a TIME_WAIT over (1; 2 = loopback only).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from tcpceiling.analysis.context import Context
from tcpceiling.analysis.limits.ports import TIME_WAIT_SECONDS, tw_reusable_at, usable_in
from tcpceiling.analysis.model import Constraint
from tcpceiling.host.read import NetView
from tcpceiling.host.sockets import SocketTable
from tcpceiling.servers.model import AppLimit, Upstream, UpstreamServer
from tcpceiling.servers.registry import raise_upstream

SYMPTOM = "the proxy's connect() toward the upstream fails with EADDRNOTAVAIL (99)"


@dataclass(frozen=True)
class ServerPorts:
    """One upstream server's ports as the proxy may use them, and as it uses them."""

    upstream: str
    address: str
    sources: tuple[str, ...]  # () = the kernel's choice (one source)
    allowed: int
    used: int
    time_wait: int
    how: str  # the arithmetic

    @property
    def left(self) -> int:
        return max(0, self.allowed - self.used)


def _pool(srv: UpstreamServer, usable: int) -> tuple[int, str]:
    """(ports per source address, why) for one server."""
    if srv.port_range is not None:
        lo, hi = srv.port_range
        return hi - lo + 1, f"the proxy's own range {lo}-{hi}"
    why = f"{usable} usable ports of ip_local_port_range"
    return usable, why + ("" if srv.bind_no_port or not srv.sources else ", one pool per address")


def server_ports(
    up: Upstream, usable: int, table: SocketTable, tw_reused: bool
) -> list[ServerPorts]:
    """Every server of `up`: allowed = sources x pool (capped by its max_conns), used =
    the sockets toward it from those sources (TIME_WAIT too, unless reusable)."""
    out = []
    for srv in up.servers:
        pool, why = _pool(srv, usable)
        n = max(1, len(srv.sources))
        allowed = n * pool
        how = f"{n} source address(es) x {why}"
        if srv.max_conns is not None and srv.max_conns < allowed:
            allowed, how = srv.max_conns, f"{how}; its own cap {srv.max_conns}"
        used = tw = 0
        for src in srv.sources or (None,):
            u, t = table.used_toward(srv.host, srv.port, src)
            used, tw = used + u, tw + t
        out.append(ServerPorts(up.name, srv.address, srv.sources, allowed,
                               used - (tw if tw_reused else 0), tw, how))  # fmt: skip
    return out


def _shared(up: Upstream, rows: list[ServerPorts]) -> int:
    """What the upstream holds: the sum over its servers, except that servers drawing
    on one pool per source address hold it once between them: a range the proxy
    hands out for all of them (HAProxy's backend `source A:LO-HI`), or a bind()
    without IP_BIND_ADDRESS_NO_PORT (the kernel then keeps a port per address)."""
    pooled: dict[tuple[str, tuple[int, int] | None], int] = {}
    alone = 0
    for s, r in zip(up.servers, rows, strict=True):
        if s.sources and (s.range_shared or not s.bind_no_port):
            per = r.allowed // len(s.sources)
            for src in s.sources:
                key = (src, s.port_range)
                pooled[key] = max(pooled.get(key, 0), per)
        else:
            alone += r.allowed
    return alone + sum(pooled.values())


def reusable(tw_reuse: int, up: Upstream) -> bool:
    """tcp_tw_reuse lets connect() take over a TIME_WAIT toward every server of `up`."""
    return bool(up.servers) and all(tw_reusable_at(tw_reuse, s.host) for s in up.servers)


def rows_for(up: Upstream, net: NetView, table: SocketTable) -> tuple[list[ServerPorts], int]:
    """Each server of `up` with its ports allowed and used, and what the upstream
    holds in all, from a namespace's values and its socket table (read for the
    upstream's addresses): what analyze, the probe, doctor and the exporter count."""
    usable = usable_in(net, table.listen_ports)[3]
    rows = server_ports(up, usable, table, reusable(net.tw_reuse, up))
    return rows, _shared(up, rows)


def _table(ctx: Context) -> SocketTable:
    return ctx.snap.upstream_sockets or ctx.snap.sockets


def evaluate_upstream(ctx: Context, s: AppLimit, up: Upstream) -> tuple[Constraint, Constraint]:
    rows, allowed = rows_for(up, ctx.snap.net, _table(ctx))
    used = sum(r.used for r in rows)
    details = {
        "server": s.server,
        "pid": s.pid,
        "listen": s.listen,
        "upstream": up.name,
        "directive": up.directive,
        "keepalive": up.keepalive,
        "servers": [
            {"address": r.address, "sources": list(r.sources) or ["kernel's choice"],
             "allowed": r.allowed, "used": r.used, "time_wait": r.time_wait, "how": r.how}
            for r in rows
        ],
    }  # fmt: skip
    where = ", ".join(r.address for r in rows)
    ports = Constraint(
        id="upstream_ports",
        capacity=allowed,
        in_use=used,
        per_connection=1,
        ceiling=max(0, allowed - used),
        symptom="; ".join(t for t in (SYMPTOM, s.upstream_symptom) if t),
        raise_=raise_text(s, up),
        source=f"{s.server}: {up.directive}; {ctx.proc('sys/net/ipv4/ip_local_port_range')}, "
        f"{_table(ctx).source}",
        capacity_unit="ports",
        note=f"{s.server} (pid {s.pid}) on {s.listen} -> {up.name} ({where}): "
        + "; ".join(f"{r.address}: {r.how} = {r.allowed}" for r in rows),
        details=details,
    )
    return ports, _rate(ctx, s, up, allowed, reusable(ctx.snap.net.tw_reuse, up), details)


def _rate(
    ctx: Context,
    s: AppLimit,
    up: Upstream,
    allowed: int,
    tw_reused: bool,
    details: dict[str, object],
) -> Constraint:
    base = Constraint(
        id="upstream_time_wait",
        capacity=allowed,
        in_use=None,
        per_connection=1,
        ceiling=None,
        symptom="each request's upstream connection closed by the proxy keeps its port "
        "in TIME_WAIT for 60 s; then connect() fails with EADDRNOTAVAIL",
        raise_=raise_text(s, up),
        source=f"{s.server}: {up.directive}; {ctx.proc('sys/net/ipv4/tcp_tw_reuse')}",
        kind="rate",
        unit="requests per second toward the upstream",
        capacity_unit="ports",
        details=details,
    )
    if up.keepalive:
        return replace(base, note=f"upstream keepalive {up.keepalive}: connections are "
                       "reused, not closed per request: no TIME_WAIT bound")  # fmt: skip
    if tw_reused:
        return replace(base, note=f"tcp_tw_reuse={ctx.snap.net.tw_reuse} lets connect() "
                       f"take a TIME_WAIT toward {up.name} over: no TIME_WAIT bound")  # fmt: skip
    rate = allowed / TIME_WAIT_SECONDS
    return replace(base, ceiling=round(rate, 3),
                   note=f"no keepalive toward {up.name}: {allowed} ports / "
                   f"{TIME_WAIT_SECONDS} s TIME_WAIT = {rate:.3f} requests/s")  # fmt: skip


def raise_text(s: AppLimit, up: Upstream) -> str:
    """How to give the proxy more ports toward `up`, in its own words."""
    return raise_upstream(s, up)


def evaluate(ctx: Context) -> list[Constraint]:
    """The tightest upstream of the proxies behind the scenario's listeners: the
    first one a listener sends its clients to (its catch-all); the others in details."""
    if ctx.scenario.role != "server":
        return []
    found = [evaluate_upstream(ctx, s, s.upstreams[0]) for s in ctx.snap.servers if s.upstreams]
    if not found:
        return []
    found.sort(key=lambda pair: pair[0].ceiling or 0)
    (ports, rate), others = found[0], found[1:]
    for s in ctx.snap.servers:
        for up in s.upstreams[1:]:
            others.append(evaluate_upstream(ctx, s, up))
    if others:
        ports.details["others"] = [o[0].details | {"ceiling": o[0].ceiling} for o in others]
    return [ports, rate]

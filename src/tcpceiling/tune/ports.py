"""Ephemeral ports for a client: a wider ip_local_port_range (listening ports in the
new range reserved, so a restarted service finds its port free), or more source IPs,
or more destination ports. Each (source, destination) tuple has its own
(high - low + 1) - reserved - bind()-held ports (__inet_hash_connect,
net/ipv4/inet_hashtables.c)."""

from __future__ import annotations

import ipaddress
import math

from tcpceiling.analysis.context import Context
from tcpceiling.analysis.limits.ports import usable_ports
from tcpceiling.analysis.model import Constraint
from tcpceiling.servers.registry import raise_upstream
from tcpceiling.tune.model import Change, Option, Raise

LOWEST = 1024  # below it are the well-known ports
HIGHEST = 65535


def _usable(ctx: Context, low: int, high: int) -> int:
    """Ports of [low, high] a connect() can take: not reserved, not held by bind()."""
    return usable_ports(ctx.snap, (low, high))[3]


def widest_needed(ctx: Context, per_tuple: int) -> tuple[int, int] | None:
    """The narrowest range, grown down from the current high then up to 65535, that
    gives `per_tuple` usable ports; None when even 1024-65535 does not."""
    low, high = ctx.snap.net.port_range
    while _usable(ctx, low, high) < per_tuple and low > LOWEST:
        low = max(LOWEST, low - (per_tuple - _usable(ctx, low, high)))
    while _usable(ctx, low, high) < per_tuple and high < HIGHEST:
        high = min(HIGHEST, high + (per_tuple - _usable(ctx, low, high)))
    return (low, high) if _usable(ctx, low, high) >= per_tuple else None


def _reserve(ctx: Context, low: int, high: int) -> Change | None:
    """Listening ports that the new range would cover, added to the reserved list."""
    net = ctx.snap.net
    listening = sorted(p for p in ctx.snap.sockets.listen_ports if low <= p <= high)
    if not listening or set(listening) <= net.reserved_ports:
        return None
    ports = sorted(net.reserved_ports | set(listening))
    now = ",".join(str(p) for p in sorted(net.reserved_ports)) or ""
    why = f"keep listening ports {', '.join(map(str, listening[:8]))} out of the range"
    return Change("ports", "net.ipv4.ip_local_reserved_ports", now, _ranges(ports), why)


def _ranges(ports: list[int]) -> str:
    """8080,9000-9010: the kernel's own list syntax."""
    out: list[str] = []
    start = prev = ports[0]
    for p in [*ports[1:], -1]:
        if p != prev + 1:
            out.append(str(start) if start == prev else f"{start}-{prev}")
            start = p
        prev = p
    return ",".join(out)


def _used(c: Constraint) -> int:
    return max((int(t["used"]) for t in c.details.get("tuples", [])), default=0)


def _sources(ctx: Context, usable: int, goal: int, target: int, alone: bool) -> Option:
    """Source IPs that give the target `usable` ports each toward every destination."""
    dests = max(1, len(ctx.scenario.connect))
    count = math.ceil(target / max(1, usable * dests))
    more = math.ceil(goal / max(1, usable * dests))
    dst = ctx.scenario.connect[0].host if ctx.scenario.connect else "192.0.2.1"
    if ipaddress.ip_address(dst).is_loopback:
        commands = tuple(f"ip addr add 127.0.0.{i}/32 dev lo" for i in range(2, more + 1))
    else:
        commands = tuple(
            f"ip addr add <free address {i}>/32 dev <interface toward {dst}>"
            for i in range(2, more + 1)
        )
    how = "or keep the range" if alone else "and, even with the widest range, use"
    text = (
        f"{how} ({usable:,} ports per source) and connect from {count} source IPs ({more} "
        "with headroom), each bound with bind() before connect() (IP_BIND_ADDRESS_NO_PORT) "
        "or --source-ip"
    )
    return Option("ports", "sources", count, more, text, commands)


def _dports(ctx: Context, usable: int, goal: int, target: int) -> Option:
    sources = max(1, len({src for src, _ in ctx.tuples}))
    count = math.ceil(target / max(1, usable * sources))
    more = math.ceil(goal / max(1, usable * sources))
    text = f"or have the server listen on {count} ports ({more} with headroom) and spread over them"
    return Option("ports", "destination_ports", count, more, text)


def ports(ctx: Context, c: Constraint, goal: int, target: int) -> Raise:
    """A client's ports: the range first (one sysctl) and the two other ways; past
    what the widest range gives one tuple, the range at its widest and the sources
    (or destination ports) it still takes."""
    if ctx.scenario.role != "client" or not ctx.tuples:
        return Raise()
    per_tuple = math.ceil(goal / len(ctx.tuples)) + _used(c)
    found = widest_needed(ctx, per_tuple)
    low, high = found or (LOWEST, HIGHEST)
    usable = _usable(ctx, *ctx.snap.net.port_range) if found else _usable(ctx, low, high)
    options: tuple[Option, ...] = (
        _sources(ctx, usable, goal, target, found is not None),
        _dports(ctx, usable, goal, target),
    )
    if (low, high) == ctx.snap.net.port_range:
        return Raise(options=options)
    now = "{} {}".format(*ctx.snap.net.port_range)
    why = f"{min(per_tuple, _usable(ctx, low, high)):,} usable ports per (source, destination)"
    changes = [Change("ports", "net.ipv4.ip_local_port_range", now, f"{low} {high}", why)]
    reserve = _reserve(ctx, low, high)
    return Raise(tuple(changes + ([reserve] if reserve else [])), options)


def upstream_ports(ctx: Context, c: Constraint, goal: int, target: int) -> Raise:
    """A proxy's ports toward its upstream (analysis.limits.upstream): the kernel's
    range first, if the proxy takes its ports from it, then more source addresses in
    the proxy's own words (each brings a whole range toward every upstream address),
    or keep-alive toward the upstream."""
    rows = c.details.get("servers", [])
    if not rows:
        return Raise()
    per_server = math.ceil(goal / len(rows)) + max(int(r["used"]) for r in rows)
    sources = max(len([s for s in rows[0]["sources"] if s != "kernel's choice"]), 1)
    own_range = any("own range" in r["how"] for r in rows)
    changes: list[Change] = []
    if not own_range:
        found = widest_needed(ctx, math.ceil(per_server / sources))
        low, high = found or (LOWEST, HIGHEST)
        if (low, high) != ctx.snap.net.port_range:
            now = "{} {}".format(*ctx.snap.net.port_range)
            why = f"{math.ceil(per_server / sources):,} ports per (source, upstream server)"
            changes.append(Change("upstream_ports", "net.ipv4.ip_local_port_range", now,
                                  f"{low} {high}", why))  # fmt: skip
            if (reserve := _reserve(ctx, low, high)) is not None:
                changes.append(reserve)
    per_source = max(1, int(rows[0]["allowed"]) // sources)
    count = math.ceil(per_server / per_source)
    text = (
        f"or keep the range: {count} source addresses toward each upstream server "
        f"({per_source:,} ports each): {_in_proxy_words(ctx, c, count)}"
    )
    dst = str(rows[0]["address"]).rpartition(":")[0].strip("[]")
    loopback = ipaddress.ip_address(dst).is_loopback if dst else False
    commands = tuple(
        f"ip addr add 127.0.0.{i}/32 dev lo" if loopback else f"ip addr add <address {i}>/32 dev lo"
        for i in range(3, count + 3)
    )
    option = Option("upstream_ports", "sources", count, count, text, commands)
    return Raise(tuple(changes), (option,))


def _in_proxy_words(ctx: Context, c: Constraint, sources: int) -> str:
    """The proxy's own lines for `sources` source addresses (its servers module)."""
    for s in ctx.snap.servers:
        if s.pid == c.details.get("pid"):
            for up in s.upstreams:
                if up.name == c.details.get("upstream"):
                    return raise_upstream(s, up, sources)
    return c.raise_

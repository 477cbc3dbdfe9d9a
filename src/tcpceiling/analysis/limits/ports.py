"""Ephemeral ports and TIME_WAIT (docs/limits.md §1-2).

For one (source IP, destination IP, destination port) the kernel can hand out
  (high - low + 1) - |reserved ∩ range| - |bind()-held ports in range| - |used|
ports (__inet_hash_connect, net/ipv4/inet_hashtables.c); the total is the sum over
distinct tuples. Listeners hold their port for every destination; a TIME_WAIT
holds its own 4-tuple unless tcp_tw_reuse lets connect() take it over.
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from tcpceiling.analysis.context import Context
from tcpceiling.analysis.model import Constraint
from tcpceiling.host.read import HostSnapshot, NetView

TIME_WAIT_SECONDS = 60  # TCP_TIMEWAIT_LEN, fixed (include/net/tcp.h)
WIDE_RANGE = "net.ipv4.ip_local_port_range='1024 65535'"
SYMPTOM = "connect(): EADDRNOTAVAIL (99); connect() slows ~100x past half the range"


def usable_ports(
    snap: HostSnapshot, port_range: tuple[int, int] | None = None
) -> tuple[int, int, int, int]:
    """(range size, reserved in range, bind-held in range, usable) for one tuple, in
    ip_local_port_range or in another `port_range` (what a wider range would give)."""
    return usable_in(snap.net, snap.sockets.listen_ports, port_range)


def usable_in(
    net: NetView, listen_ports: frozenset[int], port_range: tuple[int, int] | None = None
) -> tuple[int, int, int, int]:
    """usable_ports from a namespace's values and its listeners' ports."""
    low, high = port_range or net.port_range

    def inside(ports: frozenset[int]) -> int:
        return sum(1 for p in ports if low <= p <= high)

    reserved = inside(net.reserved_ports)
    held = inside(listen_ports - net.reserved_ports)
    size = high - low + 1
    return size, reserved, held, size - reserved - held


def tw_reusable(ctx: Context, dst: str) -> bool:
    """tcp_tw_reuse 1 (any address) or 2 (loopback only) lets connect() reuse TIME_WAIT."""
    return tw_reusable_at(ctx.snap.net.tw_reuse, dst)


def tw_reusable_at(mode: int, dst: str) -> bool:
    return mode == 1 or (mode == 2 and ipaddress.ip_address(dst).is_loopback)


def _client(ctx: Context) -> Constraint:
    size, reserved, held, usable = usable_ports(ctx.snap)
    per_tuple: list[dict[str, object]] = []
    left = used_total = 0
    for src, dst in ctx.tuples:
        used, tw = ctx.snap.sockets.used_toward(dst.host, dst.port, src)
        if tw_reusable(ctx, dst.host):
            used -= tw
        left += max(0, usable - used)
        used_total += used
        per_tuple.append(
            {
                "source": src or "kernel's choice",
                "destination": str(dst),
                "usable": usable,
                "used": used,
                "left": max(0, usable - used),
            }
        )
    low, high = ctx.snap.net.port_range
    capacity = usable * len(ctx.tuples)
    return Constraint(
        id="ports",
        capacity_unit="ports",
        capacity=capacity,
        in_use=used_total,
        per_connection=1,
        ceiling=left,
        symptom=SYMPTOM,
        raise_=ctx.sysctl(WIDE_RANGE) + "; add source IPs (--source-ip) or destination ports; "
        "bind() with IP_BIND_ADDRESS_NO_PORT",
        source=f"{ctx.proc('sys/net/ipv4/ip_local_port_range')} ({low}-{high}), "
        f"ip_local_reserved_ports, {ctx.snap.sockets.source}",
        note=f"{len(ctx.tuples)} (source, destination) tuple(s) x {usable} usable ports",
        details={
            "range": [low, high],
            "range_size": size,
            "reserved_in_range": reserved,
            "bind_held_in_range": held,
            "tuples": per_tuple,
        },
    )


def _server(ctx: Context) -> Constraint:
    low, high = ctx.snap.net.port_range
    clients = ctx.scenario.clients
    listens = max(1, len(ctx.scenario.listen))
    size = high - low + 1
    base = Constraint(
        id="ports",
        capacity_unit="ports",
        capacity=None,
        in_use=None,
        per_connection=1,
        ceiling=None,
        symptom="clients see EADDRNOTAVAIL",
        raise_="more client IPs or listen ports",
        source=ctx.proc("sys/net/ipv4/ip_local_port_range"),
    )
    if clients is None:
        return replace(
            base,
            note="clients bring their own ports: each client IP can open about "
            f"{size} per listen port; give --clients N to bound it",
        )
    cap = clients * listens * size
    return replace(
        base,
        capacity=cap,
        in_use=0,
        ceiling=cap,
        note=f"{clients} client IP(s) x {listens} listen port(s) x {size} ports "
        "(this host's range taken as the clients')",
    )


def _time_wait(ctx: Context) -> Constraint:
    """Churn: a closed connection keeps its port toward that tuple for 60 s."""
    buckets = ctx.snap.net.max_tw_buckets
    tw_now = ctx.snap.net.sockstat.tw
    base = Constraint(
        id="time_wait",
        capacity_unit="TIME_WAIT entries",
        capacity=buckets,
        in_use=tw_now,
        per_connection=1,
        ceiling=None,
        symptom="port stays busy 60 s after an active close (EADDRNOTAVAIL); past "
        "tcp_max_tw_buckets TIME_WAIT is skipped (TcpExtTCPTimeWaitOverflow)",
        raise_=f"{ctx.sysctl('net.ipv4.tcp_tw_reuse=1')} (needs TCP timestamps); let the "
        "server close first; avoid bind() before connect()",
        source=f"{ctx.proc('net/sockstat')} tw, {ctx.proc('sys/net/ipv4/tcp_max_tw_buckets')}",
        kind="rate",
        unit="connections closed per second",
    )
    if ctx.scenario.role == "server" or not ctx.tuples:
        return replace(base, note="TIME_WAIT on the server side takes no port from anyone")
    reusable = all(tw_reusable(ctx, d.host) for _, d in ctx.tuples)
    if reusable:
        return replace(
            base,
            note=f"tcp_tw_reuse={ctx.snap.net.tw_reuse} lets connect() reuse "
            "TIME_WAIT after tcp_tw_reuse_delay (1 s): churn is not port-bound",
        )
    usable = usable_ports(ctx.snap)[3] * len(ctx.tuples)
    rate = round(usable / TIME_WAIT_SECONDS, 3)
    churn = ctx.scenario.churn_per_s
    warn = f"; --churn {churn:g}/s exceeds it" if churn > rate else ""
    return replace(
        base,
        ceiling=rate,
        note=f"{usable} ports / {TIME_WAIT_SECONDS} s TIME_WAIT{warn}",
        details={"per_second": round(usable / TIME_WAIT_SECONDS, 3)},  # unrounded
    )


def evaluate(ctx: Context) -> list[Constraint]:
    main = _client(ctx) if ctx.scenario.role == "client" else _server(ctx)
    return [main, _time_wait(ctx)]

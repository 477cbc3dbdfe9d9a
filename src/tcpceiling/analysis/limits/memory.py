"""Memory: MemAvailable, the cgroup's memory limit, and tcp_mem (docs/limits.md §4-5).

Idle sockets cost slab memory only (≈3.8 KB each) and charge nothing to tcp_mem;
a socket holding data charges at least one page to tcp_mem, whose third value is
the hard limit in pages (ip-sysctl.rst, tcp(7); __sk_mem_raise_allocated).
"""

from __future__ import annotations

from dataclasses import replace

from tcpceiling.analysis import costs
from tcpceiling.analysis.context import Context
from tcpceiling.analysis.limits import fit
from tcpceiling.analysis.model import Constraint


def _at(ctx: Context, n: int) -> tuple[float, list[dict[str, object]]]:
    """Bytes per connection, and their breakdown, when n connections are held: the
    port buckets are shared among them (costs.PortPool), so fewer than one each."""
    cost = ctx.cost
    share = cost.bytes_for(n) / n if n > 0 else cost.total
    buckets = cost.bucket_share(n)
    rows = [
        {
            "item": i.name,
            "bytes": round(i.bytes, 1),
            "count": round(buckets, 3) if i.name == costs.PORT_BUCKETS else i.count,
            "source": i.source,
        }
        for i in cost.items
    ]
    return share, rows


def _kernel_share(ctx: Context, per: float) -> float:
    """The kernel part of `per`: all but the app bytes (ConnectionCost.kernel_bytes)."""
    return per - (ctx.cost.total - ctx.cost.kernel_bytes)


def memory(ctx: Context) -> Constraint:
    mem = ctx.snap.system.meminfo
    floor = ctx.scenario.memory_floor
    ceiling = ctx.cost.fit(mem.mem_available - floor)
    per, rows = _at(ctx, ceiling)
    return Constraint(
        id="memory",
        capacity_unit="bytes",
        capacity=mem.mem_available,
        in_use=mem.mem_total - mem.mem_available,
        per_connection=round(per, 1),
        ceiling=ceiling,
        symptom="OOM killer; socket(): ENFILE 'no more sockets' when slab allocation fails",
        raise_="add RAM; keep connections idle (data in flight costs pages); smaller buffers "
        "(tcp_rmem/tcp_wmem max)",
        source=f"{ctx.proc('meminfo')} MemAvailable; per-connection cost from slab geometry",
        note=f"(MemAvailable - floor {floor}) / {per:.0f} B per connection"
        if floor
        else f"MemAvailable / {per:.0f} B per connection",
        details={
            "per_connection_breakdown": rows,
            "kernel_bytes_per_connection": round(_kernel_share(ctx, per), 1),
        },
    )


#: The guard's floor in a memory cgroup: other processes live there too.
CGROUP_FLOOR_MIN = 32 << 20
CGROUP_FLOOR_SHARE = 10  # percent of the limit


def cgroup_floor(limit: int, given: int | None) -> int:
    """Bytes a memory cgroup keeps free: `given`, or max(32 MiB, 10 % of the limit)."""
    if given is not None:
        return given
    return max(CGROUP_FLOOR_MIN, limit * CGROUP_FLOOR_SHARE // 100)


def _ends(ctx: Context) -> tuple[int, int]:
    """(connecting, accepting) ends of one connection in this cgroup."""
    client, local = ctx.scenario.role == "client", ctx.peer_local
    return int(client or local), int(not client or local)


def charged_cost(ctx: Context) -> costs.ConnectionCost:
    """What one connection charges to the memory cgroup: the host's cost less what
    the kernel allocates with no memcg to charge. A client's port buckets come from
    GFP_ATOMIC allocations of an unaccounted cache (inet_bind_bucket_create); an
    accepted socket's struct sock is made in softirq and charged only where
    cgroups.sockets_charged() says so."""
    connecting, accepting = _ends(ctx)
    ipv6 = any(":" in e.host for e in (*ctx.scenario.connect, *ctx.scenario.listen))
    proto = "TCPv6" if ipv6 else "TCP"
    sock, src = costs.slab_bytes(ctx.snap.system.slabs, proto)
    items = []
    for item in ctx.cost.items:
        if item.name == costs.PORT_BUCKETS:
            continue
        if item.name == costs.IDLE_SOCKET and accepting and not ctx.snap.cgroup.sockets_charged:
            items.append(replace(item, count=connecting))
            items.append(
                costs.CostItem(
                    "accepted socket (struct sock uncharged)",
                    item.bytes - sock,
                    accepting,
                    f"idle socket less {proto} ({src}): made in softirq, charged to no cgroup",
                )
            )
            continue
        items.append(item)
    return costs.ConnectionCost(tuple(i for i in items if i.count), None)


def cgroup_memory(ctx: Context) -> Constraint:
    cg = ctx.snap.cgroup
    cost = charged_cost(ctx)
    base = Constraint(
        id="cgroup_memory",
        capacity_unit="bytes",
        capacity=cg.memory_limit,
        in_use=cg.memory_usage,
        per_connection=round(cost.total, 1),
        ceiling=None,
        symptom="memcg OOM kill (of this process or another in the cgroup); socket "
        "buffers suppressed like tcp_mem",
        raise_=(
            "echo BYTES > memory.max (v2) / memory.limit_in_bytes (v1) of "
            f"{cg.memory_path or 'the cgroup'}; docker --memory, systemd MemoryMax="
        ),
        source=f"cgroup v{cg.version} memory {cg.memory_path}" if cg.version else "no cgroup",
        details={"version": cg.version, "path": cg.memory_path},
    )
    if cg.memory_limit is None:
        return replace(base, note="no memory limit on this cgroup or its ancestors")
    used = max(0, (cg.memory_usage or 0) - cg.memory_reclaimable)
    floor = cgroup_floor(cg.memory_limit, ctx.scenario.cgroup_floor)
    ceiling = cost.fit(cg.memory_limit - used - floor)
    ends = "both ends" if ctx.peer_local else "one end"
    less = f" - floor {floor}" if floor else ""
    return replace(
        base,
        in_use=used,
        ceiling=ceiling,
        note=f"(limit - working set{less}) / {cost.total:.0f} B charged per connection ({ends})",
        details=base.details
        | {
            "working_set": used,
            "reclaimable": cg.memory_reclaimable,
            "floor": floor,
            "sockets_charged": cg.sockets_charged,
            "charged_breakdown": [
                {"item": i.name, "bytes": round(i.bytes, 1), "count": i.count, "source": i.source}
                for i in cost.items
            ],
        },
    )


def _tcp_mem_unseen(ctx: Context) -> Constraint:
    """tcp_mem is global and /proc/sys/net shows it in the initial namespace only."""
    return Constraint(
        id="tcp_mem",
        capacity_unit="pages",
        capacity=None,
        in_use=ctx.snap.net.sockstat.mem_pages,
        per_connection=None,
        ceiling=None,
        unit="pages",
        symptom="above high sends block, receives drop (TCPRcvQDrop)",
        raise_="sysctl -w net.ipv4.tcp_mem='LOW PRESSURE HIGH' on the host (global, pages)",
        source=ctx.proc("sys/net/ipv4/tcp_mem"),
        note="not visible from this network namespace (a global sysctl): read it on the host",
    )


def tcp_mem(ctx: Context) -> Constraint:
    if not ctx.snap.system.tcp_mem:
        return _tcp_mem_unseen(ctx)
    high = ctx.snap.system.tcp_mem[2]
    used = ctx.snap.net.sockstat.mem_pages
    nbytes = ctx.scenario.buffered_bytes
    doubled = " ".join(str(v * 2) for v in ctx.snap.system.tcp_mem)
    base = Constraint(
        id="tcp_mem",
        capacity_unit="pages",
        capacity=high,
        in_use=used,
        per_connection=0,
        ceiling=None,
        unit="pages",
        symptom="above pressure buffers shrink (TCPMemoryPressures); above high sends block, "
        "receives drop (TCPRcvQDrop), orphans reset 'out of memory -- consider tuning tcp_mem'",
        raise_=f"sysctl -w net.ipv4.tcp_mem='{doubled}' (global, pages)",
        source=f"{ctx.proc('sys/net/ipv4/tcp_mem')} [2], {ctx.proc('net/sockstat')} mem",
    )
    if nbytes <= 0:
        return replace(base, note="idle sockets charge nothing to tcp_mem (give --buffered-bytes)")
    pages = costs.buffered(nbytes).bytes / costs.PAGE
    return replace(
        base,
        per_connection=pages,
        ceiling=fit(high, used, pages),
        note=f"{pages:.0f} page(s) per connection with {nbytes} B queued",
    )


def evaluate(ctx: Context) -> list[Constraint]:
    return [memory(ctx), cgroup_memory(ctx), tcp_mem(ctx)]

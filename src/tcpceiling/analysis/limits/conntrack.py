"""nf_conntrack: one entry per connection, but only when tracking is active
(a rule or NAT registered the hooks in the namespace; docs/limits.md §8).
Past nf_conntrack_max new SYNs are dropped ("nf_conntrack: table full")."""

from __future__ import annotations

from dataclasses import replace

from tcpceiling.analysis.context import Context
from tcpceiling.analysis.limits import fit
from tcpceiling.analysis.model import Constraint


def conntrack(ctx: Context) -> Constraint:
    net = ctx.snap.net
    base = Constraint(
        id="conntrack",
        capacity_unit="entries",
        capacity=net.conntrack_max,
        in_use=net.conntrack_count,
        per_connection=1,
        ceiling=None,
        symptom="SYNs dropped (client timeouts); dmesg 'nf_conntrack: table full, "
        "dropping packet'; /proc/net/stat/nf_conntrack drop",
        raise_="sysctl -w net.netfilter.nf_conntrack_max=N (global) and nf_conntrack_buckets; "
        "or NOTRACK the traffic (nft 'notrack')",
        source=ctx.proc("sys/net/netfilter/nf_conntrack_max"),
    )
    if net.conntrack_max is None:
        return replace(base, note="nf_conntrack not loaded")
    if not net.conntrack_count:
        return replace(base, note="no tracked connections: hooks inactive in this namespace")
    return replace(
        base,
        ceiling=fit(net.conntrack_max, net.conntrack_count, 1),
        note="tracking is active (entries present)",
    )


def evaluate(ctx: Context) -> list[Constraint]:
    return [conntrack(ctx)]

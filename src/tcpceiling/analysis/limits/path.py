"""Limits a box on the path keeps per connection (host.nat): the source-NAT ports
toward each destination, and a firewall's connection cap (nftables `ct count over N`).

snat_ports: per destination, the rule's ports per NAT address times its NAT
addresses, less the NATed flows already toward that destination (the namespace's
conntrack table). Past it the NAT finds no free tuple: the flow's conntrack entry
is not inserted (/proc/net/stat/nf_conntrack insert_failed) and the SYN is dropped;
the client retransmits and times out. Applies to a `nat` scenario (traffic this
host forwards) and to a client whose own traffic this namespace masquerades.

firewall: a `ct count over N` rule on the scenario's port caps the connections it
lets through at N (per source address when it sits in a meter or set keyed by the
source: N times the scenario's --clients).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tcpceiling.analysis.context import Context
from tcpceiling.analysis.model import Constraint, Endpoint
from tcpceiling.host.nat import nat_address_for
from tcpceiling.host.rules import (
    DEFAULT_NAT_PORTS,
    SOURCE,
    ConnCap,
    NatRule,
    Ruleset,
    Syntax,
    addresses_words,
    range_words,
)


def _destinations(ctx: Context) -> tuple[Endpoint, ...]:
    s = ctx.scenario
    return s.listen if s.role == "server" else s.connect


def snat_ports(ctx: Context, rules: Ruleset) -> Constraint | None:
    if ctx.scenario.role == "server":
        return None
    rows: list[dict[str, Any]] = []
    for d in ctx.scenario.connect:
        rule = rules.nat_for(d.host, d.port, src=_source_toward(ctx, d))
        if rule is None:
            continue
        addresses = _addresses_used(rule, ctx.scenario.sources, d.host)
        capacity = rule.ports_per_address * addresses
        used = ctx.snap.path.in_use_toward(d.host, d.port)
        rows.append(
            {
                "destination": str(d),
                "rule": rule.text,
                "syntax": rule.syntax,
                "ports_per_address": rule.ports_per_address,
                "addresses": addresses,
                "rule_addresses": rule.address_count,
                "capacity": capacity,
                "in_use": used,
                "ceiling": max(0, capacity - used),
            }
        )
    if not rows:
        return None
    capacity = sum(r["capacity"] for r in rows)
    used = sum(r["in_use"] for r in rows)
    syntax: Syntax = rows[0]["syntax"]
    return Constraint(
        id="snat_ports",
        capacity=capacity,
        in_use=used,
        per_connection=1,
        ceiling=sum(r["ceiling"] for r in rows),
        symptom="connect timeouts (SYNs dropped at the NAT); its conntrack stats count "
        "insert_failed and drop",
        raise_="a wider port range in the NAT rule "
        f"(`{range_words(syntax, DEFAULT_NAT_PORTS)}`) or more NAT addresses "
        f"(`{addresses_words(syntax)}`); or fewer flows per destination "
        "(connection reuse, more destination addresses or ports)",
        source=f"{SOURCE[syntax]}; {ctx.proc('net/nf_conntrack')}",
        capacity_unit="NAT tuples",
        note=_note(rows[0], bool(ctx.scenario.sources)),
        details={"destinations": rows},
    )


def _source_toward(ctx: Context, d: Endpoint) -> str | None:
    """The flows' source address toward d, when known: the clients behind a NAT
    (--source-ip), or this client's own; a rule that matches other sources only
    (Docker's `-s 172.17.0.0/16`) does not apply to them."""
    if ctx.scenario.role == "nat":
        return ctx.scenario.sources[0] if ctx.scenario.sources else None
    return next((src for src, dst in ctx.tuples if dst == d and src), None)


def _note(row: dict[str, Any], sources: bool) -> str:
    note = (
        f"{row['rule']}: {row['ports_per_address']:,} ports x {row['addresses']} NAT "
        f"address(es) toward {row['destination']}"
    )
    if row["rule_addresses"] > 1 and not sources:
        note += (
            "; an upper bound: the kernel gives all flows of one client address to one "
            "destination one NAT address (find_best_ips_proto): --source-ip the clients "
            "for the exact count"
        )
    return note


def _addresses_used(rule: NatRule, sources: tuple[str, ...], dst: str) -> int:
    """NAT addresses the flows toward dst can use: every one of the rule's when the
    clients are unknown (an upper bound), else those the clients' sources hash to
    (host.nat.nat_address_for: one address per source and destination)."""
    if not sources or rule.address_count < 2:
        return rule.address_count
    return len({nat_address_for(rule, src, dst) for src in sources})


def _cap_capacity(cap: ConnCap, clients: int | None) -> int:
    return cap.limit * (clients or 1) if cap.per_source else cap.limit


def firewall(ctx: Context, rules: Ruleset) -> Constraint | None:
    caps = [(d, c) for d in _destinations(ctx) for c in rules.caps_for(d.port, d.host)]
    if not caps:
        return None
    dest, cap = min(caps, key=lambda dc: _cap_capacity(dc[1], ctx.scenario.clients))
    capacity = _cap_capacity(cap, ctx.scenario.clients)
    note = f"{cap.text} on {dest}"
    if cap.per_source and ctx.scenario.clients is None:
        note += "; per client address: give --clients N for the total"
    return Constraint(
        id="firewall",
        capacity=capacity,
        in_use=None,
        per_connection=1,
        ceiling=capacity,
        symptom="past it the rule's verdict: "
        + ("a reset at connect (ECONNREFUSED)" if "reset" in cap.verdict else cap.verdict),
        raise_=f"raise the rule's count: {cap.raised(capacity + 1)}",
        source=SOURCE[cap.syntax],
        capacity_unit="connections (ct count)"
        if cap.syntax == "nft"
        else "connections (connlimit)",
        note=note,
        details={
            "rule": cap.text,
            "destination": str(dest),
            "per_source": cap.per_source,
            "syntax": cap.syntax,
        },
    )


def evaluate(ctx: Context) -> list[Constraint]:
    rules = ctx.snap.path.ruleset
    if rules is None:
        return []
    found = [snat_ports(ctx, rules), firewall(ctx, rules)]
    out = [c for c in found if c is not None]
    if ctx.snap.path.nat_in_use is None and any(c.id == "snat_ports" for c in out):
        out = [
            replace(c, note=c.note + "; conntrack not readable: flows in use not counted")
            if c.id == "snat_ports"
            else c
            for c in out
        ]
    return out

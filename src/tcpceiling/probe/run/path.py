"""Evidence read where a box on the path keeps its state (`probe --path-netns NS`):
its conntrack statistics, NAT rules, connection caps and NATed flows (host.nat).
`attribute()` is pure: a stop the client saw as timeouts or refusals, told by that
evidence whether the NAT ran out of ports or a firewall cap refused."""

from __future__ import annotations

from dataclasses import dataclass, field

from tcpceiling.analysis.model import Endpoint
from tcpceiling.host import nat
from tcpceiling.host import netns as netns_mod
from tcpceiling.host.read import read_net_counters
from tcpceiling.host.roots import Roots
from tcpceiling.host.rules import NatRule
from tcpceiling.probe.run.result import Stop

CONNTRACK_KEYS = ("insert_failed", "drop", "early_drop", "clash_resolve")


@dataclass(frozen=True)
class PathSample:
    netns: str
    counters: dict[str, int] = field(default_factory=dict)  # conntrack stat totals
    view: nat.PathView = field(default_factory=nat.PathView)


def sample(netns: str, roots: Roots | None = None) -> PathSample:
    roots = roots or Roots()
    with netns_mod.inside(netns):
        _netstat, conntrack = read_net_counters(roots)
    counters = {k: conntrack.get(k, 0) for k in CONNTRACK_KEYS}
    return PathSample(netns, counters, nat.read_path(roots, netns))


def attribute(
    kind: str, before: PathSample, after: PathSample, endpoints: tuple[Endpoint, ...]
) -> Stop | None:
    """snat_ports when connects timed out toward a NATed destination whose ports are
    all in use or whose conntrack refused inserts; firewall when connects were
    refused or timed out at a port a connection cap guards. None: the path is clear."""
    rules = after.view.ruleset
    if rules is None:
        return None
    d = {k: v - before.counters.get(k, 0) for k, v in after.counters.items()}
    for e in endpoints:
        rule = rules.nat_for(e.host, e.port)
        if rule is not None and kind in ("timeout", "silent"):
            stop = _snat(rule, e, after, d)
            if stop is not None:
                return stop
        caps = rules.caps_for(e.port, e.host)
        if caps and kind in ("refused", "reset", "timeout"):
            cap = min(caps, key=lambda c: c.limit)
            return Stop(
                "firewall",
                side="path",
                detail=f"a firewall in namespace {after.netns} caps connections to {e}: {cap.text}",
                evidence={"netns": after.netns, "rule": cap.text, "conntrack": d},
            )
    return None


def _snat(rule: NatRule, e: Endpoint, after: PathSample, d: dict[str, int]) -> Stop | None:
    capacity = rule.ports_per_address * rule.address_count
    used = after.view.in_use_toward(e.host, e.port)
    if used < capacity and not d.get("insert_failed") and not d.get("drop"):
        return None
    return Stop(
        "snat_ports",
        side="path",
        detail=f"the NAT in namespace {after.netns} has {capacity:,} tuples toward {e} "
        f"({rule.text}) and {used:,} flows use them; conntrack insert_failed "
        f"+{d.get('insert_failed', 0)}, drop +{d.get('drop', 0)}: new flows find no free "
        "port, their SYNs are dropped",
        evidence={
            "netns": after.netns,
            "rule": rule.text,
            "capacity": capacity,
            "in_use": used,
            "conntrack": d,
        },
    )

"""What a box on the path keeps per connection: its NAT rules, its firewall's
connection caps, and the conntrack flows that use them.

The rules come from `nft -j list ruleset` (libnftables' JSON, nft(8) and
libnftables-json(5); iptables-nft rules are nftables rules too), read in the
namespace analysed; with a fixture root, from NFT_FIXTURE beside its proc tree; then
legacy iptables' (tcpceiling.host.iptables). The
flows come from /proc/thread-self/net/nf_conntrack of the namespace (one line per flow, its
original and reply tuples; net/netfilter/nf_conntrack_standalone.c).

How many flows one NAT rule can carry toward one destination: SNAT rewrites the
source (address, port) so that the reply tuple (destination ip, destination port,
NAT address, NAT port) is unique (nf_nat_core.c, get_unique_tuple and
nf_nat_l4proto_unique_tuple). So per (NAT address, destination ip, destination
port) there are as many flows as ports in the rule's range: `to :A-B` gives B-A+1;
no range keeps the client's own port when it is free and otherwise searches
1024-65535 (64,512) for a client port of 1024 or more. More NAT addresses
(`snat to A-B`) multiply it. Measured: docs/limits.md §9.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass
from typing import Any

from tcpceiling.errors import ParseError
from tcpceiling.host import iptables
from tcpceiling.host import netns as netns_mod
from tcpceiling.host.roots import Roots
from tcpceiling.host.rules import (
    ConnCap,
    Found,
    Match,
    NatRule,
    Ruleset,
    collect,
    expand_addresses,
)

NFT_FIXTURE = "nft.json"
# -- which NAT address a flow gets ------------------------------------------------------


U32 = 0xFFFFFFFF


def _rol32(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & U32


def _mix(a: int, b: int, c: int) -> tuple[int, int, int]:
    """__jhash_mix, include/linux/jhash.h: six steps `x -= z; x ^= rol32(z, r); z += y`,
    the roles turning (a, b, c) -> (b, c, a) -> (c, a, b)."""
    v = [a, b, c]
    for i, r in enumerate((4, 6, 8, 16, 19, 4)):
        x, y, z = i % 3, (i + 1) % 3, (i + 2) % 3
        v[x] = ((v[x] - v[z]) & U32) ^ _rol32(v[z], r)
        v[z] = (v[z] + v[y]) & U32
    return v[0], v[1], v[2]


def _final(a: int, b: int, c: int) -> int:
    """__jhash_final, include/linux/jhash.h: seven steps `x ^= y; x -= rol32(y, r)`
    for x = c, a, b, c, a, b, c (y the one before); returns c."""
    v = [a, b, c]
    for i, r in enumerate((14, 11, 25, 16, 4, 14, 24)):
        x = (2 + i) % 3
        y = (x + 2) % 3
        v[x] = ((v[x] ^ v[y]) - _rol32(v[y], r)) & U32
    return v[2]


def jhash2(words: tuple[int, ...], initval: int) -> int:
    """jhash2(), include/linux/jhash.h (Bob Jenkins' lookup3 over u32 words)."""
    a = b = c = (0xDEADBEEF + (len(words) << 2) + initval) & 0xFFFFFFFF
    k, n = list(words), len(words)
    while n > 3:
        a, b, c = (a + k[0]) & 0xFFFFFFFF, (b + k[1]) & 0xFFFFFFFF, (c + k[2]) & 0xFFFFFFFF
        a, b, c = _mix(a, b, c)
        k, n = k[3:], n - 3
    if n == 0:
        return c
    c = (c + (k[2] if n == 3 else 0)) & 0xFFFFFFFF
    b = (b + (k[1] if n >= 2 else 0)) & 0xFFFFFFFF
    a = (a + k[0]) & 0xFFFFFFFF
    return _final(a, b, c)


def _raw_u32(addr: str) -> int:
    """An IPv4 address as the kernel's __be32 read as a u32 on a little-endian CPU."""
    return int.from_bytes(ipaddress.IPv4Address(addr).packed, "little")


def nat_address_for(rule: NatRule, src: str, dst: str, zone: int = 0) -> str | None:
    """The NAT address a flow from src to dst gets from a rule with several: the
    kernel hashes the source (and, unless `persistent`, the destination) to pick one,
    so every flow of one (source, destination) uses one address's ports
    (find_best_ips_proto, net/netfilter/nf_nat_core.c; x86, IPv4, conntrack zone
    `zone`). None when the rule has one address or none (masquerade)."""
    if len(rule.addresses) < 2 or ":" in src or ":" in dst:
        return None
    persistent = "persistent" in rule.flags
    initval = 0 if persistent else _raw_u32(dst) ^ zone
    j = jhash2((_raw_u32(src), 0, 0, 0), initval)
    low = int(ipaddress.IPv4Address(rule.addresses[0]))
    dist = int(ipaddress.IPv4Address(rule.addresses[-1])) - low + 1
    return str(ipaddress.IPv4Address(low + ((j * dist) >> 32)))


# -- parsing nft -j ----------------------------------------------------------------------


def parse_ruleset(text: str) -> Ruleset:
    """`nft -j list ruleset` -> the NAT rules of postrouting chains, in order, and
    every `ct count over N` rule."""
    try:
        items = json.loads(text)["nftables"]
        if not isinstance(items, list):
            raise TypeError("nftables is not a list")
    except (ValueError, KeyError, TypeError) as exc:
        raise ParseError(f"nft -j: not a ruleset: {exc}") from exc
    hooks = {
        (c["family"], c["table"], c["name"]): c.get("hook")
        for c in (i["chain"] for i in items if "chain" in i)
    }
    return collect(_rule(r, hooks) for r in (i["rule"] for i in items if "rule" in i))


def _rule(rule: dict[str, Any], hooks: dict[tuple[str, str, str], str | None]) -> Found:
    """One nft rule: a NAT rule when its chain hooks postrouting, and/or a cap."""
    hook = hooks.get((rule["family"], rule["table"], rule["chain"]))
    where = (
        f"table {rule['family']} {rule['table']} chain {rule['chain']} handle {rule.get('handle')}"
    )
    exprs: list[dict[str, Any]] = rule.get("expr", [])
    match = _match(exprs)
    return (_nat(exprs, match, where) if hook == "postrouting" else None,
            _cap(exprs, match, where))  # fmt: skip


def _match(exprs: list[dict[str, Any]]) -> Match:
    fields: dict[str, Any] = {}
    for e in exprs:
        m = e.get("match")
        if not m or m.get("op", "==") not in ("==", "in"):
            continue
        left, right = m.get("left", {}), m.get("right")
        if "meta" in left:
            fields[left["meta"].get("key", "")] = right
        elif "payload" in left:
            payload = left["payload"]
            fields[payload.get("field", "")] = right
            if payload.get("field") in ("sport", "dport"):
                fields.setdefault("l4proto", payload.get("protocol"))
    proto = fields.get("l4proto", fields.get("protocol"))
    dport = fields.get("dport")
    return Match(
        oifname=fields.get("oifname") if isinstance(fields.get("oifname"), str) else None,
        daddr=_prefix(fields.get("daddr")),
        dport=dport if isinstance(dport, int) else None,
        tcp=proto in (None, "tcp", 6),
        saddr=_prefix(fields.get("saddr")),
    )


def _prefix(value: Any) -> str | None:
    """An address match's right side: an address, or {"prefix": {addr, len}}."""
    if isinstance(value, dict) and "prefix" in value:
        return f"{value['prefix']['addr']}/{value['prefix']['len']}"
    return value if isinstance(value, str) else None


def _flags(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def _ports(value: Any) -> tuple[int, int] | None:
    if isinstance(value, int):
        return value, value
    if isinstance(value, dict) and "range" in value:
        low, high = value["range"]
        return int(low), int(high)
    return None


def _nat(exprs: list[dict[str, Any]], match: Match, where: str) -> NatRule | None:
    for e in exprs:
        for kind in ("masquerade", "snat"):
            if kind in e:
                body = e[kind] or {}
                return NatRule(
                    kind=kind,
                    match=match,
                    addresses=expand_addresses(body.get("addr")) if kind == "snat" else (),
                    ports=_ports(body.get("port")),
                    flags=_flags(body.get("flags")),
                    where=where,
                )
    return None


def _cap(exprs: list[dict[str, Any]], match: Match, where: str) -> ConnCap | None:
    count = next((e["ct count"] for e in exprs if "ct count" in e), None)
    per_source = False
    if count is None:  # inside a meter / set update: `... { ip saddr ct count over N }`
        for e in exprs:
            for key in ("meter", "set"):
                stmt = (e.get(key) or {}).get("stmt", [])
                inner = [s["ct count"] for s in stmt if isinstance(s, dict) and "ct count" in s]
                if inner:
                    count, per_source = inner[0], True
    if not isinstance(count, dict) or not count.get("inv"):
        return None
    verdict = "accept"
    for e in exprs:
        if "reject" in e:
            kind = (e["reject"] or {}).get("type", "")
            verdict = f"reject with {kind}" if kind else "reject"
        elif "drop" in e:
            verdict = "drop"
    return ConnCap(int(count["val"]), match, verdict, per_source, where)


# -- conntrack flows -------------------------------------------------------------------------


#: One TCP flow of /proc/net/nf_conntrack (nf_conntrack_standalone.c, ct_seq_show):
#: `ipv4 2 tcp 6 TIMEOUT STATE` then the original tuple `src= dst= sport= dport=`,
#: what the kernel may print between the two tuples (`packets= bytes=` with
#: nf_conntrack_acct, `[UNREPLIED]`), and the reply tuple. Groups: state, source,
#: destination, destination port, reply destination (the NAT's address when the flow
#: is source-NATed). One C-level pass: 1,000,000 lines in about 1.5 s, where a split
#: per line and a dict per flow took 7 s (benchmarks/path_readers.py).
FLOW = re.compile(
    r"^ipv[46]\s+\d+\s+tcp\s+\d+\s+\d+\s+(\S+)"
    r"\s+src=(\S+)\s+dst=(\S+)\s+sport=\d+\s+dport=(\d+)"
    r"(?:\s+(?!src=)\S+)*?"
    r"\s+src=\S+\s+dst=(\S+)\s+sport=\d+\s+dport=\d+",
    re.MULTILINE,
)
#: States nf_conncount no longer counts (net/netfilter/nf_conncount.c, already_closed)
CLOSED = frozenset({"TIME_WAIT", "CLOSE"})


@dataclass(frozen=True)
class FlowCounts:
    """The tracked TCP flows of a namespace, counted as the path limits need them."""

    total: int
    #: source-NATed flows per (NAT address, destination ip, destination port): the
    #: reply goes to an address the flow did not come from
    nat: dict[tuple[str, str, int], int]
    #: live flows per destination port (not TIME_WAIT or CLOSE): what a `ct count`
    #: or connlimit cap on that port sees
    live_by_port: dict[int, int]


def count_flows(text: str) -> FlowCounts:
    """/proc/net/nf_conntrack text -> its TCP flows counted (other protocols left out)."""
    rows = FLOW.findall(text)
    nat = Counter((reply, dst, port) for _st, src, dst, port, reply in rows if reply != src)
    live = Counter(port for state, _s, _d, port, _r in rows if state not in CLOSED)
    return FlowCounts(
        len(rows),
        {(a, h, int(p)): n for (a, h, p), n in nat.items()},
        {int(p): n for p, n in live.items()},
    )


@dataclass(frozen=True)
class PathView:
    """The NAT and firewall state of one namespace (None: no rules could be read)."""

    ruleset: Ruleset | None = None
    nat_in_use: dict[tuple[str, str, int], int] | None = None  # FlowCounts.nat
    #: live flows per destination port (not TIME_WAIT or CLOSE, which nf_conncount
    #: no longer counts): what a `ct count` cap on that port sees
    live_by_port: dict[int, int] | None = None

    def in_use_toward(self, host: str, port: int) -> int:
        """NATed flows toward host:port, over every NAT address."""
        return sum(n for (_a, h, p), n in (self.nat_in_use or {}).items() if (h, p) == (host, port))


@dataclass(frozen=True)
class NatUse:
    """The NATed flows toward one destination against the rule's tuples for it."""

    dst: str
    dport: int
    used: int
    capacity: int
    rule: str


def nat_uses(view: PathView) -> tuple[NatUse, ...]:
    """One row per destination with NATed flows that a NAT rule covers."""
    if view.ruleset is None or not view.nat_in_use:
        return ()
    toward: Counter[tuple[str, int]] = Counter()
    for (_addr, host, port), n in view.nat_in_use.items():
        toward[(host, port)] += n
    out = []
    for (host, port), used in toward.items():
        rule = view.ruleset.nat_for(host, port)
        if rule is not None:
            capacity = rule.ports_per_address * rule.address_count
            out.append(NatUse(host, port, used, capacity, rule.text))
    return tuple(sorted(out, key=lambda u: u.used / u.capacity, reverse=True))


def read_ruleset(roots: Roots, netns: str | None) -> Ruleset | None:
    """The namespace's rules: nftables', then legacy iptables' (both hooks run, so
    both count); None when neither can be read."""
    nft, legacy = read_nft(roots, netns), iptables.read_legacy(roots, netns)
    if nft is None or legacy is None:
        return nft or legacy
    return nft + legacy


def read_nft(roots: Roots, netns: str | None) -> Ruleset | None:
    """The namespace's nftables ruleset; None when nft is not installed (or no fixture)."""
    if not roots.live:
        path = roots.procfs.parent / NFT_FIXTURE
        return parse_ruleset(path.read_text()) if path.exists() else None
    nft = shutil.which("nft")
    if nft is None:
        return None
    with netns_mod.inside(netns):
        out = subprocess.run([nft, "-j", "list", "ruleset"], capture_output=True, text=True)
    if out.returncode != 0:
        return None
    return parse_ruleset(out.stdout or '{"nftables": []}')


def read_flows(roots: Roots, netns: str | None) -> FlowCounts | None:
    """The namespace's tracked TCP flows, counted; None when conntrack is not loaded
    there."""
    path = roots.procfs / "thread-self" / "net" / "nf_conntrack"
    if not roots.live:
        path = roots.procfs / "net" / "nf_conntrack"
    with netns_mod.inside(netns):
        try:
            text = path.read_text()
        except OSError:
            return None
    return count_flows(text)


def read_path(roots: Roots, netns: str | None) -> PathView:
    """The rules, and the NATed flows when there is a NAT rule to count them for."""
    ruleset = read_ruleset(roots, netns)
    if ruleset is None or not (ruleset.nat or ruleset.caps):
        return PathView(ruleset)
    flows = read_flows(roots, netns)
    if flows is None:
        return PathView(ruleset)
    return PathView(ruleset, flows.nat, flows.live_by_port)


@dataclass(frozen=True)
class CapUse:
    """A `ct count over N` cap on a port against the live flows to that port."""

    dport: int
    used: int
    capacity: int
    rule: str


def cap_uses(view: PathView) -> tuple[CapUse, ...]:
    """One row per global (not per-source) connection cap on a destination port."""
    if view.ruleset is None or view.live_by_port is None:
        return ()
    return tuple(
        CapUse(c.match.dport, view.live_by_port.get(c.match.dport, 0), c.limit, c.text)
        for c in view.ruleset.caps
        if c.match.dport is not None and not c.per_source
    )

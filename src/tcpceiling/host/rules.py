"""What a box on the path does to a connection, whatever its firewall is written in:
source-NAT rules (how many flows one can carry toward a destination) and connection
caps. The nftables reader (tcpceiling.host.nat) and the legacy iptables reader
(tcpceiling.host.iptables) both give these."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from tcpceiling.errors import ParseError

NatKind = Literal["masquerade", "snat"]
#: The language a rule is written in: nftables, or legacy iptables (x_tables)
Syntax = Literal["nft", "iptables"]
#: Where each syntax's rules are read (a constraint's source)
SOURCE: dict[Syntax, str] = {"nft": "nft -j list ruleset", "iptables": "iptables-legacy-save"}
LOWEST_EPHEMERAL, HIGHEST_PORT = 1024, 65535
#: The search range for a client port >= 1024, and the widest range a NAT rule can give
DEFAULT_NAT_PORTS = HIGHEST_PORT - LOWEST_EPHEMERAL + 1
#: How a rule's count is raised, in each syntax
REPLACE_HOW: dict[Syntax, str] = {
    "nft": "nft replace rule ... handle",
    "iptables": "iptables-legacy -R: the same rule with the new count",
}


def range_words(syntax: Syntax, ports: int) -> str:
    """A source-NAT rule with a range of `ports` ports, at the top of the port space,
    as written in `syntax` (random: against clashes between NATed flows)."""
    low = HIGHEST_PORT - ports + 1
    if syntax == "iptables":
        return f"-j MASQUERADE --to-ports {low}-{HIGHEST_PORT} --random-fully"
    return f"masquerade to :{low}-{HIGHEST_PORT} fully-random"


def addresses_words(syntax: Syntax) -> str:
    """A source-NAT rule over several NAT addresses A-B, each with every port."""
    if syntax == "iptables":
        return f"-j SNAT --to-source A-B:{LOWEST_EPHEMERAL}-{HIGHEST_PORT} --random-fully"
    return f"snat to A-B:{LOWEST_EPHEMERAL}-{HIGHEST_PORT} fully-random"


@dataclass(frozen=True)
class Match:
    """What a rule's matches select (None: anything)."""

    oifname: str | None = None
    daddr: str | None = None  # an address or a prefix
    dport: int | None = None
    tcp: bool = True  # l4proto tcp, or no protocol match at all
    saddr: str | None = None  # Docker's `-s 172.17.0.0/16`: only its containers' flows

    def covers(
        self, host: str, port: int, oifname: str | None = None, src: str | None = None
    ) -> bool:
        """Does a TCP flow to host:port (leaving by oifname, from src: each when known)
        match?"""
        if not self.tcp or (self.dport is not None and self.dport != port):
            return False
        if self.oifname is not None and oifname is not None and self.oifname != oifname:
            return False
        if src is not None and not within(src, self.saddr):
            return False
        return within(host, self.daddr)


def within(address: str, prefix: str | None) -> bool:
    """address in prefix (an address or a network); any address when prefix is None."""
    if prefix is None:
        return True
    try:
        return ipaddress.ip_address(address) in ipaddress.ip_network(prefix, strict=False)
    except ValueError:
        return False


@dataclass(frozen=True)
class NatRule:
    kind: NatKind
    match: Match
    addresses: tuple[str, ...]  # snat's; () for masquerade (the interface's address)
    ports: tuple[int, int] | None  # an explicit `to :A-B`
    flags: tuple[str, ...]
    where: str  # "table ip nat chain postrouting handle 4"
    syntax: Syntax = "nft"

    @property
    def ports_per_address(self) -> int:
        if self.ports is None:
            return DEFAULT_NAT_PORTS
        return self.ports[1] - self.ports[0] + 1

    @property
    def address_count(self) -> int:
        return max(1, len(self.addresses))

    @property
    def text(self) -> str:
        if self.syntax == "iptables":
            return f"{self._iptables_words()} ({self.where})"
        to = ""
        if self.addresses:
            to = " to " + (
                self.addresses[0]
                if len(self.addresses) == 1
                else f"{self.addresses[0]}-{self.addresses[-1]}"
            )
        if self.ports is not None:
            to += f"{' to ' if not to else ''}:{self.ports[0]}-{self.ports[1]}"
        flags = (" " + ",".join(self.flags)) if self.flags else ""
        return f"{self.kind}{to}{flags} ({self.where})"

    def _iptables_words(self) -> str:
        ports = f"{self.ports[0]}-{self.ports[1]}" if self.ports else ""
        if self.kind == "masquerade":
            words = "-j MASQUERADE" + (f" --to-ports {ports}" if ports else "")
        else:
            first, last = self.addresses[0], self.addresses[-1]
            to = first if first == last else f"{first}-{last}"
            words = f"-j SNAT --to-source {to}" + (f":{ports}" if ports else "")
        return words + "".join(f" --{f}" for f in self.flags)


@dataclass(frozen=True)
class ConnCap:
    """A firewall rule that caps connections: nftables `ct count over N`, or iptables
    `-m connlimit --connlimit-above N`."""

    limit: int
    match: Match
    verdict: str  # "reject with tcp reset", "drop"...
    per_source: bool  # inside a meter or set keyed by the source address
    where: str
    syntax: Syntax = "nft"

    @property
    def text(self) -> str:
        per = " per source address" if self.per_source else ""
        words = (f"ct count over {self.limit}" if self.syntax == "nft"
                 else f"-m connlimit --connlimit-above {self.limit}")  # fmt: skip
        return f"{words}{per} {self.verdict} ({self.where})"

    def raised(self, n: int) -> str:
        """How to let `n` through: the same rule with the larger count."""
        return f"{self.where}: a count of {n:,} or more ({REPLACE_HOW[self.syntax]})"


@dataclass(frozen=True)
class Ruleset:
    nat: tuple[NatRule, ...] = ()
    caps: tuple[ConnCap, ...] = ()

    def __add__(self, other: Ruleset) -> Ruleset:
        """Both rulesets' rules, this one's first (nftables, then legacy iptables)."""
        return Ruleset(self.nat + other.nat, self.caps + other.caps)

    def nat_for(
        self, host: str, port: int, oifname: str | None = None, src: str | None = None
    ) -> NatRule | None:
        """The first source-NAT rule a TCP flow to host:port (from src, when known)
        meets (postrouting rules are evaluated in order; the first NAT verdict wins)."""
        return next((r for r in self.nat if r.match.covers(host, port, oifname, src)), None)

    def caps_for(self, port: int, host: str | None = None) -> tuple[ConnCap, ...]:
        return tuple(
            c
            for c in self.caps
            if c.match.covers(host or "0.0.0.0", port) or (host is None and c.match.dport == port)
        )


def expand_addresses(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, dict) and "range" in value:
        low, high = (ipaddress.ip_address(a) for a in value["range"])
        if int(high) - int(low) > 65536:
            raise ParseError(f"nft: a NAT address range of {int(high) - int(low) + 1} addresses")
        return tuple(
            str(ipaddress.ip_address(int(low) + i)) for i in range(int(high) - int(low) + 1)
        )
    if isinstance(value, dict) and "prefix" in value:  # nft lists A-B as a prefix when it is one
        net = ipaddress.ip_network(f"{value['prefix']['addr']}/{value['prefix']['len']}", False)
        if net.num_addresses > 65536:
            raise ParseError(f"nft: a NAT address prefix of {net.num_addresses} addresses")
        return tuple(str(a) for a in net)
    if isinstance(value, dict) and "set" in value:
        return tuple(a for a in value["set"] if isinstance(a, str))
    return ()


#: What one rule of a ruleset is: a source-NAT rule, a connection cap, both or neither
Found = tuple["NatRule | None", "ConnCap | None"]


def collect(found: Iterable[Found]) -> Ruleset:
    """A ruleset from what each of its rules is, in the rules' order."""
    pairs = list(found)
    return Ruleset(
        tuple(n for n, _c in pairs if n is not None), tuple(c for _n, c in pairs if c is not None)
    )

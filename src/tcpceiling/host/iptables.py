"""The rules of legacy iptables (the x_tables kernel tables that nftables does not
see): NAT in the nat table's POSTROUTING chain and connlimit caps, read from
`iptables-legacy-save` and `ip6tables-legacy-save` in the namespace analysed, into
the same rules as nftables' (tcpceiling.host.rules). Older hosts, and Docker or
kube-proxy set to the legacy backend, keep their NAT there. iptables-nft's rules are
nftables rules and come from `nft` already.

The words are those iptables-save prints (iptables-extensions(8): SNAT, MASQUERADE,
connlimit, REJECT). A negated match (`! -o docker0`) is left out, as the nftables
reader leaves out `!=`: the rule is taken to cover more flows than it does."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator

from tcpceiling.host import netns as netns_mod
from tcpceiling.host import rules
from tcpceiling.host.roots import Roots
from tcpceiling.host.rules import Found, Ruleset

#: A fixture root's saved rules, beside its proc tree (both families in one file).
FIXTURE = "iptables-legacy-save.txt"
#: (family, the tables the kernel has loaded in the namespace, the tool that saves them)
FAMILIES = (("ip", "ip_tables_names", "iptables-legacy-save"),
            ("ip6", "ip6_tables_names", "ip6tables-legacy-save"))  # fmt: skip
#: REJECT's --reject-with in the nftables reader's words
REJECT_WITH = {"tcp-reset": "reject with tcp reset"}


def parse_save(text: str, family: str = "ip") -> Ruleset:
    """iptables-save output -> the NAT rules of nat/POSTROUTING, in order, and the
    connlimit caps (`--connlimit-above N` with DROP or REJECT) of every chain."""
    return rules.collect(_rules(text, family))


def _rules(text: str, family: str) -> Iterator[Found]:
    """What each `-A CHAIN ...` line is, numbered per table and chain as `iptables -L
    --line-numbers` does. Only a line that can be a NAT rule or a cap is split into
    words (20,000 kube-proxy-like rules: 18 ms, 0.8 s when each was;
    benchmarks/path_readers.py)."""
    table, numbers = "", Counter[tuple[str, str]]()
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        if not line.startswith("-A "):
            continue
        chain = line.split(None, 2)[1]
        numbers[(table, chain)] += 1
        nat_chain = (table, chain) == ("nat", "POSTROUTING")
        if not nat_chain and "--connlimit-above" not in line:
            continue
        where = (f"{family}tables-legacy table {table} chain {chain} "
                 f"rule {numbers[(table, chain)]}")  # fmt: skip
        opts = options(shlex.split(line)[2:])
        match = _match(opts)
        nat = _nat(opts, match, where) if nat_chain else None
        yield nat, _cap(opts, match, where)


def options(words: list[str]) -> dict[str, str]:
    """A rule's options as {name: value} (`-d 10.0.0.0/8` -> d, `--dport 80` ->
    dport; a flag alone -> ""); a negated one (`! -o docker0`) is left out."""
    opts: dict[str, str] = {}
    negated, i = False, 0
    while i < len(words):
        word = words[i]
        if word == "!" or not word.startswith("-"):
            negated, i = word == "!", i + 1
            continue
        value = (
            words[i + 1] if i + 1 < len(words) and not words[i + 1].startswith(("-", "!")) else None
        )
        if not negated:
            opts[word.lstrip("-")] = value or ""
        negated, i = False, i + (2 if value is not None else 1)
    return opts


def _match(opts: dict[str, str]) -> rules.Match:
    dport = opts.get("dport", "")
    return rules.Match(
        oifname=opts.get("o") or None,
        daddr=opts.get("d") or None,
        dport=int(dport) if dport.isdigit() else None,
        tcp=opts.get("p", "all") in ("tcp", "6", "all"),
        saddr=opts.get("s") or None,
    )


def port_range(text: str) -> tuple[int, int] | None:
    """`A` or `A-B` -> (A, B); None when it is neither."""
    low, _, high = text.partition("-")
    if not low.isdigit() or (high and not high.isdigit()):
        return None
    return int(low), int(high or low)


def to_source(text: str) -> tuple[tuple[str, ...], tuple[int, int] | None]:
    """SNAT's --to-source ADDR[-ADDR][:PORT[-PORT]] (IPv6: [ADDR[-ADDR]]:PORT[-PORT])."""
    if text.startswith("["):
        addr, _, rest = text[1:].partition("]")
        ports = rest.removeprefix(":")
    elif text.count(":") == 1:
        addr, _, ports = text.partition(":")
    else:
        addr, ports = text, ""
    low, _, high = addr.partition("-")
    addresses = rules.expand_addresses({"range": [low, high]} if high else low)
    return addresses, port_range(ports) if ports else None


def _nat(opts: dict[str, str], match: rules.Match, where: str) -> rules.NatRule | None:
    flags = tuple(f for f in ("random", "random-fully", "persistent") if f in opts)
    if opts.get("j") == "MASQUERADE":
        ports = port_range(opts["to-ports"]) if opts.get("to-ports") else None
        return rules.NatRule("masquerade", match, (), ports, flags, where, "iptables")
    if opts.get("j") == "SNAT" and opts.get("to-source"):
        addresses, ports = to_source(opts["to-source"])
        return rules.NatRule("snat", match, addresses, ports, flags, where, "iptables")
    return None


def _cap(opts: dict[str, str], match: rules.Match, where: str) -> rules.ConnCap | None:
    """A cap: over N connections the rule drops or rejects. Grouped by source address
    (--connlimit-mask 32 or 128, the default) it caps each client; mask 0 (or grouped
    by destination) caps the port as a whole."""
    above, target = opts.get("connlimit-above", ""), opts.get("j")
    if not above.isdigit() or target not in ("DROP", "REJECT"):
        return None
    verdict = "drop" if target == "DROP" else REJECT_WITH.get(opts.get("reject-with", ""), "reject")
    per_source = opts.get("connlimit-mask", "32") != "0" and "connlimit-daddr" not in opts
    return rules.ConnCap(int(above), match, verdict, per_source, where, "iptables")


def read_legacy(roots: Roots, netns: str | None) -> Ruleset | None:
    """The namespace's legacy rules; None when it has no legacy table loaded (or the
    tool to save them is not installed; a fixture root: no saved file)."""
    if not roots.live:
        path = roots.procfs.parent / FIXTURE
        return parse_save(path.read_text()) if path.exists() else None
    found: Ruleset | None = None
    for family, names, tool in FAMILIES:
        text = _saved(roots, netns, names, tool)
        if text is not None:
            found = (found or Ruleset()) + parse_save(text, family)
    return found


def _saved(roots: Roots, netns: str | None, names: str, tool: str) -> str | None:
    """`tool`'s output in the namespace, when the kernel has a table of that family
    loaded there (/proc/net/ip_tables_names; without one there is nothing to read)."""
    path = shutil.which(tool)
    with netns_mod.inside(netns):
        try:
            loaded = (roots.procfs / "thread-self" / "net" / names).read_text().split()
        except OSError:
            return None
        if not loaded or path is None:
            return None
        out = subprocess.run([path], capture_output=True, text=True)
    return out.stdout if out.returncode == 0 else None

"""Legacy iptables rules (x_tables, not seen by nft) read into the same NAT rules and
connection caps as nftables': the parser on literal `iptables-legacy-save` output
(iptables 1.8.9, captured in a namespace), and the reader live in a namespace this
test makes (its tables exist only there)."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tcpceiling.host import iptables, nat, rules
from tcpceiling.host.roots import Roots
from tests.conftest import IS_ROOT, cli_json

#: `iptables-legacy-save` (comment lines left out) after the rules it shows were added
#: with iptables-legacy in a fresh namespace.
SAVED_V4 = """\
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -p tcp -m tcp --dport 8080 -m connlimit --connlimit-above 100 --connlimit-mask 0 \
--connlimit-saddr -j REJECT --reject-with tcp-reset
-A INPUT -p tcp -m tcp --dport 22 --tcp-flags FIN,SYN,RST,ACK SYN -m connlimit \
--connlimit-above 3 --connlimit-mask 32 --connlimit-saddr -m comment --comment "ssh per client" \
-j DROP
-A INPUT -p tcp -m tcp --dport 25 -m connlimit --connlimit-upto 10 --connlimit-mask 32 \
--connlimit-saddr -j ACCEPT
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -d 198.18.0.0/24 -o veth0 -p tcp -m tcp --dport 80 -j SNAT \
--to-source 198.18.1.1-198.18.1.2:1024-1033 --persistent
-A POSTROUTING -o veth1 -p tcp -j MASQUERADE --to-ports 60000-60099 --random-fully
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A POSTROUTING -p udp -j SNAT --to-source 10.9.9.9
COMMIT
""".replace("\\\n", "")

#: `ip6tables-legacy-save`, the same way.
SAVED_V6 = """\
*nat
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -p tcp -j SNAT --to-source [2001:db8::1-2001:db8::2]:2000-2009
COMMIT
*filter
:INPUT ACCEPT [0:0]
-A INPUT -p tcp -m tcp --dport 8080 -m connlimit --connlimit-above 7 --connlimit-mask 0 \
--connlimit-saddr -j REJECT --reject-with icmp6-port-unreachable
COMMIT
""".replace("\\\n", "")


def test_nat_rules_in_order_with_their_ports_and_addresses() -> None:
    snat, masq, docker, udp = iptables.parse_save(SAVED_V4).nat
    assert (snat.kind, snat.addresses, snat.ports, snat.flags) == (
        "snat", ("198.18.1.1", "198.18.1.2"), (1024, 1033), ("persistent",),
    )  # fmt: skip
    assert snat.ports_per_address * snat.address_count == 20
    assert snat.match.covers("198.18.0.7", 80, "veth0")
    assert not snat.match.covers("198.18.0.7", 443) and not snat.match.covers("10.0.0.1", 80)
    assert snat.where == "iptables-legacy table nat chain POSTROUTING rule 1"
    assert (masq.kind, masq.ports, masq.flags, masq.match.oifname) == (
        "masquerade", (60000, 60099), ("random-fully",), "veth1",
    )  # fmt: skip
    # Docker's rule: the negated `! -o docker0` is left out (it covers more than it does)
    assert (docker.kind, docker.ports, docker.match.oifname) == ("masquerade", None, None)
    assert docker.ports_per_address == rules.DEFAULT_NAT_PORTS
    assert not udp.match.tcp and not udp.match.covers("10.0.0.1", 80)


def test_legacy_rules_are_shown_and_raised_in_their_own_words() -> None:
    snat, masq, *_ = iptables.parse_save(SAVED_V4).nat
    assert snat.text == (
        "-j SNAT --to-source 198.18.1.1-198.18.1.2:1024-1033 --persistent "
        "(iptables-legacy table nat chain POSTROUTING rule 1)"
    )
    assert masq.text.startswith("-j MASQUERADE --to-ports 60000-60099 --random-fully (")
    assert rules.range_words("iptables", 100) == (
        "-j MASQUERADE --to-ports 65436-65535 --random-fully"
    )
    assert rules.range_words("nft", 100) == "masquerade to :65436-65535 fully-random"
    assert rules.addresses_words("iptables").startswith("-j SNAT --to-source A-B:1024-65535")
    web, _ssh = iptables.parse_save(SAVED_V4).caps
    assert web.raised(200) == (
        "iptables-legacy table filter chain INPUT rule 1: a count of 200 or more "
        "(iptables-legacy -R: the same rule with the new count)"
    )


#: `nft -j list ruleset` (nft 1.0.6, captured) of Docker's rule on the nftables backend:
#: `ip saddr 172.17.0.0/16 oifname != "docker0" masquerade`
NFT_DOCKER = (
    '{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", '
    '"json_schema_version": 1}}, {"table": {"family": "ip", "name": "nat", "handle": 1}}, '
    '{"chain": {"family": "ip", "table": "nat", "name": "postrouting", "handle": 1, '
    '"type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}}, {"rule": '
    '{"family": "ip", "table": "nat", "chain": "postrouting", "handle": 2, "expr": [{"match": '
    '{"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": '
    '{"prefix": {"addr": "172.17.0.0", "len": 16}}}}, {"match": {"op": "!=", "left": {"meta": '
    '{"key": "oifname"}}, "right": "docker0"}}, {"masquerade": null}]}}]}'
)


@pytest.mark.parametrize(
    "ruleset",
    [iptables.parse_save(SAVED_V4).nat[2:3], nat.parse_ruleset(NFT_DOCKER).nat],
    ids=["iptables-legacy", "nft"],
)
def test_dockers_masquerade_covers_its_containers_flows_only(
    ruleset: tuple[rules.NatRule, ...],
) -> None:
    """`-s 172.17.0.0/16` (`ip saddr`): a flow from a container is NATed by it, one
    from the host's own address is not, one from an unknown source may be."""
    (docker,) = ruleset
    assert docker.match.saddr == "172.17.0.0/16"
    found = rules.Ruleset(ruleset)
    assert found.nat_for("198.18.0.7", 443, src="172.17.0.5") == docker
    assert found.nat_for("198.18.0.7", 443, src="198.18.5.2") is None
    assert found.nat_for("198.18.0.7", 443) == docker


def test_connlimit_caps_global_and_per_source() -> None:
    web, ssh = iptables.parse_save(SAVED_V4).caps  # --connlimit-upto ... ACCEPT caps nothing
    assert (web.limit, web.per_source, web.verdict, web.match.dport) == (
        100, False, "reject with tcp reset", 8080,
    )  # fmt: skip
    assert web.text == (
        "-m connlimit --connlimit-above 100 reject with tcp reset "
        "(iptables-legacy table filter chain INPUT rule 1)"
    )
    assert (ssh.limit, ssh.per_source, ssh.verdict, ssh.match.dport) == (3, True, "drop", 22)


def test_rules_are_numbered_per_table_and_chain() -> None:
    """INPUT of nat and INPUT of filter are two chains: each rule's number is its place
    in its own (what `iptables -t TABLE -L CHAIN --line-numbers` shows)."""
    saved = (
        "*nat\n-A INPUT -s 10.0.0.1/32 -j ACCEPT\n-A INPUT -s 10.0.0.2/32 -j ACCEPT\nCOMMIT\n"
        "*filter\n-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\n"
        "-A INPUT -p tcp -m tcp --dport 80 -m connlimit --connlimit-above 9 "
        "--connlimit-mask 0 --connlimit-saddr -j DROP\nCOMMIT\n"
    )
    (cap,) = iptables.parse_save(saved).caps
    assert cap.where == "iptables-legacy table filter chain INPUT rule 2"


def test_ipv6_rules() -> None:
    rules = iptables.parse_save(SAVED_V6, "ip6")
    (snat,) = rules.nat
    assert (snat.addresses, snat.ports) == (("2001:db8::1", "2001:db8::2"), (2000, 2009))
    (cap,) = rules.caps
    assert (cap.limit, cap.per_source, cap.verdict) == (7, False, "reject")
    assert cap.where == "ip6tables-legacy table filter chain INPUT rule 1"


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("-d 10.0.0.0/8 -j SNAT --to-source 1.2.3.4", {"d": "10.0.0.0/8", "j": "SNAT",
                                                       "to-source": "1.2.3.4"}),
        ("! -o docker0 -j MASQUERADE", {"j": "MASQUERADE"}),
        ("-j SNAT --to-source 1.2.3.4 --persistent", {"j": "SNAT", "to-source": "1.2.3.4",
                                                      "persistent": ""}),
        ("-p tcp ! --dport 22 -j DROP", {"p": "tcp", "j": "DROP"}),
    ],
)  # fmt: skip
def test_options(words: str, expected: dict[str, str]) -> None:
    assert iptables.options(words.split()) == expected


@pytest.mark.parametrize(
    ("text", "addresses", "ports"),
    [
        ("10.9.9.9", ("10.9.9.9",), None),
        ("10.9.9.9:2000-2009", ("10.9.9.9",), (2000, 2009)),
        ("10.9.9.8-10.9.9.9", ("10.9.9.8", "10.9.9.9"), None),
        ("10.9.9.9:7000", ("10.9.9.9",), (7000, 7000)),
        ("2001:db8::1", ("2001:db8::1",), None),
        ("[2001:db8::1]:80-81", ("2001:db8::1",), (80, 81)),
    ],
)
def test_to_source(text: str, addresses: tuple[str, ...], ports: tuple[int, int] | None) -> None:
    assert iptables.to_source(text) == (addresses, ports)


def test_a_fixture_root_reads_its_saved_rules(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "sys").mkdir()
    roots = Roots(tmp_path / "proc", tmp_path / "sys")
    assert iptables.read_legacy(roots, None) is None
    (tmp_path / iptables.FIXTURE).write_text(SAVED_V4)
    rules = nat.read_ruleset(roots, None)
    assert rules is not None and len(rules.nat) == 4 and len(rules.caps) == 2


@pytest.fixture
def legacy_netns() -> Iterator[str]:
    if not IS_ROOT or shutil.which("iptables-legacy") is None:
        pytest.skip("needs root and iptables-legacy (`.ci/run` installs iptables)")
    name = f"tcx-ipt-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_legacy_and_nft_rules_of_a_namespace_are_read_together(legacy_netns: str) -> None:
    """A legacy SNAT rule and an nftables cap in one namespace: both are read, nft's
    first; a namespace with no legacy table loaded runs no iptables-legacy-save."""
    assert iptables.read_legacy(Roots(), legacy_netns) is None
    run = ["ip", "netns", "exec", legacy_netns]
    subprocess.run([*run, "iptables-legacy", "-t", "nat", "-A", "POSTROUTING", "-p", "tcp",
                    "-j", "SNAT", "--to-source", "198.18.7.1:3000-3009"], check=True)  # fmt: skip
    if shutil.which("nft"):
        subprocess.run([*run, "nft", "-f", "-"], check=True, text=True, input=NFT_CAP)
    rules = nat.read_ruleset(Roots(), legacy_netns)
    assert rules is not None
    (rule,) = rules.nat
    assert (rule.addresses, rule.ports) == (("198.18.7.1",), (3000, 3009))
    if shutil.which("nft"):
        (cap,) = rules.caps
        assert cap.text.startswith("ct count over 5 ")


NFT_CAP = """table inet filter {
  chain input { type filter hook input priority filter; policy accept;
    tcp dport 9000 ct count over 5 reject with tcp reset
  }
}"""


def test_a_nat_rule_for_other_sources_does_not_bind_these_clients(legacy_netns: str) -> None:
    """analyze --role nat in a namespace whose only NAT rule is for 10.99.0.0/16: the
    rule's 10 ports bind clients from there, not clients from elsewhere; with the
    clients unknown, it may apply and is counted."""
    run = ["ip", "netns", "exec", legacy_netns, "iptables-legacy"]
    subprocess.run([*run, "-t", "nat", "-A", "POSTROUTING", "-s", "10.99.0.0/16", "-p", "tcp",
                    "-j", "MASQUERADE", "--to-ports", "3000-3009"], check=True)  # fmt: skip

    def snat(*sources: str) -> list[dict[str, Any]]:
        picks = [a for s in sources for a in ("--source-ip", s)]
        a = cli_json("analyze", "--netns", legacy_netns, "--role", "nat", "--connect",
                     "198.18.6.2:9000", *picks)  # fmt: skip
        return [c for c in a["scenarios"][0]["constraints"] if c["id"] == "snat_ports"]

    assert [c["ceiling"] for c in snat()] == [10]
    assert [c["ceiling"] for c in snat("10.99.0.5")] == [10]
    assert snat("198.18.5.2") == []

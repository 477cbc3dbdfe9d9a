"""Limits on the path: a NAT's ports and a firewall's connection cap, in namespaces the
tests make (198.18.0.0/15): a client (198.18.5.2) routed through a NAT namespace
(198.18.5.1 | 198.18.6.1) to a server namespace (198.18.6.2). nftables rules exist
only in those namespaces; the host's rules are never touched."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import netns as pyns

from tcpceiling.errors import ParseError
from tcpceiling.host import nat, rules
from tcpceiling.host.roots import Roots
from tests.conftest import IS_ROOT, cli_json, constraint, netns_sysctl, probe, run_cli

pytestmark = [
    pytest.mark.skipif(not IS_ROOT, reason="needs root: creates network namespaces"),
    pytest.mark.skipif(shutil.which("nft") is None, reason="needs nft (`.ci/run` installs it)"),
]
SERVER = "198.18.6.2"
PORT = 9000


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True)


def nft(ns: str, script: str) -> None:
    subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=script, text=True,
                   check=True)  # fmt: skip


@dataclass(frozen=True)
class Path3:
    client: str
    nat: str
    server: str


@contextmanager
def three_namespaces() -> Iterator[Path3]:
    tag = uuid.uuid4().hex[:6]
    p = Path3(f"tcx-c-{tag}", f"tcx-n-{tag}", f"tcx-s-{tag}")
    with ExitStack() as stack:
        for ns in (p.client, p.nat, p.server):
            ip("netns", "add", ns)
            stack.callback(subprocess.run, ["ip", "netns", "del", ns], check=False)
            ip("-n", ns, "link", "set", "lo", "up")
        ip("link", "add", f"c{tag}", "netns", p.client, "type", "veth", "peer", "name",
           f"nc{tag}", "netns", p.nat)  # fmt: skip
        ip("link", "add", f"ns{tag}", "netns", p.nat, "type", "veth", "peer", "name",
           f"s{tag}", "netns", p.server)  # fmt: skip
        for ns, dev, addr in (
            (p.client, f"c{tag}", "198.18.5.2/24"),
            (p.nat, f"nc{tag}", "198.18.5.1/24"),
            (p.nat, f"ns{tag}", "198.18.6.1/24"),
            (p.server, f"s{tag}", "198.18.6.2/24"),
        ):
            ip("-n", ns, "addr", "add", addr, "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")
        ip("-n", p.client, "route", "add", "default", "via", "198.18.5.1")
        ip("-n", p.server, "route", "add", "default", "via", "198.18.6.1")
        netns_sysctl(p.nat, "net.ipv4.ip_forward", "1")
        yield p


def masquerade(p: Path3, to: str) -> None:
    """The NAT's rule toward the server side: `masquerade to :A-B` or `snat to ...`;
    given as iptables words (`-j MASQUERADE ...`), a legacy iptables rule instead."""
    dev = next(d for d in _links(p.nat) if d.startswith("ns"))
    if to.startswith("-j "):
        legacy(p.nat, "-t", "nat", "-A", "POSTROUTING", "-o", dev, "-p", "tcp", *to.split())
        return
    nft(
        p.nat,
        f"""table ip nat {{
  chain postrouting {{ type nat hook postrouting priority srcnat; policy accept;
    oifname "{dev}" meta l4proto tcp {to}
  }}
}}""",
    )


def legacy(ns: str, *rule: str) -> None:
    """A legacy iptables rule (x_tables, which nft does not list) in namespace ns."""
    if shutil.which("iptables-legacy") is None:
        pytest.skip("needs iptables-legacy (`.ci/run` installs iptables)")
    subprocess.run(["ip", "netns", "exec", ns, "iptables-legacy", *rule], check=True)


def _links(ns: str) -> list[str]:
    out = subprocess.run(["ip", "-n", ns, "-o", "link"], capture_output=True, text=True).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]


@contextmanager
def server(ns: str) -> Iterator[None]:
    """A plain server in the server namespace: accepts and holds every connection."""
    cmd = ["ip", "netns", "exec", ns, sys.executable, "-c", HOLDER, SERVER, str(PORT)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield
    finally:
        proc.terminate()
        proc.wait(10)


HOLDER = """
import selectors, socket, sys
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind((sys.argv[1], int(sys.argv[2]))); ls.listen(4096); ls.setblocking(False)
sel = selectors.DefaultSelector(); sel.register(ls, selectors.EVENT_READ)
print("ready", flush=True)
held = []
while True:
    for key, _ in sel.select():
        if key.fileobj is ls:
            held.append(ls.accept()[0])
"""


def hold_connections(
    ns: str, n: int, sources: tuple[str, ...] = ()
) -> tuple[list[socket.socket], int]:
    """A plain client in namespace ns: n connects (from the sources in turn) with a 2 s
    timeout; (held, failed)."""
    held: list[socket.socket] = []
    failed = 0

    def run() -> None:
        nonlocal failed
        pyns.setns(ns)  # this thread only
        for i in range(n):
            s = socket.socket()
            s.settimeout(2)
            try:
                if sources:
                    s.bind((sources[i % len(sources)], 0))
                s.connect((SERVER, PORT))
                held.append(s)
            except OSError:
                failed += 1
                s.close()

    t = threading.Thread(target=run)
    t.start()
    t.join(n * 3)
    return held, failed


def nat_scenario(ns: str, *sources: str) -> dict[str, Any]:
    picks = [a for src in sources for a in ("--source-ip", src)]
    a = cli_json("analyze", "--netns", ns, "--role", "nat", "--connect", f"{SERVER}:{PORT}",
                 *picks)  # fmt: skip
    return dict(a["scenarios"][0])


def reply_addresses(ns: str) -> Counter[str]:
    """The NAT's established flows to the server per NAT address (the reply tuple's
    destination), counted by conntrack(8), the reference tool."""
    out = subprocess.run(["ip", "netns", "exec", ns, "conntrack", "-L", "-p", "tcp"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    found: Counter[str] = Counter()
    for line in out.splitlines():
        if "ESTABLISHED" in line and f"dport={PORT}" in line:
            found[[w[4:] for w in line.split() if w.startswith("dst=")][1]] += 1
    return found


def flush_conntrack(ns: str) -> None:
    """Empty the conntrack table of a namespace this test made (conntrack -F)."""
    subprocess.run(["ip", "netns", "exec", ns, "conntrack", "-F"], check=True,
                   capture_output=True)  # fmt: skip


def two_sources(p: Path3, rule: rules.NatRule) -> tuple[str, str]:
    """Two client addresses the NAT hashes to different NAT addresses (added to the
    client namespace)."""
    first = "198.18.5.2"
    other = next(
        f"198.18.5.{i}" for i in range(3, 250)
        if nat.nat_address_for(rule, f"198.18.5.{i}", SERVER)
        != nat.nat_address_for(rule, first, SERVER)
    )  # fmt: skip
    dev = next(d for d in _links(p.client) if d.startswith("c"))
    ip("-n", p.client, "addr", "add", f"{other}/24", "dev", dev)
    return first, other


@pytest.mark.parametrize(
    ("to", "addresses", "expected"),
    [
        ("masquerade to :60000-60099", (), 100),
        ("snat to 198.18.6.10-198.18.6.11:60000-60099", ("198.18.6.10", "198.18.6.11"), 200),
        ("-j MASQUERADE --to-ports 60000-60099", (), 100),  # legacy iptables
    ],
)
def test_nat_ports_are_the_first_limit_on_the_path(
    to: str, addresses: tuple[str, ...], expected: int
) -> None:
    """analyze in the NAT namespace predicts the NAT's tuples toward the server; the
    probe from the client holds that many and names snat_ports with the NAT's own
    conntrack counters; doctor in the NAT namespace, with a plain client holding as
    many, exits 2 naming the destination. With two NAT addresses the kernel gives one
    client address one of them (by a hash of source and destination): two client
    addresses that hash apart reach 200; one reaches 100, as analyze says."""
    with three_namespaces() as p, server(p.server):
        dev = next(d for d in _links(p.nat) if d.startswith("ns"))
        for addr in addresses:
            ip("-n", p.nat, "addr", "add", f"{addr}/24", "dev", dev)
        masquerade(p, to)
        sources: tuple[str, ...] = ()
        if addresses:
            rule = nat.read_ruleset(Roots(), p.nat)
            assert rule is not None
            sources = two_sources(p, rule.nat[0])
            assert nat_scenario(p.nat, sources[0])["ceiling"] == 100
        s = nat_scenario(p.nat, *sources)
        c = constraint(s, "snat_ports")
        assert s["binding"] == "snat_ports" and s["ceiling"] == expected, s["summary"]
        assert c["details"]["destinations"][0]["addresses"] == expected // 100
        if to.startswith("-j "):  # a legacy rule: named, read and raised in its own words
            assert c["source"].startswith("iptables-legacy-save"), c["source"]
            assert "-j MASQUERADE --to-ports 60000-60099" in c["note"], c["note"]
            assert "-j MASQUERADE --to-ports 1024-65535 --random-fully" in c["raise"]
        picks = [a for src in sources for a in ("--source-ip", src)]
        code, r = probe(
            "--netns", p.client, "--connect", f"{SERVER}:{PORT}", "--target", str(expected + 60),
            "--connect-timeout", "2", "--path-netns", p.nat, *picks,
        )  # fmt: skip
        assert code == 1 and r["established"] == expected, (r["established"], r["stop"])
        assert r["stop"]["reason"] == "snat_ports" and r["stop"]["side"] == "path", r["stop"]
        assert r["stop"]["evidence"]["conntrack"]["insert_failed"] > 0
        flush_conntrack(p.nat)  # the probe's reset flows linger (CLOSE, 10 s) on tuples
        held, failed = hold_connections(p.client, expected + 5, sources)
        try:
            assert (len(held), failed) == (expected, 5)  # a plain client's count
            assert sum(reply_addresses(p.nat).values()) == expected  # conntrack(8)'s
            assert len(reply_addresses(p.nat)) == max(1, len(addresses))
            assert nat_scenario(p.nat, *sources)["ceiling"] == 0
            code, out, _err = run_cli("doctor", "--netns", p.nat, "--interval", "0.2")
            assert code == 2 and f"{SERVER}:{PORT}" in out.splitlines()[0], out
            assert "snat_ports" in out.splitlines()[0]
        finally:
            for sock in held:
                sock.close()


@pytest.mark.parametrize(
    ("syntax", "words"),
    [("nft", "ct count over 50"), ("iptables", "-m connlimit --connlimit-above 50")],
)
def test_a_firewall_connection_cap_names_the_rule(syntax: str, words: str) -> None:
    """The server's namespace caps connections to its port at 50 and rejects the rest
    with a reset (nftables `ct count`, or legacy iptables' connlimit): analyze there
    predicts 50 (firewall); the probe from the client holds 50 and names the firewall
    and its rule. (doctor's row for the cap is tested on a literal sample: a plain
    client right after the probe held 35 to 50 here, some of the probe's flows still
    counted by the cap after conntrack -F. Likely why: the cap keeps its own list of
    flows and drops gone ones lazily, skipping the pass within a jiffy of the last
    one until 64 were added (__nf_conncount_add, net/netfilter/nf_conncount.c), so a
    burst right after a flush still counts some of them.)"""
    with three_namespaces() as p, server(p.server):
        if syntax == "iptables":
            legacy(p.server, "-A", "INPUT", "-p", "tcp", "--dport", str(PORT), "-m",
                   "connlimit", "--connlimit-above", "50", "--connlimit-mask", "0", "-j",
                   "REJECT", "--reject-with", "tcp-reset")  # fmt: skip
        else:
            nft(
                p.server,
                f"""table inet filter {{
  chain input {{ type filter hook input priority filter; policy accept;
    tcp dport {PORT} ct state new ct count over 50 reject with tcp reset
  }}
}}""",
            )
        a = cli_json("analyze", "--netns", p.server, "--role", "server", "--listen",
                     f"{SERVER}:{PORT}")  # fmt: skip
        s = a["scenarios"][0]
        assert s["binding"] == "firewall" and s["ceiling"] == 50, s["summary"]
        code, r = probe(
            "--netns", p.client, "--connect", f"{SERVER}:{PORT}", "--target", "80",
            "--path-netns", p.server, "--check", "none", "--check-timeout", "0.5",
        )  # fmt: skip
        assert code == 1 and r["stop"]["reason"] == "firewall", r["stop"]
        assert words in r["stop"]["detail"]
        assert r["outcomes"]["established"] == 50


def test_nft_rules_parse_from_real_json() -> None:
    """The parser on literal `nft -j list ruleset` output (captured from nft 1.0.6)."""
    rules = nat.parse_ruleset(NFT_JSON)
    (rule,) = rules.nat
    assert (rule.kind, rule.ports, rule.ports_per_address, rule.address_count) == (
        "masquerade", (60000, 60099), 100, 1,
    )  # fmt: skip
    assert rule.match.covers(SERVER, PORT, "nsab") and not rule.match.covers(SERVER, PORT, "x")
    (cap,) = rules.caps
    assert (cap.limit, cap.verdict, cap.per_source, cap.match.dport) == (
        50, "reject with tcp reset", False, PORT,
    )  # fmt: skip
    assert rules.caps_for(PORT, SERVER) == (cap,) and rules.caps_for(PORT + 1, SERVER) == ()


def test_conntrack_lines_count_the_nated_flows() -> None:
    flows = nat.count_flows(CONNTRACK)
    assert flows.total == 6  # the udp line is not a TCP flow
    # NATed: the reply goes to 198.18.6.1, not to the source; the IPv6 flow is not NATed
    assert flows.nat == {("198.18.6.1", SERVER, PORT): 4}
    # a cap counts every flow to the port but those in TIME_WAIT or CLOSE
    assert flows.live_by_port == {PORT: 4, 443: 1}


@pytest.mark.parametrize(
    ("line", "counted"),
    [
        ("ipv4 2 tcp 6 300 ESTABLISHED src=10.0.0.1 dst=10.0.0.2 sport=1 dport=80 "
         "src=10.0.0.2 dst=10.0.0.9 sport=80 dport=1 [ASSURED] mark=0 use=1", 1),
        ("ipv4 2 tcp 6 300 SYN_SENT src=10.0.0.1 dst=10.0.0.2 sport=1 dport=80 "
         "packets=1 bytes=60 [UNREPLIED] src=10.0.0.2 dst=10.0.0.9 sport=80 dport=1 "
         "packets=0 bytes=0 mark=0 zone=3 use=1", 1),
        ("ipv4 2 udp 17 30 src=10.0.0.1 dst=10.0.0.2 sport=1 dport=53 "
         "src=10.0.0.2 dst=10.0.0.9 sport=53 dport=1 mark=0 use=1", 0),
        ("ipv4 2 tcp 6 300 ESTABLISHED src=10.0.0.1 dst=10.0.0.2", 0),  # cut short
        ("", 0),
    ],
)  # fmt: skip
def test_conntrack_line_forms(line: str, counted: int) -> None:
    """What the kernel prints between the tuples (nf_conntrack_acct's packets= bytes=,
    [UNREPLIED]) and after them (zone=, [ASSURED]) does not hide a flow."""
    flows = nat.count_flows(line + "\n")
    assert flows.total == counted
    assert flows.nat == ({("10.0.0.9", "10.0.0.2", 80): 1} if counted else {})


CONNTRACK = """\
ipv4     2 tcp      6 431998 ESTABLISHED src=198.18.5.2 dst=198.18.6.2 sport=41000 dport=9000 \
src=198.18.6.2 dst=198.18.6.1 sport=9000 dport=60000 [ASSURED] mark=0 zone=0 use=2
ipv4     2 tcp      6 119 SYN_SENT src=198.18.5.2 dst=198.18.6.2 sport=41002 dport=9000 \
src=198.18.6.2 dst=198.18.6.1 sport=9000 dport=60001 mark=0 zone=0 use=2
ipv4     2 tcp      6 431998 ESTABLISHED src=198.18.6.1 dst=198.18.6.2 sport=50000 dport=9000 \
src=198.18.6.2 dst=198.18.6.1 sport=9000 dport=50000 [ASSURED] mark=0 zone=0 use=2
ipv4     2 udp      17 29 src=198.18.5.2 dst=198.18.6.2 sport=5353 dport=53 \
src=198.18.6.2 dst=198.18.6.1 sport=53 dport=5353 mark=0 zone=0 use=2
ipv4     2 tcp      6 116 SYN_SENT src=198.18.5.3 dst=198.18.6.2 sport=41003 dport=9000 \
[UNREPLIED] src=198.18.6.2 dst=198.18.6.1 sport=9000 dport=60002 mark=0 zone=0 use=2
ipv4     2 tcp      6 117 TIME_WAIT src=198.18.5.3 dst=198.18.6.2 sport=41004 dport=9000 \
src=198.18.6.2 dst=198.18.6.1 sport=9000 dport=60003 [ASSURED] mark=0 zone=0 use=2
ipv6     10 tcp      6 431999 ESTABLISHED src=2001:db8::1 dst=2001:db8::2 sport=40000 \
dport=443 src=2001:db8::2 dst=2001:db8::1 sport=443 dport=40000 [ASSURED] mark=0 zone=0 use=2
"""

#: `nft -j list ruleset` of nft 1.0.6, captured: the rules of the two live tests above;
#: and `ip daddr 198.18.6.0/24 tcp dport 9000 snat to 198.18.6.10-198.18.6.11:60000-60099
#: random,persistent` (nft lists the two addresses as a /31) with a per-source cap
#: `tcp dport 9001 add @perip { ip saddr ct count over 20 } drop`.
NFT = Path(__file__).parent / "fixtures" / "nft"
NFT_JSON = (NFT / "masquerade-and-cap.json").read_text()
NFT_JSON_2 = (NFT / "snat-range-and-meter.json").read_text()


def test_nft_snat_address_ranges_and_per_source_caps() -> None:
    rules = nat.parse_ruleset(NFT_JSON_2)
    (rule,) = rules.nat
    assert rule.addresses == ("198.18.6.10", "198.18.6.11") and rule.ports_per_address == 100
    assert rule.flags == ("random", "persistent")
    assert rule.match.covers("198.18.6.2", 9000) and not rule.match.covers("198.18.7.2", 9000)
    assert not rule.match.covers("198.18.6.2", 9001)
    (cap,) = rules.caps
    assert (cap.limit, cap.per_source, cap.verdict, cap.match.dport) == (20, True, "drop", 9001)


@pytest.mark.parametrize(
    "text",
    ["", "{", '{"nftables": 3}', '{"rules": []}'],
)
def test_nft_output_that_is_not_a_ruleset_is_a_parse_error(text: str) -> None:
    with pytest.raises(ParseError):
        nat.parse_ruleset(text)


def test_tune_plans_the_nat_range_and_it_holds() -> None:
    """tune for 300 through a 100-port NAT: the range that holds 300 with its headroom,
    as an nft line; written into the NAT namespace, analyze predicts that many."""
    with three_namespaces() as p:
        masquerade(p, "masquerade to :60000-60099")
        code, out, _err = run_cli("tune", "--netns", p.nat, "--role", "nat", "--connect",
                                  f"{SERVER}:{PORT}", "--target", "300", "--json")  # fmt: skip
        (req,) = json.loads(out)["plan"]["requirements"]
        assert code == 1 and req["limit"] == "snat_ports", req
        line = re.search(r"`(masquerade to :(\d+)-(\d+)) fully-random`", req["text"])
        assert line is not None, req["text"]
        ports = int(line[3]) - int(line[2]) + 1
        assert ports >= 300
        subprocess.run(["ip", "netns", "exec", p.nat, "nft", "flush", "ruleset"], check=True)
        masquerade(p, line[1] + " fully-random")
        assert nat_scenario(p.nat)["ceiling"] == ports


#: The NAT address the kernel gave each client address toward 198.18.6.2 through
#: `snat to 198.18.6.10-198.18.6.11` (read from conntrack -L in the NAT namespace).
KERNEL_CHOSE = {
    "198.18.5.3": "198.18.6.11", "198.18.5.4": "198.18.6.10", "198.18.5.5": "198.18.6.11",
    "198.18.5.6": "198.18.6.10", "198.18.5.7": "198.18.6.11", "198.18.5.8": "198.18.6.11",
    "198.18.5.9": "198.18.6.10", "198.18.5.10": "198.18.6.11", "198.18.5.11": "198.18.6.11",
    "198.18.5.12": "198.18.6.10",
}  # fmt: skip


def test_the_nat_address_is_the_kernels_hash() -> None:
    """find_best_ips_proto's jhash2 of the source, seeded by the destination: the same
    choice the kernel made for ten client addresses; `persistent` drops the seed."""
    rule = rules.NatRule("snat", rules.Match(), ("198.18.6.10", "198.18.6.11"), (60000, 60099), (),
                       "table ip nat")  # fmt: skip
    got = {src: nat.nat_address_for(rule, src, SERVER) for src in KERNEL_CHOSE}
    assert got == KERNEL_CHOSE
    masq = rules.NatRule("masquerade", rules.Match(), (), None, (), "")
    assert nat.nat_address_for(masq, "198.18.5.3", SERVER) is None

"""How fast the NAT and firewall readers are at production sizes: a conntrack table of
1,000,000 flows, and a legacy iptables ruleset of 20,000 rules (kube-proxy's size on a
large cluster).

One command:  python benchmarks/path_readers.py [--flows 1000000] [--rules 20000]

A table that size cannot be made here without raising the host's
nf_conntrack_max (262,144, global), so the text is built from lines of the form
/proc/net/nf_conntrack prints (ESTABLISHED and NATed, SYN_SENT [UNREPLIED] with
nf_conntrack_acct's counters, TIME_WAIT, UDP). Reference, in the same run: the
least any line-by-line reader does, `line.split()` on every line. The ruleset is
kube-proxy-like `-A KUBE-SEP-...` lines, with the same reference. Not a test.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from tcpceiling.host.iptables import parse_save
from tcpceiling.host.nat import count_flows

LINES = (
    "ipv4     2 tcp      6 431998 ESTABLISHED src=10.1.{a}.{b} dst=198.18.6.2 sport={p} "
    "dport=443 src=198.18.6.2 dst=198.18.6.1 sport=443 dport={q} [ASSURED] mark=0 zone=0 use=2",
    "ipv4     2 tcp      6 119 SYN_SENT src=10.1.{a}.{b} dst=198.18.6.2 sport={p} dport=443 "
    "packets=1 bytes=60 [UNREPLIED] src=198.18.6.2 dst=198.18.6.1 sport=443 dport={q} "
    "packets=0 bytes=0 mark=0 zone=0 use=2",
    "ipv4     2 tcp      6 88 TIME_WAIT src=10.1.{a}.{b} dst=198.18.6.2 sport={p} dport=80 "
    "src=198.18.6.2 dst=10.1.{a}.{b} sport=80 dport={p} [ASSURED] mark=0 zone=0 use=2",
    "ipv4     2 udp      17 29 src=10.1.{a}.{b} dst=10.0.0.53 sport={p} dport=53 "
    "src=10.0.0.53 dst=10.1.{a}.{b} sport=53 dport={p} mark=0 zone=0 use=2",
)


def table(n: int) -> str:
    return (
        "\n".join(
            LINES[i % 4].format(a=(i >> 8) & 255, b=i & 255, p=1024 + i % 60000, q=1024 + i % 50000)
            for i in range(n)
        )
        + "\n"
    )


def ruleset(n: int) -> str:
    rules = (
        f"-A KUBE-SEP-{i:06X} -s 10.244.{(i >> 8) & 255}.{i & 255}/32 -m comment "
        f'--comment "ns/svc{i}:http" -j KUBE-MARK-MASQ'
        for i in range(n)
    )
    head = "*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
    tail = "-A POSTROUTING -o eth0 -j MASQUERADE\nCOMMIT\n"
    return head + "\n".join(rules) + "\n" + tail


def best(fn: Callable[[str], object], text: str, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(text)
        times.append(time.perf_counter() - t0)
    return min(times)


def split_lines(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.split())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flows", type=int, default=1_000_000)
    ap.add_argument("--rules", type=int, default=20_000)
    args = ap.parse_args()
    rules = ruleset(args.rules)
    ours, floor = best(parse_save, rules), best(split_lines, rules)
    print(f"{args.rules:,} iptables rules: parse_save {ours * 1000:.0f} ms, "
          f"split per line {floor * 1000:.0f} ms, ratio {ours / floor:.2f}")  # fmt: skip
    text = table(args.flows)
    ours, floor = best(count_flows, text), best(split_lines, text)
    counted = count_flows(text)
    print(f"{args.flows:,} lines ({len(text) / 2**20:.0f} MiB): count_flows {ours:.2f} s, "
          f"split per line {floor:.2f} s, ratio {ours / floor:.2f}; "
          f"{counted.total:,} TCP flows, {sum(counted.nat.values()):,} NATed")  # fmt: skip


if __name__ == "__main__":
    main()

"""The TCP socket table of a network namespace, summarised for port accounting.

Live tables come from netlink sock_diag (pyroute2.DiagSocket), never from parsing
/proc/net/tcp: sock_diag is what ss(8) uses, is exact, and is per netns.
Fixture trees carry a `sockets.json` with the same summary.
"""

from __future__ import annotations

import json
import socket
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tcpceiling.errors import ParseError

# TCP states as numbered in include/net/tcp_states.h.
TCP_STATES = {
    1: "ESTABLISHED",
    2: "SYN_SENT",
    3: "SYN_RECV",
    4: "FIN_WAIT1",
    5: "FIN_WAIT2",
    6: "TIME_WAIT",
    7: "CLOSE",
    8: "CLOSE_WAIT",
    9: "LAST_ACK",
    10: "LISTEN",
    11: "CLOSING",
}
STATE_NUMBERS = {name: num for num, name in TCP_STATES.items()}

Tuple3 = tuple[str, str, int]  # (source ip, destination ip, destination port)


@dataclass(frozen=True)
class SocketEntry:
    state: str
    src: str
    sport: int
    dst: str
    dport: int


@dataclass(frozen=True)
class SocketTable:
    """Listeners and per-(src, dst, dport) counts of the connections that hold a port.

    `toward` counts every non-listening socket (TIME_WAIT included) by its 3-tuple,
    `time_wait` the TIME_WAIT ones alone, `listen_ports` the ports held by listeners
    (a bind()-made bucket makes the port unusable for connect(), shared brief §1.1).
    """

    listen_ports: frozenset[int] = frozenset()
    toward: Counter[Tuple3] = field(default_factory=Counter)
    time_wait: Counter[Tuple3] = field(default_factory=Counter)
    states: Counter[str] = field(default_factory=Counter)
    source: str = "none"

    @classmethod
    def from_entries(cls, entries: Iterable[SocketEntry], source: str) -> SocketTable:
        listen: set[int] = set()
        toward: Counter[Tuple3] = Counter()
        tw: Counter[Tuple3] = Counter()
        states: Counter[str] = Counter()
        for e in entries:
            states[e.state] += 1
            if e.state == "LISTEN":
                listen.add(e.sport)
                continue
            toward[(e.src, e.dst, e.dport)] += 1
            if e.state == "TIME_WAIT":
                tw[(e.src, e.dst, e.dport)] += 1
        return cls(frozenset(listen), toward, tw, states, source)

    def used_toward(self, dst: str, dport: int, src: str | None) -> tuple[int, int]:
        """(connections, of which TIME_WAIT) toward dst:dport from src (any src if None)."""
        used = tw = 0
        for (s, d, p), n in self.toward.items():
            if d == dst and p == dport and (src is None or s == src):
                used += n
                tw += self.time_wait.get((s, d, p), 0)
        return used, tw


@dataclass(frozen=True)
class Listener:
    """A LISTEN socket as sock_diag reports it: for a listener, idiag_rqueue is the
    accept queue's current length and idiag_wqueue its limit (the backlog, capped by
    somaxconn); the queue is full when it holds backlog + 1 (sk_acceptq_is_full)."""

    host: str
    port: int
    queue: int
    backlog: int
    inode: int

    @property
    def full(self) -> bool:
        return self.queue > self.backlog


def _diag_messages(family: socket.AddressFamily, states: int = 0xFFF) -> list[Any]:
    from pyroute2 import DiagSocket

    with DiagSocket() as ds:
        ds.bind()
        return list(ds.get_sock_stats(family=family, states=states))


def _diag_entries(family: socket.AddressFamily) -> list[SocketEntry]:
    return [
        SocketEntry(
            state=TCP_STATES.get(msg["idiag_state"], str(msg["idiag_state"])),
            src=msg["idiag_src"],
            sport=msg["idiag_sport"],
            dst=msg["idiag_dst"],
            dport=msg["idiag_dport"],
        )
        for msg in _diag_messages(family)
    ]


def listeners(port: int) -> list[Listener]:
    """The LISTEN sockets on `port` in the calling thread's netns (IPv4 and IPv6)."""
    out = []
    for family in (socket.AF_INET, socket.AF_INET6):
        for msg in _diag_messages(family, 1 << STATE_NUMBERS["LISTEN"]):
            if msg["idiag_sport"] == port:
                out.append(
                    Listener(
                        msg["idiag_src"],
                        port,
                        msg["idiag_rqueue"],
                        msg["idiag_wqueue"],
                        msg["idiag_inode"],
                    )
                )
    return out


def live_entries() -> list[SocketEntry]:
    """All TCP sockets (IPv4 and IPv6) of the calling thread's netns, via sock_diag."""
    return _diag_entries(socket.AF_INET) + _diag_entries(socket.AF_INET6)


def read_live() -> SocketTable:
    """The summarised socket table of the calling thread's network namespace."""
    return SocketTable.from_entries(live_entries(), "netlink sock_diag (NETLINK_INET_DIAG)")


def parse_sockets_json(text: str) -> list[SocketEntry]:
    """A fixture's sockets.json: a list of {state, src, sport, dst, dport}."""
    try:
        rows = json.loads(text)
        return [
            SocketEntry(
                str(r["state"]), str(r["src"]), int(r["sport"]), str(r["dst"]), int(r["dport"])
            )
            for r in rows
        ]
    except (ValueError, KeyError, TypeError) as exc:
        raise ParseError(f"cannot parse sockets.json: {exc}") from exc


def read_fixture(base: Path) -> SocketTable:
    """sockets.json beside a fixture's proc/ and sys/ (empty table if absent)."""
    path = base / "sockets.json"
    if not path.exists():
        return SocketTable(source=f"{path} (absent)")
    return SocketTable.from_entries(parse_sockets_json(path.read_text()), str(path))

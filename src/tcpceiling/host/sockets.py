"""The TCP socket table of a network namespace, summarised for port accounting.

Live tables come from netlink sock_diag (tcpceiling.host.diag), never from parsing
/proc/net/tcp: sock_diag is what ss(8) uses, is exact, is per netns, and filters
in the kernel.
Fixture trees carry a `sockets.json` with the same summary.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path

from tcpceiling.errors import ParseError
from tcpceiling.host import diag

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
    (a port with a bind()-made bucket is not handed out by connect():
    inet_csk_get_port and __inet_hash_connect, net/ipv4/inet_hashtables.c).
    `scope` lists the (host, port) destinations the counts cover when the table was
    read for some destinations only (None: every socket).
    """

    listen_ports: frozenset[int] = frozenset()
    toward: Counter[Tuple3] = field(default_factory=Counter)
    time_wait: Counter[Tuple3] = field(default_factory=Counter)
    source: str = "none"
    scope: tuple[tuple[str, int], ...] | None = None

    @classmethod
    def from_entries(cls, entries: Iterable[SocketEntry], source: str) -> SocketTable:
        listen: set[int] = set()
        toward: Counter[Tuple3] = Counter()
        tw: Counter[Tuple3] = Counter()
        for e in entries:
            if e.state == "LISTEN":
                listen.add(e.sport)
                continue
            toward[(e.src, e.dst, e.dport)] += 1
            if e.state == "TIME_WAIT":
                tw[(e.src, e.dst, e.dport)] += 1
        return cls(frozenset(listen), toward, tw, source)

    def used_toward(self, dst: str, dport: int, src: str | None) -> tuple[int, int]:
        """(connections, of which TIME_WAIT) toward dst:dport from src (any src if None)."""
        if self.scope is not None and (dst, dport) not in self.scope:
            raise ValueError(f"the socket table was read for {self.scope}, not {dst}:{dport}")
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


LISTEN = STATE_NUMBERS["LISTEN"]
TIME_WAIT = STATE_NUMBERS["TIME_WAIT"]
#: Every state that holds a 4-tuple: one walk of the established hash.
CONNECTED = diag.states_mask(set(TCP_STATES) - {LISTEN})
SOURCE = "netlink sock_diag (NETLINK_SOCK_DIAG)"
MAX_CONDITIONS = 32
_TUPLE_KEY = itemgetter(diag.STATE, diag.FAMILY, diag.SRC, diag.DST, diag.DPORT)


def _tuple_counts(rows: Iterable[diag.Row]) -> tuple[Counter[Tuple3], Counter[Tuple3]]:
    """(all, TIME_WAIT) sockets per (src, dst, dport): counted on the raw bytes at C
    speed, then only the distinct keys decoded (an IPv4-mapped IPv6 address merges
    with the IPv4 one)."""
    every: Counter[Tuple3] = Counter()
    tw: Counter[Tuple3] = Counter()
    for (state, fam, src, dst, dport), n in Counter(map(_TUPLE_KEY, rows)).items():
        key = (diag.address(fam, src), diag.address(fam, dst), diag.port(dport))
        every[key] += n
        if state == TIME_WAIT:
            tw[key] += n
    return every, tw


def _listen_rows() -> list[diag.Row]:
    """LISTEN only: the kernel then walks the listening hash, not the established one."""
    return diag.dump(1 << LISTEN)


def read_live(toward: Iterable[tuple[str, int]] | None = None) -> SocketTable:
    """The socket table of the calling thread's netns: listeners always; the
    connections toward `toward` (host, port) only, or all of them when None.

    Scoped to a scenario's destinations the kernel filters (a bytecode condition
    per destination), so a host with a million unrelated sockets costs little."""
    scope = None if toward is None else tuple(sorted(set(toward)))
    listen = frozenset(diag.port(r[diag.SPORT]) for r in _listen_rows())
    if scope is not None and not scope:
        return SocketTable(listen, source=SOURCE, scope=())
    every, tw = _key_counts(diag.counts(CONNECTED, _conditions(scope)))
    return SocketTable(listen, every, tw, SOURCE, scope)


def _key_counts(keys: Counter[diag.Key]) -> tuple[Counter[Tuple3], Counter[Tuple3]]:
    """_tuple_counts of sockets the kernel counted by diag.Key (no row per socket)."""
    every: Counter[Tuple3] = Counter()
    tw: Counter[Tuple3] = Counter()
    for (_len, _kind, fam, state, dport, src, dst), n in keys.items():
        key = (diag.address(fam, src), diag.address(fam, dst), diag.port(dport))
        every[key] += n
        if state == TIME_WAIT:
            tw[key] += n
    return every, tw


def _conditions(
    scope: tuple[tuple[str, int], ...] | None,
) -> tuple[diag.Destination, ...] | None:
    """One bytecode condition per destination; past MAX_CONDITIONS (the kernel runs
    the program once per socket, and the attribute holds 64 KiB) one per host with
    any port, the extra ports then counted and left unused."""
    if scope is None:
        return None
    if len(scope) <= MAX_CONDITIONS:
        return tuple(diag.Destination(h, p) for h, p in scope)
    return tuple(diag.Destination(h, -1) for h in sorted({h for h, _p in scope}))


@dataclass(frozen=True)
class ClientSockets:
    """Sockets whose local port is in the ephemeral range: per (src, dst, dport) all
    and TIME_WAIT, and the inodes of the ones that have a process (TIME_WAIT has 0);
    and the ESTABLISHED ones of the servers' ports asked for, per port."""

    toward: Counter[Tuple3]
    time_wait: Counter[Tuple3]
    inodes: frozenset[int]
    serving: Counter[int] = field(default_factory=Counter)


def client_sockets(low: int, high: int, servers: tuple[int, ...] = ()) -> ClientSockets:
    """A client's connections, selected by the kernel (local port in [low, high]),
    so a server's million accepted sockets cost nothing here, unless its port is one
    of `servers`: those are counted in the same walk of the established hash (one
    program: the range OR each port)."""
    program = diag.either(diag.sport_range(low, high), diag.sport_any(servers))
    rows = diag.dump(CONNECTED, program=program)
    serving: Counter[int] = Counter()
    if servers:
        wanted, established = set(servers), STATE_NUMBERS["ESTABLISHED"]
        serving.update(
            p
            for r in rows
            if r[diag.STATE] == established and (p := diag.port(r[diag.SPORT])) in wanted
        )
        rows = [r for r in rows if low <= diag.port(r[diag.SPORT]) <= high]
    every, tw = _tuple_counts(rows)
    inodes = frozenset(map(itemgetter(diag.INODE), rows)) - {0}
    return ClientSockets(every, tw, inodes, serving)


def listeners_from(entries: Iterable[SocketEntry]) -> list[Listener]:
    """A fixture's listeners (its sockets.json holds no queues: 0 of 0)."""
    return [Listener(e.src, e.sport, 0, 0, 0) for e in entries if e.state == "LISTEN"]


def clients_from(entries: Iterable[SocketEntry], low: int, high: int) -> ClientSockets:
    """A fixture's client sockets: local port in [low, high], as client_sockets."""
    mine = [e for e in entries if e.state != "LISTEN" and low <= e.sport <= high]
    table = SocketTable.from_entries(mine, "fixture")
    return ClientSockets(table.toward, table.time_wait, frozenset())


def all_listeners() -> list[Listener]:
    """Every LISTEN socket of the calling thread's netns, with its accept queue."""
    return [
        Listener(
            diag.address(r[diag.FAMILY], r[diag.SRC]),
            diag.port(r[diag.SPORT]),
            r[diag.RQUEUE],
            r[diag.WQUEUE],
            r[diag.INODE],
        )
        for r in _listen_rows()
    ]


def listeners(port: int) -> list[Listener]:
    """The LISTEN sockets on `port` in the calling thread's netns (IPv4 and IPv6);
    for a listener rqueue is the accept queue and wqueue its backlog."""
    return [ln for ln in all_listeners() if ln.port == port]


def live_entries() -> list[SocketEntry]:
    """All TCP sockets (IPv4 and IPv6) of the calling thread's netns, one entry each
    (for a snapshot; analyze reads the summarised read_live instead)."""
    return [
        SocketEntry(
            TCP_STATES.get(r[diag.STATE], str(r[diag.STATE])),
            diag.address(r[diag.FAMILY], r[diag.SRC]),
            diag.port(r[diag.SPORT]),
            diag.address(r[diag.FAMILY], r[diag.DST]),
            diag.port(r[diag.DPORT]),
        )
        for r in diag.dump(diag.states_mask(TCP_STATES))
    ]


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

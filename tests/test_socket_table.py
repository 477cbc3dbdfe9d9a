"""The socket table: bulk sock_diag decoding (pure, on literal bytes) and the live
table checked against two independent readers, pyroute2's generic netlink parser
and ss(8), on a namespace holding known sockets."""

from __future__ import annotations

import ipaddress
import socket
import struct
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace

import pytest

from tcpceiling.analysis.analyze import analyze, evaluate, read_snapshot
from tcpceiling.analysis.model import Endpoint, Scenario
from tcpceiling.host import diag, sockets
from tcpceiling.host.netns import inside
from tcpceiling.host.roots import Roots
from tcpceiling.results import to_data


def msg(state: int, sport: int, dport: int, src: str, dst: str, attrs: int = 0) -> bytes:
    """One IPv4 inet_diag message as the kernel lays it out, with `attrs` bytes after."""
    body = struct.pack("=BBBB", socket.AF_INET, state, 0, 0) + struct.pack(">HH", sport, dport)
    body += socket.inet_aton(src) + bytes(12) + socket.inet_aton(dst) + bytes(12)
    body += bytes(12) + struct.pack("=IIIII", 0, 3, 128, 0, 4242) + bytes(attrs)
    return struct.pack("=IHHII", 16 + len(body), diag.TCPDIAG_GETSOCK, 2, 1, 0) + body


DONE = struct.pack("=IHHIIi", 20, diag.NLMSG_DONE, 2, 1, 0, 0)


@pytest.mark.parametrize(
    ("buffer", "states", "done"),
    [
        (b"", [], False),
        (DONE, [], True),
        (msg(1, 40000, 80, "10.0.0.1", "10.0.0.2", 36) * 3, [1, 1, 1], False),
        # TIME_WAIT entries carry no attributes: lengths alternate within one dump
        (
            msg(1, 1, 80, "10.0.0.1", "10.0.0.2", 36)
            + msg(6, 2, 80, "10.0.0.1", "10.0.0.2")
            + msg(1, 3, 80, "10.0.0.1", "10.0.0.2", 36) * 20
            + msg(6, 4, 80, "10.0.0.1", "10.0.0.2") * 3
            + DONE,
            [1, 6] + [1] * 20 + [6] * 3,
            True,
        ),
        (msg(10, 80, 0, "0.0.0.0", "0.0.0.0", 8) * 600, [10] * 600, False),
    ],
)
def test_decode_runs_of_any_length(buffer: bytes, states: list[int], done: bool) -> None:
    out: list[diag.Row] = []
    assert diag.decode(buffer, out) is done
    assert [r[diag.STATE] for r in out] == states
    if out:
        r = out[-1]
        assert diag.address(r[diag.FAMILY], r[diag.SRC]) == (
            "0.0.0.0" if r[3] == 10 else "10.0.0.1"
        )
        assert (r[diag.RQUEUE], r[diag.WQUEUE], r[diag.INODE]) == (3, 128, 4242)


MIXED = (
    msg(1, 1, 80, "10.0.0.1", "10.0.0.2", 36)
    + msg(6, 2, 80, "10.0.0.1", "10.0.0.2")
    + msg(1, 3, 81, "10.0.0.1", "10.0.0.2", 36) * 20
    + msg(6, 4, 80, "10.0.0.3", "10.0.0.2") * 3
    + msg(1, 5, 80, "10.0.0.1", "10.0.0.2", 36) * 300
    + DONE
)


def test_counting_equals_decoding_then_counting() -> None:
    """diag.counts's per-buffer counter gives what decode() and a count of its rows
    give, runs of alternating lengths included (TIME_WAIT entries carry no attributes)."""
    rows: list[diag.Row] = []
    keys: Counter[diag.Key] = Counter()
    assert diag.decode(MIXED, rows) is diag.count_into(MIXED, keys) is True
    every, tw = sockets._tuple_counts(rows)
    assert sockets._key_counts(keys) == (every, tw)
    assert every == {
        ("10.0.0.1", "10.0.0.2", 80): 302,  # 1 + 1 TIME_WAIT + 300
        ("10.0.0.1", "10.0.0.2", 81): 20,
        ("10.0.0.3", "10.0.0.2", 80): 3,
    }
    assert tw == {("10.0.0.1", "10.0.0.2", 80): 1, ("10.0.0.3", "10.0.0.2", 80): 3}


def test_decode_raises_the_kernels_error() -> None:
    err = struct.pack("=IHHIIi", 20, diag.NLMSG_ERROR, 0, 1, 0, -22)
    with pytest.raises(OSError, match="Invalid argument"):
        diag.decode(err, [])


@pytest.mark.parametrize(
    ("dests", "expected"),
    [
        ((), b""),
        # D_COND yes=16 (next op), no=20 (past the end: no match); AF_INET /32 port 80
        (
            (diag.Destination("10.0.0.2", 80),),
            bytes([8, 16, 20, 0, 2, 32, 0, 0]) + struct.pack("=i", 80) + bytes([10, 0, 0, 2]),
        ),
        # a port of -1 matches any port
        (
            (diag.Destination("10.0.0.2", -1),),
            bytes([8, 16, 20, 0, 2, 32, 0, 0]) + struct.pack("=i", -1) + bytes([10, 0, 0, 2]),
        ),
    ],
)
def test_bytecode_literal(dests: tuple[diag.Destination, ...], expected: bytes) -> None:
    assert diag.bytecode(dests) == expected


def test_bytecode_or_jumps_over_the_rest() -> None:
    a, b = diag.Destination("10.0.0.2", 80), diag.Destination("::1", 443)
    code = diag.bytecode((a, b))
    first, jmp, rest = code[:16], code[16:20], code[20:]
    assert first[:4] == bytes([8, 16, 20, 0]) and rest == diag.bytecode((b,))
    assert struct.unpack("=BBH", jmp) == (diag.INET_DIAG_BC_JMP, 4, len(rest) + 4)
    assert len(rest) == 4 + 8 + 16


@pytest.mark.parametrize(
    ("family", "raw", "text"),
    [
        (socket.AF_INET, socket.inet_aton("127.0.0.2") + bytes(12), "127.0.0.2"),
        (socket.AF_INET6, socket.inet_pton(socket.AF_INET6, "::1"), "::1"),
        (socket.AF_INET6, socket.inet_pton(socket.AF_INET6, "::ffff:127.0.0.1"), "127.0.0.1"),
    ],
)
def test_address(family: int, raw: bytes, text: str) -> None:
    assert diag.address(family, raw) == text


# -- live ------------------------------------------------------------------------------------


def reference_entries() -> list[sockets.SocketEntry]:
    """How the table was read before: every socket through pyroute2's DiagSocket."""
    from pyroute2 import DiagSocket

    def addr(text: str) -> str:
        ip = ipaddress.ip_address(text)
        mapped = getattr(ip, "ipv4_mapped", None)
        return str(mapped or ip)

    out = []
    for family in (socket.AF_INET, socket.AF_INET6):
        with DiagSocket() as ds:
            ds.bind()
            for m in ds.get_sock_stats(family=family, states=0xFFF):
                out.append(
                    sockets.SocketEntry(
                        sockets.TCP_STATES[m["idiag_state"]],
                        addr(m["idiag_src"]),
                        m["idiag_sport"],
                        addr(m["idiag_dst"]),
                        m["idiag_dport"],
                    )
                )
    return out


class Held:
    """Sockets of known states in a namespace: established pairs, client TIME_WAIT,
    IPv6, and an IPv4-mapped IPv6 client; kept open until close()."""

    def __init__(self, n: int) -> None:
        self.socks: list[socket.socket] = []
        ls = self.listen(socket.AF_INET, ("127.0.0.1", 7000))
        for _ in range(n):
            self.pair(ls, socket.AF_INET, ("127.0.0.1", 7000))
        # client first, then server: the client's end waits in TIME_WAIT
        for _ in range(50):
            c, s = self.pair(ls, socket.AF_INET, ("127.0.0.1", 7000))
            c.close()
            s.close()
        l6 = self.listen(socket.AF_INET6, ("::", 7001))
        for _ in range(20):
            self.pair(l6, socket.AF_INET6, ("::1", 7001))
        for _ in range(5):
            self.pair(l6, socket.AF_INET6, ("::ffff:127.0.0.1", 7001))
        time.sleep(0.3)

    def listen(self, family: int, addr: tuple[str, int]) -> socket.socket:
        s = socket.socket(family)
        s.bind(addr)
        s.listen(4096)
        self.socks.append(s)
        return s

    def pair(
        self, ls: socket.socket, family: int, addr: tuple[str, int]
    ) -> tuple[socket.socket, socket.socket]:
        c = socket.socket(family)
        c.connect(addr)
        s = ls.accept()[0]
        self.socks += [c, s]
        return c, s

    def close(self) -> None:
        for s in self.socks:
            s.close()


@pytest.fixture
def held(netns: str) -> Iterator[str]:
    """Sockets held by a thread inside `netns` (the thread's netns is what counts)."""
    ready, done = threading.Event(), threading.Event()

    def body() -> None:
        with inside(netns):
            h = Held(3000)
            ready.set()
            done.wait(60)
            h.close()

    t = threading.Thread(target=body)
    t.start()
    assert ready.wait(60)
    try:
        yield netns
    finally:
        done.set()
        t.join()


def table_counts(
    table: sockets.SocketTable,
) -> tuple[Counter[sockets.Tuple3], Counter[sockets.Tuple3], frozenset[int]]:
    return table.toward, table.time_wait, table.listen_ports


def test_full_table_equals_pyroute2_and_ss(held: str) -> None:
    with inside(held):
        fast = sockets.read_live(None)
        ref = sockets.SocketTable.from_entries(reference_entries(), "pyroute2")
        entries = sockets.live_entries()
    assert table_counts(fast) == table_counts(ref)
    assert sum(fast.toward.values()) == 2 * 3000 + 50 + 2 * 25
    assert sum(fast.time_wait.values()) == 50
    assert fast.toward[("127.0.0.1", "127.0.0.1", 7000)] == 3050
    assert fast.toward[("127.0.0.1", "127.0.0.1", 7001)] == 5  # the IPv4-mapped clients
    ss = subprocess.run(
        ["ip", "netns", "exec", held, "ss", "-Htan"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert len(entries) == len(ss)
    assert Counter(e.state for e in entries)["TIME_WAIT"] == sum(
        1 for line in ss if line.startswith("TIME-WAIT")
    )


def test_scoped_table_counts_only_its_destinations(held: str) -> None:
    """The kernel's filter: toward an unrelated destination nothing is decoded."""
    with inside(held):
        none = diag.dump(sockets.CONNECTED, (diag.Destination("192.0.2.1", 443),))
        one = sockets.read_live([("127.0.0.1", 7000), ("::1", 7001)])
        full = sockets.read_live(None)
    assert none == []
    for dst in (("127.0.0.1", 7000), ("::1", 7001)):
        assert one.used_toward(*dst, None) == full.used_toward(*dst, None)
    assert one.used_toward("127.0.0.1", 7000, None) == (3050, 50)
    with pytest.raises(ValueError, match="was read for"):
        one.used_toward("127.0.0.1", 7002, None)


def test_analyze_with_the_fast_table_equals_the_old_way(held: str) -> None:
    """Every scenario's output computed with the scoped fast table equals the one
    computed from the pyroute2 table of every socket (the old way)."""
    dests = (Endpoint("127.0.0.1", 7000), Endpoint("::1", 7001), Endpoint("192.0.2.1", 443))
    scenarios = [
        Scenario(role="client", connect=dests),
        Scenario(role="client", connect=dests[:1], sources=("127.0.0.1", "127.0.0.2")),
        Scenario(role="server"),
    ]
    snap, routes = read_snapshot(Roots(), netns=held, destinations=dests)
    with inside(held):
        old = replace(
            snap, sockets=sockets.SocketTable.from_entries(reference_entries(), sockets.SOURCE)
        )
    for sc in scenarios:
        assert to_data(evaluate(snap, sc, routes)) == to_data(evaluate(old, sc, routes))
    ports = analyze(scenarios[:1], netns=held).scenarios[0].constraint("ports")
    # 3050 toward :7000 less its 50 TIME_WAIT (tcp_tw_reuse 2 reuses them on
    # loopback), 20 toward [::1]:7001 (the IPv4-mapped five came from 127.0.0.1)
    assert ports.in_use == 3000 + 20

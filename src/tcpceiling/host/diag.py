"""TCP sock_diag dumps (NETLINK_SOCK_DIAG, linux/inet_diag.h), decoded in bulk.

A busy host holds a million sockets; decoding each netlink message in Python costs
about 130 us a socket through pyroute2's generic parser (2 minutes a million). Here
the kernel does the selecting (a state mask, and an inet_diag bytecode filter on
destinations, the one ss(8) compiles for `dst`), and the fixed-size part of each
`struct inet_diag_msg` is cut out with struct.iter_unpack over runs of equally long
messages, so Python does C-speed work per socket. Full sockets of one dump carry the
same attributes (INET_DIAG_SHUTDOWN, _MARK, _CGROUP_ID, ...), so their messages have
one length; TIME_WAIT and SYN_RECV entries carry none and end a run.

Layout (include/uapi/linux/inet_diag.h, include/uapi/linux/netlink.h):
  nlmsghdr       u32 len, u16 type, u16 flags, u32 seq, u32 pid          16 bytes
  inet_diag_msg  u8 family, state, timer, retrans                           4
    inet_diag_sockid  be16 sport, dport; be32 src[4], dst[4]; u32 if, cookie[2]  48
    u32 expires, rqueue, wqueue, uid, inode                                20
"""

from __future__ import annotations

import os
import socket
import struct
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from operator import itemgetter
from typing import Final

from tcpceiling.errors import HostError

NETLINK_SOCK_DIAG = 4
TCPDIAG_GETSOCK = 18
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
INET_DIAG_REQ_BYTECODE = 1
INET_DIAG_BC_JMP = 1
INET_DIAG_BC_S_GE = 2
INET_DIAG_BC_S_LE = 3
INET_DIAG_BC_D_COND = 8

#: The fixed part of one message: nlmsg_len, nlmsg_type, family, state, sport and
#: dport (network order, as 2 bytes), src, dst (16 bytes each), rqueue, wqueue, inode.
ROW = "=IH10xBB2x2s2s16s16s12x4xII4xI"
ROW_SIZE = struct.calcsize(ROW)  # 88
HEADER = struct.Struct("=IHHII")
_LENGTH_KIND = itemgetter(0, 1)
#: Messages cut out per iter_unpack call: a mismatch (another length) costs at most this.
WINDOW = 256
RECV_BYTES = 1 << 20

#: A decoded row: (nlmsg_len, nlmsg_type, family, state, sport, dport, src, dst,
#: rqueue, wqueue, inode), ports and addresses still in network byte order (decode the
#: few distinct ones with `port` and `address`); the indices name the fields.
Row = tuple[int, int, int, int, bytes, bytes, bytes, bytes, int, int, int]
FAMILY: Final = 2
STATE: Final = 3
SPORT: Final = 4
DPORT: Final = 5
SRC: Final = 6
DST: Final = 7
RQUEUE: Final = 8
WQUEUE: Final = 9
INODE: Final = 10


@dataclass(frozen=True)
class Destination:
    """A bytecode condition: sockets whose remote end is host:port."""

    host: str
    port: int


def states_mask(states: Iterable[int]) -> int:
    mask = 0
    for s in states:
        mask |= 1 << s
    return mask


def _cond(dest: Destination) -> bytes:
    """One INET_DIAG_BC_D_COND op: struct inet_diag_bc_op {u8 code, u8 yes, u16 no}
    then struct inet_diag_hostcond {u8 family, u8 prefix_len, int port, addr[]}."""
    family = socket.AF_INET6 if ":" in dest.host else socket.AF_INET
    addr = socket.inet_pton(family, dest.host)
    cond = struct.pack("=BBxxi", family, len(addr) * 8, dest.port) + addr
    size = 4 + len(cond)
    return struct.pack("=BBH", INET_DIAG_BC_D_COND, size, size + 4) + cond


def either(first: bytes, rest: bytes) -> bytes:
    """`first` OR `rest` (ss's OR: first; a JMP over rest on success; rest). Each part
    must fail by jumping 4 bytes past its own end: past `first` that lands on `rest`,
    past the last part it lies past the program's end, which the kernel reads as "no
    match" (inet_diag_bc_run, net/ipv4/inet_diag.c)."""
    if not rest:
        return first
    return first + struct.pack("=BBH", INET_DIAG_BC_JMP, 4, len(rest) + 4) + rest


def bytecode(dests: tuple[Destination, ...]) -> bytes:
    """Match any of `dests`, one condition each, joined by either()."""
    if not dests:
        return b""
    return either(_cond(dests[0]), bytecode(dests[1:]))


def sport_range(low: int, high: int) -> bytes:
    """Sockets whose local port lies in [low, high]: S_GE then S_LE, each an op and
    a second op carrying the port in its `no` field; a failed test jumps past the
    program's end, which the kernel reads as no match (inet_diag_bc_run; ss compiles
    `sport >= :LOW and sport <= :HIGH` the same way)."""
    ge = struct.pack("=BBHBBH", INET_DIAG_BC_S_GE, 8, 16 + 4, 0, 0, low)
    le = struct.pack("=BBHBBH", INET_DIAG_BC_S_LE, 8, 8 + 4, 0, 0, high)
    return ge + le


def sport_any(ports: tuple[int, ...]) -> bytes:
    """Sockets whose local port is any of `ports`: one sport_range(p, p) block per port
    (its failures jump 4 bytes past the block), joined by either()."""
    if not ports:
        return b""
    return either(sport_range(ports[0], ports[0]), sport_any(ports[1:]))


def request(states: int, program: bytes = b"", seq: int = 1) -> bytes:
    """nlmsghdr (TCPDIAG_GETSOCK) + struct inet_diag_req (+ INET_DIAG_REQ_BYTECODE).

    The older request form is the one that dumps IPv4 and IPv6 in one walk of the
    established hash (inet_diag_dump_compat sets sdiag_family AF_UNSPEC), as ss(8)
    uses it; each walk costs ~0.12 s at a million sockets, whatever it matches."""
    req = struct.pack("=4x48xII", states, 0)
    if program:
        req += struct.pack("=HH", 4 + len(program), INET_DIAG_REQ_BYTECODE) + program
    return HEADER.pack(16 + len(req), TCPDIAG_GETSOCK, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + req


def _walk(buf: bytes | memoryview, take: Callable[[memoryview, int, int, int], int]) -> bool:
    """The messages of one receive buffer, in runs of one length; True at NLMSG_DONE.

    `take(part, length, stride, count)` consumes a window of `count` messages of
    `stride` bytes and returns how many of its leading ones are socket messages of
    `length`. The window doubles while a run lasts and shrinks to twice the last run
    when a message of another length ends it (TIME_WAIT entries carry no
    attributes), so mixed runs waste at most about as much as they decode."""
    mv = memoryview(buf)
    off, end, window = 0, len(mv), 8
    while off + 16 <= end:
        length, kind, _flags, _seq, _pid = HEADER.unpack_from(mv, off)
        if kind == NLMSG_DONE:
            return True
        if kind == NLMSG_ERROR:
            code = -struct.unpack_from("=i", mv, off + 16)[0]
            raise OSError(code, f"sock_diag: {os.strerror(code)}")
        stride = (length + 3) & ~3
        if length < ROW_SIZE or kind != TCPDIAG_GETSOCK:  # not a socket: skip it
            off += max(16, stride)
            continue
        count = min(window, (end - off) // stride)
        good = take(mv[off : off + count * stride], length, stride, count)
        off += good * stride
        window = min(WINDOW, window * 2) if good == count else max(4, 2 * good)
    return False


def decode(buf: bytes | memoryview, out: list[Row]) -> bool:
    """Append the rows of one receive buffer to `out`; True at NLMSG_DONE. Runs of
    messages of one length go through struct.iter_unpack (_walk)."""

    def take(part: memoryview, length: int, stride: int, count: int) -> int:
        fmt = ROW if stride == ROW_SIZE else f"{ROW}{stride - ROW_SIZE}x"
        rows = list(struct.iter_unpack(fmt, part))
        good = _same_length(rows, length)
        out.extend(rows if good == count else rows[:good])
        return good

    return _walk(buf, take)


#: The fields a per-tuple count needs: nlmsg_len, nlmsg_type, family, state, dport,
#: src, dst (the rest of the message skipped: no bytes object made for it).
KEY = "=IH10xBB2x2x2s16s16s"
KEY_SIZE = struct.calcsize(KEY)  # 56
#: A counted key: (nlmsg_len, nlmsg_type, family, state, dport, src, dst).
Key = tuple[int, int, int, int, bytes, bytes, bytes]


def count_into(buf: bytes | memoryview, out: Counter[Key]) -> bool:
    """Count the sockets of one receive buffer by Key into `out`; True at NLMSG_DONE.
    decode()'s runs, counted at C speed (Counter over struct.iter_unpack) without a
    row per socket: a window whose keys all have its length is taken whole, else its
    leading part of that length."""

    def take(part: memoryview, length: int, stride: int, count: int) -> int:
        fmt = f"{KEY}{stride - KEY_SIZE}x"
        keys = Counter(struct.iter_unpack(fmt, part))
        if set(map(_LENGTH_KIND, keys)) == {(length, TCPDIAG_GETSOCK)}:
            out.update(keys)
            return count
        rows = list(struct.iter_unpack(fmt, part))
        good = _same_length(rows, length)
        out.update(rows[:good])
        return good

    return _walk(buf, take)


def counts(states: int, dests: tuple[Destination, ...] | None = None) -> Counter[Key]:
    """dump()'s sockets counted by Key instead of listed: what a per-tuple count of a
    large table needs (measured: benchmarks/proxy_scale.py)."""
    out: Counter[Key] = Counter()
    if dests is None or dests:
        _receive(request(states, bytecode(dests or ())), lambda part: count_into(part, out))
    return out


def _receive(req: bytes, each: Callable[[memoryview], bool]) -> None:
    """Send one dump request and hand every receive buffer to `each` until it says done."""
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as s:
            s.bind((0, 0))
            s.send(req)
            buf = bytearray(RECV_BYTES)
            while True:
                n = s.recv_into(buf)
                if n == 0 or each(memoryview(buf)[:n]):
                    return
    except OSError as exc:
        raise HostError(f"cannot read the socket table (sock_diag): {exc}") from exc


def _same_length(rows: list[Row], length: int) -> int:
    """How many leading rows are socket messages of `length` (all, in the usual case,
    which one pass at C speed confirms)."""
    if set(map(_LENGTH_KIND, rows)) == {(length, TCPDIAG_GETSOCK)}:
        return len(rows)
    for i, row in enumerate(rows):
        if row[0] != length or row[1] != TCPDIAG_GETSOCK:
            return i
    return len(rows)


def dump(
    states: int, dests: tuple[Destination, ...] | None = None, program: bytes = b""
) -> list[Row]:
    """Every TCP socket (IPv4 and IPv6) in one of `states` (a bit mask of TCP state
    numbers) in the calling thread's netns: all, only those toward `dests`, or only
    those a bytecode `program` matches."""
    out: list[Row] = []
    if dests is None or dests:
        _receive(request(states, program or bytecode(dests or ())), lambda part: decode(part, out))
    return out


def port(raw: bytes) -> int:
    return int.from_bytes(raw, "big")


def address(family: int, raw: bytes) -> str:
    """The address as text; an IPv4-mapped IPv6 address as the IPv4 one it stands for."""
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[:4])
    if raw[:12] == b"\0" * 10 + b"\xff\xff":
        return socket.inet_ntop(socket.AF_INET, raw[12:16])
    return socket.inet_ntop(socket.AF_INET6, raw)

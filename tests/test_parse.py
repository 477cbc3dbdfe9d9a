"""Table tests of the pure parsers, and a property: arbitrary text never raises
anything but ParseError."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcpceiling.errors import ParseError
from tcpceiling.host import parse
from tcpceiling.host.sockets import parse_sockets_json

LIMITS = """Limit                     Soft Limit           Hard Limit           Units
Max cpu time              unlimited            unlimited            seconds
Max stack size            8388608              unlimited            bytes
Max processes             96364                96364                processes
Max open files            1024                 524288               files
"""

SOCKSTAT = """sockets: used 8
TCP: inuse 1 orphan 2 tw 6 alloc 3 mem 170
UDP: inuse 0 mem 0
"""

NETSTAT = """TcpExt: SyncookiesSent ListenOverflows ListenDrops
TcpExt: 0 12 14
IpExt: InOctets
IpExt: 999
"""


@pytest.mark.parametrize(
    ("fn", "text", "expected"),
    [
        (parse.parse_int, " 4096\n", 4096),
        (parse.parse_port_range, "32768\t60999\n", (32768, 60999)),
        (parse.parse_port_range, "60000 60099", (60000, 60099)),
        (parse.parse_port_list, "\n", frozenset()),
        (parse.parse_port_list, "8080,9000-9002\n", frozenset({8080, 9000, 9001, 9002})),
        (parse.parse_file_nr, "8201\t0\t2466165\n", parse.FileNr(8201, 2466165)),
        (parse.parse_loadavg_tasks, "0.09 0.05 0.01 1/77 2283\n", 77),
        (parse.parse_cgroup_value, "max\n", None),
        (parse.parse_cgroup_value, "9223372036854771712\n", None),
        (parse.parse_cgroup_value, "536870912\n", 536870912),
        (parse.parse_sockstat, SOCKSTAT, parse.Sockstat(1, 2, 6, 3, 170)),
        (
            parse.parse_proc_cgroup,
            "4:memory:/a/b\n2:cpu,cpuacct:/\n0::/user.slice\n",
            {"memory": "/a/b", "cpu": "/", "cpuacct": "/", "": "/user.slice"},
        ),
        (
            parse.parse_netstat,
            NETSTAT,
            {
                "TcpExt.SyncookiesSent": 0,
                "TcpExt.ListenOverflows": 12,
                "TcpExt.ListenDrops": 14,
                "IpExt.InOctets": 999,
            },
        ),
    ],
)
def test_parsers(fn: Callable[[str], Any], text: str, expected: Any) -> None:
    assert fn(text) == expected


def test_parse_limits() -> None:
    limits = parse.parse_limits(LIMITS)
    assert limits.nofile == parse.RLimit(1024, 524288)
    assert limits.stack == parse.RLimit(8388608, None)
    assert limits.nproc.soft == 96364


def test_parse_status_caps() -> None:
    text = "Name:\tx\nUid:\t1000\t1000\t1000\t1000\nThreads:\t3\nCapEff:\t000001fffeffffff\n"
    st_ = parse.parse_status(text)
    assert (st_.uid, st_.threads) == (1000, 3)
    assert st_.has_cap(21) and not st_.has_cap(24)  # SYS_ADMIN yes, SYS_RESOURCE no


def test_parse_meminfo_bytes() -> None:
    text = "MemTotal: 100 kB\nMemFree: 1 kB\nMemAvailable: 50 kB\nSlab: 7 kB\n"
    assert parse.parse_meminfo(text) == parse.Meminfo(102400, 51200, 7168, 1024)
    split = text + "SReclaimable: 2 kB\nSUnreclaim: 5 kB\n"
    m = parse.parse_meminfo(split)
    assert (m.s_reclaimable, m.s_unreclaim) == (2048, 5120)


def test_parse_slabinfo_effective_size() -> None:
    text = (
        "slabinfo - version: 2.1\n# name <active_objs> ...\n"
        "TCP 26 26 2368 13 8 : tunables 0 0 0 : slabdata 2 2 0\n"
    )
    tcp = parse.parse_slabinfo(text)["TCP"]
    assert tcp.object_size == 2368 and round(tcp.effective_size) == 2521  # docs/limits.md §4


@pytest.mark.parametrize(
    ("links", "expected"),
    [
        ({}, {}),
        ({"TCP": None, "filp": None}, {}),  # caches of their own
        ({"lsm_file_cache": ":0000024"}, {}),  # merged, but with no other socket cache
        (  # as on this machine (Linux 6.18): one 128-byte cache under three names
            {
                "eventpoll_epi": ":A-0000128",
                "tcp_bind_bucket": ":A-0000128",
                "tcp_bind2_bucket": ":A-0000128",
                "eventpoll_pwq": ":A-0000064",
                "TCP": None,
            },
            {
                "eventpoll_epi": ("tcp_bind_bucket", "tcp_bind2_bucket"),
                "tcp_bind_bucket": ("eventpoll_epi", "tcp_bind2_bucket"),
                "tcp_bind2_bucket": ("eventpoll_epi", "tcp_bind_bucket"),
            },
        ),
    ],
)
def test_slab_aliases(links: dict[str, str | None], expected: dict[str, tuple[str, ...]]) -> None:
    assert parse.slab_aliases(links) == expected


@pytest.mark.parametrize(
    ("fn", "text"),
    [
        (parse.parse_port_range, "60000"),
        (parse.parse_port_range, "70000 80000"),
        (parse.parse_port_range, "61000 60000"),
        (parse.parse_port_list, "1-x"),
        (parse.parse_limits, "Max open files 1024\n"),
        (parse.parse_sockstat, "UDP: inuse 0\n"),
        (parse.parse_sockstat, "TCP: inuse\n"),
        (parse.parse_status, "Uid: 0\n"),
        (parse.parse_netstat, "TcpExt: A B\nIpExt: 1 2\n"),
        (parse.parse_file_nr, "1 2"),
    ],
)
def test_parsers_reject_malformed(fn: Callable[[str], Any], text: str) -> None:
    with pytest.raises(ParseError):
        fn(text)


PARSERS: list[Callable[[str], Any]] = [
    parse.parse_int,
    parse.parse_port_range,
    parse.parse_port_list,
    parse.parse_limits,
    parse.parse_status,
    parse.parse_meminfo,
    parse.parse_sockstat,
    parse.parse_file_nr,
    parse.parse_loadavg_tasks,
    parse.parse_proc_cgroup,
    parse.parse_cgroup_value,
    parse.parse_slabinfo,
    parse.parse_netstat,
    parse.parse_flat_keyed,
    parse_sockets_json,
]

FRAGMENTS = st.sampled_from(
    [
        "TCP:",
        "inuse",
        "Max open files",
        "unlimited",
        "Uid:",
        "CapEff:",
        "MemTotal:",
        "kB",
        ":",
        "\t",
        "\n",
        " ",
        "-",
        ",",
        "/",
        "0",
        "65536",
        "ff",
        "max",
        "[",
        "{",
        "}",
        "]",
    ]
)
TEXT = st.one_of(st.text(), st.lists(FRAGMENTS | st.text(max_size=4)).map("".join))


@settings(max_examples=300, deadline=None)
@given(TEXT)
def test_parsers_raise_only_parse_error(text: str) -> None:
    for fn in PARSERS:
        with contextlib.suppress(ParseError):
            fn(text)


@pytest.mark.parametrize(
    ("pid_max", "pids", "room"),
    [
        (400, [], 399),  # pids 1..399
        (400, [1, 2], 397),  # a fresh namespace: everything above the last pid given
        (400, [1, 2, 7], 392),  # 3..6 were given and freed: not handed out again
        (4194304, [1, 300, 301, 5000], 4194304 - 1 - 5000 + (5000 - 300 - 2)),
        (32768, list(range(1, 32768)), 0),
        (1000, [999], 999 - 300),  # at the top: wraps to RESERVED_PIDS
    ],
)
def test_pid_room(pid_max: int, pids: list[int], room: int) -> None:
    assert parse.pid_room(pid_max, pids) == room

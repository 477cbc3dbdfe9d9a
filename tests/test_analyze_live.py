"""analyze on the live machine and inside real network namespaces."""

from __future__ import annotations

import resource

from tests.conftest import cli_json, constraint, needs_root, netns_sysctl, run_cli


def test_live_server_nofile_binds_at_the_soft_limit() -> None:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    s = cli_json("analyze", "--role", "server")["scenarios"][0]
    nofile = constraint(s, "nofile")
    assert nofile["capacity"] == soft
    if s["binding"] == "nofile":  # true on the project's machine (20000 fds, 24 GB)
        assert soft - 20 <= s["ceiling"] <= soft


def test_live_many_processes_memory_or_epoll_binds() -> None:
    s = cli_json("analyze", "--role", "server", "--processes", "1000")["scenarios"][0]
    mem, ep = constraint(s, "memory"), constraint(s, "epoll_watches")
    assert s["binding"] in ("memory", "epoll_watches")
    assert s["ceiling"] == min(mem["ceiling"], ep["ceiling"])
    available = mem["capacity"]
    idle = mem["details"]["per_connection_breakdown"][0]
    assert idle["item"] == "idle socket" and 3000 < idle["bytes"] < 5000
    # within 10 % of MemAvailable / the ≈3.8 KB measured per socket (docs/limits.md §4)
    assert abs(mem["ceiling"] - available / 3800) / (available / 3800) < 0.10


@needs_root
def test_netns_ports(netns: str) -> None:
    netns_sysctl(netns, "net.ipv4.ip_local_port_range", "60000 60099")
    base = ("analyze", "--netns", netns, "--role", "client", "--connect", "127.0.0.1:9000")

    def ports(*extra: str) -> int:
        s = cli_json(*base, *extra)["scenarios"][0]
        return int(constraint(s, "ports")["ceiling"])

    assert ports() == 100
    assert ports("--source-ip", "127.0.0.2", "--source-ip", "127.0.0.3") == 200
    assert ports("--connect", "127.0.0.1:9001") == 200


@needs_root
def test_netns_listener_and_connections_use_ports(netns: str) -> None:
    import socket

    from pyroute2 import netns as pnetns

    netns_sysctl(netns, "net.ipv4.ip_local_port_range", "60000 60099")
    pnetns.pushns(netns)
    try:
        held = socket.create_server(("127.0.0.1", 60050))  # a listener inside the range
        server = socket.create_server(("127.0.0.1", 9000))
        clients = [socket.create_connection(("127.0.0.1", 9000)) for _ in range(7)]
    finally:
        pnetns.popns()
    try:
        s = cli_json(
            "analyze", "--netns", netns, "--role", "client", "--connect", "127.0.0.1:9000"
        )["scenarios"][0]
        ports = constraint(s, "ports")
        assert ports["details"]["bind_held_in_range"] == 1
        assert ports["ceiling"] == 100 - 1 - 7
    finally:
        for sock in (held, server, *clients):
            sock.close()


def test_bad_input_exits_2() -> None:
    for args in (
        ["--connect", "nonsense"],
        ["--source-ip", "x.y"],
        ["--processes", "0"],
        ["--netns", "no-such-namespace-here"],
        ["--pid", "999999999"],
    ):
        code, _out, err = run_cli("analyze", *args)
        assert code == 2, (args, err)
        assert err.strip().count("\n") <= 5

"""Pure parts of server probing: protocol verdicts, evidence and attribution."""

from __future__ import annotations

import pytest

from tcpceiling.errors import ParseError
from tcpceiling.host.parse import parse_conntrack_stat
from tcpceiling.host.sockets import Listener
from tcpceiling.probe import checks
from tcpceiling.probe.evidence import ServerProcess, ServerSample, attribute

ECHO = checks.request("echo", "h")


#: A server's 101 for the fixed key (RFC 6455 §1.3: SHA-1 of key + GUID, base64).
WS_OK = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: " + checks.websocket_accept(checks.WS_KEY).encode() + b"\r\n\r\n"
)
_PG_FIELDS = b"SFATAL\0VFATAL\0C53300\0Msorry, too many clients already\0\0"
PG_TOO_MANY = b"E" + (4 + len(_PG_FIELDS)).to_bytes(4, "big") + _PG_FIELDS


def test_websocket_accept_is_rfc_6455s_example() -> None:
    assert checks.websocket_accept("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_mqtt_connect_and_pg_startup_bytes() -> None:
    assert checks.mqtt_connect().hex() == "100c00044d515454040200000000"
    startup = checks.pg_startup()
    assert int.from_bytes(startup[:4], "big") == len(startup)
    assert startup[4:8] == (196608).to_bytes(4, "big") and startup.endswith(b"postgres\0\0")


@pytest.mark.parametrize(
    ("check", "reply", "outcome", "text"),
    [
        ("http", b"HTTP/1.1 200 OK\r\nServer: nginx\r\n", "ok", ""),
        ("http", b"HTTP/1.0 404 Not Found\r\n", "ok", ""),
        ("http", b"HTTP/1.1 503 Busy\r\n", "error", "HTTP/1.1 503 Busy"),
        ("http", b"HTTP/1.1 200", "more", ""),
        ("http", b"SSH-2.0-OpenSSH\r\n", "error", "unexpected reply: SSH-2.0-OpenSSH"),
        ("redis", b"+PONG\r\n", "ok", ""),
        ("redis", b"-ERR max number of clients\r\n", "error", "-ERR max number of clients"),
        ("redis", b"+PO", "more", ""),
        ("memcached", b"VERSION 1.6.18\r\n", "ok", ""),
        ("memcached", b"SERVER_ERROR Too many\r\n", "error", "SERVER_ERROR Too many"),
        ("echo", ECHO, "ok", ""),
        ("echo", ECHO[:5], "more", ""),
        ("echo", b"nope\n", "error", "nope"),
        ("tls", bytes([22, 3, 3, 0, 90, 2]), "ok", ""),
        ("tls", bytes([21, 3, 3, 0, 2, 2, 40]), "error", "TLS alert 40"),
        ("tls", bytes([22, 3]), "more", ""),
        ("none", b"-ERR max number of clients reached\r\n", "more", ""),
        ("websocket", WS_OK, "ok", ""),
        ("websocket", WS_OK[:30], "more", ""),
        ("websocket", WS_OK.replace(b"Accept: ", b"Accept: x"), "error",
         "101 without the Sec-WebSocket-Accept of our key"),
        ("websocket", b"HTTP/1.1 503 Service Unavailable\r\n\r\n", "error",
         "HTTP/1.1 503 Service Unavailable"),
        ("mqtt", bytes([0x20, 2, 0, 0]), "ok", ""),
        ("mqtt", bytes([0x20, 2, 0, 3]), "error", "connection refused: server unavailable"),
        ("mqtt", bytes([0x20, 2]), "more", ""),
        ("mqtt", bytes([0x30, 2, 0, 0]), "error", "not a CONNACK (packet type 3)"),
        ("postgres", b"R\x00\x00\x00\x08\x00\x00\x00\x00", "ok", ""),  # AuthenticationOk
        ("postgres", b"R\x00\x00\x00\x0c\x00\x00\x00\x05salt", "ok", ""),  # asks MD5
        ("postgres", PG_TOO_MANY, "error", "FATAL: sorry, too many clients already"),
        ("postgres", PG_TOO_MANY[:12], "more", ""),
    ],
)  # fmt: skip
def test_verdicts(check: str, reply: bytes, outcome: str, text: str) -> None:
    v = checks.verdict(check, reply, checks.request(check, "h"))
    assert (v.outcome, v.text) == (outcome, text)


def test_requests() -> None:
    assert checks.request("none", "h") == b""
    assert checks.request("http", "example.org").startswith(b"GET / HTTP/1.1\r\nHost: example.org")
    assert checks.request("redis", "h") == b"*1\r\n$4\r\nPING\r\n"
    hello = checks.request("tls", "h")
    assert hello[0] == 22 and hello[5] == 1  # handshake record carrying ClientHello


# /proc/net/stat/nf_conntrack, the first 12 of its 17 columns.
CT_STAT = """\
entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop
00000010  00000000 00000000 00000000 00000003 0 0 00000000 00000000 00000001 0000000a 00000000
00000010  00000000 00000000 00000000 00000001 0 0 00000000 00000000 00000000 00000005 00000002
"""


def test_parse_conntrack_stat_sums_cpus_but_not_entries() -> None:
    ct = parse_conntrack_stat(CT_STAT)
    assert ct["entries"] == 16  # a gauge, repeated per CPU
    assert (ct["drop"], ct["early_drop"], ct["insert_failed"], ct["invalid"]) == (15, 2, 1, 4)
    with pytest.raises(ParseError):
        parse_conntrack_stat("entries drop\n00000001\n")


QUEUE_FULL = (Listener("127.0.0.1", 80, 17, 16, 1),)
AT_LIMIT = (ServerProcess(42, "echo", 299, 300, 300),)
ROOMY = (ServerProcess(42, "echo", 20, 300, 300),)


def sample(
    listeners: tuple[Listener, ...] = (), procs: tuple[ServerProcess, ...] = (), **c: int
) -> ServerSample:
    return ServerSample(dict(c), listeners, procs)


@pytest.mark.parametrize(
    ("kind", "replies", "after", "reason"),
    [
        ("error_reply", {"-ERR max number of clients reached": 20}, sample(), "server_reply"),
        ("closed", {"ERROR Too many open connections": 3}, sample(), "server_reply"),
        ("closed", {}, sample(), "server_closed"),
        ("closed", {}, sample(procs=AT_LIMIT), "server_nofile"),
        ("evicted", {}, sample(), "server_evicted"),
        ("silent", {}, sample(QUEUE_FULL, AT_LIMIT, ListenOverflows=5), "server_nofile"),
        ("silent", {}, sample(QUEUE_FULL, ROOMY, ListenOverflows=5), "backlog"),
        ("silent", {}, sample(procs=ROOMY), "server_silent"),
        ("timeout", {}, sample(ListenOverflows=9), "backlog"),
        ("timeout", {}, sample(ListenOverflows=0, conntrack_drop=4), "conntrack"),
        ("timeout", {}, sample(), "server_timeout"),
        ("refused", {}, sample(), "server_refused"),
        ("reset", {}, sample(), "server_reset"),
        ("reset", {}, sample(ListenOverflows=3), "backlog"),  # tcp_abort_on_overflow=1
    ],
)  # fmt: skip
def test_attribution(kind: str, replies: dict[str, int], after: ServerSample, reason: str) -> None:
    before = sample(ListenOverflows=0, conntrack_drop=0)
    stop = attribute(kind, replies, before, after)
    assert (stop.reason, stop.side) == (reason, "server")
    assert stop.detail and stop.evidence["failure"] == kind

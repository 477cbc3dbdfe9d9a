"""Service checks: one protocol request per connection and the verdict on the reply.

Pure functions on bytes, so each protocol is table-tested with literal replies.
A reply is "ok" (the server served the request), "error" (the server answered but
refused: redis "-ERR max number of clients reached", memcached "SERVER_ERROR",
an HTTP 5xx, a TLS alert) or "more" (incomplete: keep reading).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import ssl
import struct
from dataclasses import dataclass
from typing import Literal

CHECKS = (
    "none",
    "echo",
    "http",
    "redis",
    "memcached",
    "tls",
    "websocket",
    "mqtt",
    "postgres",
)
Outcome = Literal["ok", "error", "more"]
MAX_REPLY = 4096  # bytes looked at; a status line never needs more


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    text: str = ""  # the server's own words on an error (first line, trimmed)


def first_line(data: bytes) -> str:
    return data.split(b"\n", 1)[0].strip().decode("ascii", "replace")[:120]


def tls_client_hello() -> bytes:
    """A real ClientHello from the ssl module (memory BIOs: no socket, no certificate
    checks); one per worker, sent on every connection."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    out = ssl.MemoryBIO()
    obj = ctx.wrap_bio(ssl.MemoryBIO(), out)
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


#: RFC 6455 §1.3: the server proves it read the key by hashing it with this GUID.
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: A fixed key is allowed (only the server's answer to it is checked).
WS_KEY = base64.b64encode(b"tcpceiling-probe").decode()
#: MQTT 3.1.1 CONNACK return codes (§3.2.2.3): the broker's own words.
MQTT_REFUSALS = {
    1: "connection refused: unacceptable protocol version",
    2: "connection refused: identifier rejected",
    3: "connection refused: server unavailable",
    4: "connection refused: bad user name or password",
    5: "connection refused: not authorized",
}
#: Checks that are a connection's opening handshake: sending them again on a held
#: connection (--check-every) would break the protocol.
ONCE_ONLY = ("websocket", "mqtt", "postgres")
#: PostgreSQL authentication requests (protocol 3.0, message 'R'): a backend took
#: the connection and asks for a password; served, as far as connections go.
PG_AUTH = {0: "ok", 3: "cleartext password", 5: "MD5 password", 10: "SASL"}


def websocket_accept(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()


def mqtt_connect(keep_alive: int = 0) -> bytes:
    """MQTT 3.1.1 CONNECT, clean session, an empty client id (the broker assigns
    one, so connections never displace each other), keep-alive 0: off (§3.1.2.10),
    so the broker never drops a held connection for silence."""
    body = b"\x00\x04MQTT\x04\x02" + struct.pack(">H", keep_alive) + b"\x00\x00"
    return bytes([0x10, len(body)]) + body


def pg_startup(user: str = "postgres", database: str = "postgres") -> bytes:
    """StartupMessage, protocol 3.0: length, 196608, then user and database."""
    params = f"user\0{user}\0database\0{database}\0\0".encode()
    return struct.pack(">II", 8 + len(params), 196608) + params


def request(check: str, host: str) -> bytes:
    """What to send on a new connection ("none": nothing)."""
    if check == "websocket":
        return (
            f"GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {WS_KEY}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    if check == "mqtt":
        return mqtt_connect()
    if check == "postgres":
        return pg_startup()
    if check == "echo":
        return b"tcpceiling echo check\n"
    if check == "http":
        return f"GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: tcpceiling\r\n\r\n".encode()
    if check == "redis":
        return b"*1\r\n$4\r\nPING\r\n"
    if check == "memcached":
        return b"version\r\n"
    if check == "tls":
        return tls_client_hello()
    return b""


def _line_verdict(data: bytes, ok: tuple[bytes, ...], error: tuple[bytes, ...]) -> Verdict:
    if b"\n" not in data:
        return Verdict("more")
    if data.startswith(ok):
        return Verdict("ok")
    if data.startswith(error):
        return Verdict("error", first_line(data))
    return Verdict("error", "unexpected reply: " + first_line(data))


def _http(data: bytes) -> Verdict:
    """HTTP/1.x status line; 5xx means the server answered but would not serve."""
    if b"\n" not in data:
        return Verdict("more")
    parts = data.split(b" ", 2)
    if not data.startswith(b"HTTP/1.") or len(parts) < 2 or not parts[1].isdigit():
        return Verdict("error", "unexpected reply: " + first_line(data))
    return Verdict("error", first_line(data)) if parts[1].startswith(b"5") else Verdict("ok")


def _tls(data: bytes) -> Verdict:
    """A handshake record (22) carrying ServerHello (2); an alert record (21) is a refusal."""
    if len(data) < 6:
        return Verdict("more")
    if data[0] == 22 and data[5] == 2:
        return Verdict("ok")
    if data[0] == 21:
        return Verdict("error", f"TLS alert {data[6] if len(data) > 6 else '?'}")
    return Verdict("error", f"not TLS (first byte {data[0]})")


def _websocket(data: bytes) -> Verdict:
    """101 Switching Protocols with the Sec-WebSocket-Accept the key asks for."""
    if b"\r\n\r\n" not in data:
        return Verdict("more")
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    lines = head.split("\r\n")
    if not lines[0].startswith("HTTP/1.1 101"):
        return Verdict("error", first_line(data))
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    if headers.get("sec-websocket-accept") != websocket_accept(WS_KEY):
        return Verdict("error", "101 without the Sec-WebSocket-Accept of our key")
    return Verdict("ok")


def _mqtt(data: bytes) -> Verdict:
    """CONNACK: 0x20, remaining length 2, flags, return code (0 accepted)."""
    if len(data) < 4:
        return Verdict("more")
    if data[0] != 0x20:
        return Verdict("error", f"not a CONNACK (packet type {data[0] >> 4})")
    code = data[3]
    if code == 0:
        return Verdict("ok")
    return Verdict("error", MQTT_REFUSALS.get(code, f"connection refused: code {code}"))


def _postgres(data: bytes) -> Verdict:
    """'R' (an authentication request, or AuthenticationOk) means a backend took the
    connection; 'E' is an ErrorResponse: its severity and message are the words."""
    if len(data) < 5:
        return Verdict("more")
    kind, length = data[0:1], struct.unpack(">I", data[1:5])[0]
    if kind == b"R":
        return Verdict("ok") if len(data) >= 9 else Verdict("more")
    if kind != b"E":
        return Verdict("error", f"unexpected message {kind!r}")
    if len(data) < 1 + length:
        return Verdict("more")
    fields = {
        f[:1]: f[1:].decode("utf-8", "replace") for f in data[5 : 1 + length].split(b"\0") if f
    }
    return Verdict("error", f"{fields.get(b'S', 'ERROR')}: {fields.get(b'M', '')}".strip())


def verdict(check: str, data: bytes, sent: bytes) -> Verdict:
    """Judge what the server sent so far in answer to `sent`."""
    if check == "websocket":
        return _websocket(data)
    if check == "mqtt":
        return _mqtt(data)
    if check == "postgres":
        return _postgres(data)
    if check == "echo":
        if data.startswith(sent):
            return Verdict("ok")
        return Verdict("more") if sent.startswith(data) else Verdict("error", first_line(data))
    if check == "http":
        return _http(data)
    if check == "redis":
        return _line_verdict(data, (b"+PONG",), (b"-",))
    if check == "memcached":
        return _line_verdict(data, (b"VERSION ",), (b"SERVER_ERROR", b"ERROR", b"CLIENT_ERROR"))
    if check == "tls":
        return _tls(data)
    return Verdict("more")  # "none": keep what the server volunteers (a refusal, a banner)

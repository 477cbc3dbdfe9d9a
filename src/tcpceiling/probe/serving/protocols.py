"""Wire formats of the service checks: the bytes each protocol sends and a verdict
on what the server sent back. Pure functions on bytes, table-tested with literal
replies (tests/test_server_logic.py).

A verdict is "ok" (the server served the request), "error" (the server answered
but refused: a line protocol's error line (the servers' modules give theirs),
an HTTP 5xx, a TLS alert, a WebSocket close frame) or "more" (keep reading).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import re
import ssl
import struct
from dataclasses import dataclass
from typing import Literal

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


# -- WebSocket (RFC 6455) ------------------------------------------------------------
#: §1.3: the server proves it read the key by hashing it with this GUID.
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: A fixed key is allowed (only the server's answer to it is checked).
WS_KEY = base64.b64encode(b"tcpceiling-probe").decode()
WS_CLOSE, WS_PING, WS_PONG = 0x8, 0x9, 0xA
#: §5.3: every frame a client sends is masked; the key needs no secrecy here.
WS_MASK = b"tcpc"


def websocket_accept(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()


def websocket_upgrade(host: str, path: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {WS_KEY}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def ws_frame(opcode: int, payload: bytes = b"") -> bytes:
    """A final, masked client frame (control frames carry at most 125 bytes, §5.5)."""
    masked = bytes(b ^ WS_MASK[i % 4] for i, b in enumerate(payload[:125]))
    return bytes([0x80 | opcode, 0x80 | len(masked)]) + WS_MASK + masked


def ws_frames(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """The complete frames at the start of `data` as (opcode, payload), and the rest.
    Server frames are unmasked (§5.1); a masked one is unmasked all the same."""
    frames: list[tuple[int, bytes]] = []
    i = 0
    while len(data) - i >= 2:
        size, head = data[i + 1] & 0x7F, 2
        if size >= 126:
            wide = 2 if size == 126 else 8
            if len(data) - i < 2 + wide:
                break
            size = int.from_bytes(data[i + 2 : i + 2 + wide], "big")
            head += wide
        masked = bool(data[i + 1] & 0x80)
        key = data[i + head : i + head + 4] if masked else b""
        head += 4 if masked else 0
        if len(data) - i < head + size:
            break
        body = data[i + head : i + head + size]
        if masked:
            body = bytes(b ^ key[j % 4] for j, b in enumerate(body))
        frames.append((data[i] & 0x0F, body))
        i += head + size
    return frames, data[i:]


def ws_close_text(payload: bytes) -> str:
    """A close frame's status code and reason (§5.5.1), the server's words."""
    if len(payload) < 2:
        return "websocket close (no status)"
    reason = payload[2:].decode("utf-8", "replace")
    return f"websocket close {struct.unpack('>H', payload[:2])[0]} {reason}".strip()


def websocket_handshake(data: bytes) -> Verdict:
    """101 Switching Protocols with the Sec-WebSocket-Accept the key asks for. (A close
    frame right behind it, a server past its limit that upgrades and then closes with
    1013 Try Again Later, is a refusal heard while the connection settles: watch.py.)"""
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


def websocket_after_handshake(data: bytes) -> bytes:
    """The frames that came with the 101 (a ping the server sends at once)."""
    return data.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in data else b""


def websocket_pong(data: bytes) -> Verdict:
    """The answer to our ping: a pong; a close frame is a refusal in the server's words;
    data frames before the pong are skipped."""
    frames, _rest = ws_frames(data)
    for opcode, payload in frames:
        if opcode == WS_PONG:
            return Verdict("ok")
        if opcode == WS_CLOSE:
            return Verdict("error", ws_close_text(payload))
    return Verdict("more")


# -- MQTT 3.1.1 ------------------------------------------------------------------------
#: CONNACK return codes (§3.2.2.3): the broker's own words.
MQTT_REFUSALS = {
    1: "connection refused: unacceptable protocol version",
    2: "connection refused: identifier rejected",
    3: "connection refused: server unavailable",
    4: "connection refused: bad user name or password",
    5: "connection refused: not authorized",
}
MQTT_PINGREQ, MQTT_PINGRESP = b"\xc0\x00", b"\xd0\x00"  # §3.12, §3.13


def mqtt_connect(keep_alive: int = 0) -> bytes:
    """CONNECT, clean session, an empty client id (the broker assigns one, so
    connections never displace each other). Keep-alive 0 turns the broker's timer off
    (§3.1.2.10); a broker with a maximum (mosquitto's max_keepalive) refuses 0, so the
    check takes a keep-alive and then pings every held connection in time."""
    body = b"\x00\x04MQTT\x04\x02" + struct.pack(">H", keep_alive) + b"\x00\x00"
    return bytes([0x10, len(body)]) + body


def mqtt_connack(data: bytes) -> Verdict:
    """CONNACK: 0x20, remaining length 2, flags, return code (0 accepted)."""
    if len(data) < 4:
        return Verdict("more")
    if data[0] != 0x20:
        return Verdict("error", f"not a CONNACK (packet type {data[0] >> 4})")
    code = data[3]
    if code == 0:
        return Verdict("ok")
    return Verdict("error", MQTT_REFUSALS.get(code, f"connection refused: code {code}"))


def mqtt_pingresp(data: bytes) -> Verdict:
    if len(data) < 2:
        return Verdict("more")
    if data.startswith(MQTT_PINGRESP):
        return Verdict("ok")
    return Verdict("error", f"not a PINGRESP (packet type {data[0] >> 4})")


# -- line protocols ----------------------------------------------------------------------
def line_reply(data: bytes, ok: tuple[bytes, ...], error: tuple[bytes, ...]) -> Verdict:
    if b"\n" not in data:
        return Verdict("more")
    if data.startswith(ok):
        return Verdict("ok")
    if data.startswith(error):
        return Verdict("error", first_line(data))
    return Verdict("error", "unexpected reply: " + first_line(data))


def tls_server_hello(data: bytes) -> Verdict:
    """A handshake record (22) carrying ServerHello (2); an alert record (21) is a refusal."""
    if len(data) < 6:
        return Verdict("more")
    if data[0] == 22 and data[5] == 2:
        return Verdict("ok")
    if data[0] == 21:
        return Verdict("error", f"TLS alert {data[6] if len(data) > 6 else '?'}")
    return Verdict("error", f"not TLS (first byte {data[0]})")


def echo_reply(data: bytes, sent: bytes) -> Verdict:
    if data.startswith(sent):
        return Verdict("ok")
    return Verdict("more") if sent.startswith(data) else Verdict("error", first_line(data))


def expect_reply(
    data: bytes, expect: re.Pattern[bytes] | None, refuse: re.Pattern[bytes] | None
) -> Verdict:
    """The generic check: `refuse` matching is a refusal (the matching line is the
    server's words), `expect` matching is served; neither yet: keep reading (a reply
    that never matches is judged at the check's timeout)."""
    bad = refuse.search(data) if refuse else None
    if bad:
        return Verdict("error", first_line(data[data.rfind(b"\n", 0, bad.start()) + 1 :]))
    if expect and expect.search(data):
        return Verdict("ok")
    if len(data) >= MAX_REPLY:
        return Verdict("error", "no match in the reply: " + first_line(data))
    return Verdict("more")

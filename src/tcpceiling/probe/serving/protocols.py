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


def http_status(data: bytes) -> Verdict:
    """HTTP/1.x status line; 5xx means the server answered but would not serve."""
    if b"\n" not in data:
        return Verdict("more")
    parts = data.split(b" ", 2)
    if not data.startswith(b"HTTP/1.") or len(parts) < 2 or not parts[1].isdigit():
        return Verdict("error", "unexpected reply: " + first_line(data))
    return Verdict("error", first_line(data)) if parts[1].startswith(b"5") else Verdict("ok")


# -- HTTP/1.1 framing (RFC 9112 §6) -------------------------------------------------------
HEAD_END = b"\r\n\r\n"
BodyMode = Literal["length", "chunked", "close", "none"]


@dataclass
class HttpBody:
    """What is still to come of a response's body (RFC 9112 §6.3): `left` bytes of a
    Content-Length; a chunked body (a chunk's bytes and CRLF, a size line, the
    trailer); or everything until the server closes. `feed` takes the body's bytes
    and returns what follows it: the server's next words, never the body itself."""

    mode: BodyMode
    left: int = 0
    line: bytes = b""  # chunked: an incomplete size or trailer line
    trailer: bool = False  # chunked: past the last chunk, in the trailer

    @property
    def done(self) -> bool:
        return self.mode == "none"

    def feed(self, data: bytes) -> bytes:
        if self.mode == "length":
            used = min(self.left, len(data))
            self.left -= used
            if not self.left:
                self.mode = "none"
            return data[used:]
        if self.mode == "chunked":
            return self._chunked(data)
        return b"" if self.mode == "close" else data

    def _chunked(self, data: bytes) -> bytes:
        while data and self.mode == "chunked":
            if self.left:
                used = min(self.left, len(data))
                self.left, data = self.left - used, data[used:]
                continue
            line, nl, data = (self.line + data).partition(b"\n")
            if not nl:
                self.line = line[-1024:]  # a size line is short; keep only its tail
                return b""
            self.line = b""
            self._line(line.strip())
        return data

    def _line(self, line: bytes) -> None:
        """A size line (the size in hex, extensions after ';') or a trailer line."""
        if self.trailer:
            if not line:
                self.mode = "none"  # the empty line that ends the trailer
            return
        size = line.split(b";", 1)[0].strip()
        try:
            n = int(size, 16)
        except ValueError:
            self.mode = "close"  # not chunked after all: read to the close
            return
        if n == 0:
            self.trailer = True
        else:
            self.left = n + 2  # the chunk and its CRLF


def http_body(head: bytes) -> HttpBody:
    """How the body of a response with this head is framed (RFC 9112 §6.3): none for
    1xx, 204 and 304; chunked when Transfer-Encoding ends in chunked; else a
    Content-Length; else until the close."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 200
    if status < 200 or status in (204, 304):
        return HttpBody("none")
    fields: dict[bytes, bytes] = {}
    for ln in lines[1:]:
        name, colon, value = ln.partition(b":")
        if colon:
            fields[name.strip().lower()] = value.strip().lower()
    if fields.get(b"transfer-encoding", b"").split(b",")[-1].strip() == b"chunked":
        return HttpBody("chunked")
    length = fields.get(b"content-length", b"")
    if length.isdigit():
        return HttpBody("length", int(length)) if int(length) else HttpBody("none")
    return HttpBody("close")


def http_response(data: bytes) -> tuple[Verdict, HttpBody | None, bytes]:
    """A response framed before it is judged: its status line and headers whole (else
    "more"), the verdict on its status, then its body's framing fed with what came
    after the head: (verdict, the body still to come or None, what follows it)."""
    end = data.find(HEAD_END)
    if end < 0:
        if len(data) < MAX_REPLY:
            return Verdict("more"), None, b""
        return http_status(data), HttpBody("close"), b""  # a head too long: judge its line
    v = http_status(data[: end + 2])
    body = http_body(data[:end])
    rest = body.feed(data[end + len(HEAD_END) :])
    return v, (None if body.done else body), rest


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


# -- FastCGI (the FastCGI Specification 1.0, Open Market) --------------------------------
#: §8: record types and roles; §5.1: FCGI_KEEP_CONN asks the application to keep the
#: connection after the request, as a web server's pooled connection does.
FCGI_BEGIN_REQUEST, FCGI_END_REQUEST, FCGI_PARAMS, FCGI_STDIN = 1, 3, 4, 5
FCGI_STDOUT, FCGI_STDERR = 6, 7
FCGI_RESPONDER, FCGI_KEEP_CONN = 1, 1
#: §5.5: an END_REQUEST's protocolStatus other than REQUEST_COMPLETE is a refusal
FCGI_STATUS = {1: "FCGI_CANT_MPX_CONN", 2: "FCGI_OVERLOADED", 3: "FCGI_UNKNOWN_ROLE"}
_FCGI_HEADER = struct.Struct(">BBHHBx")


def fastcgi_record(kind: int, content: bytes, request_id: int = 1) -> bytes:
    """§3.3: version 1, type, request id, content length, no padding."""
    return _FCGI_HEADER.pack(1, kind, request_id, len(content), 0) + content


def _fcgi_length(n: int) -> bytes:
    """§3.4: a name or value length, one byte below 128, else four with the top bit."""
    return bytes([n]) if n < 128 else struct.pack(">I", n | 0x80000000)


def fastcgi_params(pairs: tuple[tuple[str, str], ...]) -> bytes:
    out = b""
    for name, value in pairs:
        n, v = name.encode(), value.encode()
        out += _fcgi_length(len(n)) + _fcgi_length(len(v)) + n + v
    return out


def fastcgi_request(path: str = "/ping") -> bytes:
    """A Responder's GET of `path` on a kept connection: BEGIN_REQUEST with
    FCGI_KEEP_CONN, the CGI parameters a web server sends (SCRIPT_FILENAME as nginx's
    fastcgi_params sets it), the empty PARAMS and STDIN records that end both streams."""
    params = (
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("REQUEST_METHOD", "GET"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("SCRIPT_FILENAME", path),
        ("SCRIPT_NAME", path),
        ("REQUEST_URI", path),
        ("QUERY_STRING", ""),
    )
    begin = struct.pack(">HB5x", FCGI_RESPONDER, FCGI_KEEP_CONN)
    return (
        fastcgi_record(FCGI_BEGIN_REQUEST, begin)
        + fastcgi_record(FCGI_PARAMS, fastcgi_params(params))
        + fastcgi_record(FCGI_PARAMS, b"")
        + fastcgi_record(FCGI_STDIN, b"")
    )


def fastcgi_reply(data: bytes) -> Verdict:
    """Served once a whole record of the application's answer arrived (STDOUT, STDERR,
    or END_REQUEST with REQUEST_COMPLETE): a process took the connection and ran the
    request, whatever its HTTP status; an END_REQUEST with another protocolStatus is
    the application's refusal (FCGI_OVERLOADED...)."""
    while len(data) >= _FCGI_HEADER.size:
        version, kind, _, length, padding = _FCGI_HEADER.unpack_from(data)
        if version != 1:
            return Verdict("error", f"not FastCGI (version byte {version})")
        if len(data) < _FCGI_HEADER.size + length:
            return Verdict("more")
        body = data[_FCGI_HEADER.size : _FCGI_HEADER.size + length]
        if kind == FCGI_END_REQUEST and len(body) >= 5 and body[4] in FCGI_STATUS:
            return Verdict("error", FCGI_STATUS[body[4]])
        if kind in (FCGI_STDOUT, FCGI_STDERR, FCGI_END_REQUEST):
            return Verdict("ok")
        data = data[_FCGI_HEADER.size + length + padding :]
    return Verdict("more")


# -- DNS over TCP (RFC 1035 §4.2.2, RFC 7766) ---------------------------------------------
#: a fixed query id: the reply to this query carries it back (RFC 1035 §4.1.1)
DNS_ID = 0x7463
_DNS_HEADER = struct.Struct(">HHHHHH")


def dns_query(name: str = "localhost.") -> bytes:
    """A recursion-desired query for NAME's A record, with TCP's two-byte length; a
    resolver answers localhost. itself (RFC 6761 §6.3), with no upstream asked."""
    labels = [part.encode("idna") for part in name.rstrip(".").split(".") if part]
    qname = b"".join(bytes([len(x)]) + x for x in labels) + b"\0"
    message = _DNS_HEADER.pack(DNS_ID, 0x0100, 1, 0, 0, 0) + qname + struct.pack(">HH", 1, 1)
    return struct.pack(">H", len(message)) + message


def dns_reply(data: bytes) -> Verdict:
    """Served: a whole response (QR set) to our id, whatever its RCODE: the server
    took the connection and answered; a reply to another id is not ours."""
    if len(data) < 2 + _DNS_HEADER.size:
        return Verdict("more")
    length = struct.unpack_from(">H", data)[0]
    ident, flags = struct.unpack_from(">HH", data, 2)
    if ident != DNS_ID or not flags & 0x8000:
        return Verdict("error", f"not a DNS response to our query (id {ident:#06x})")
    return Verdict("ok") if len(data) >= 2 + length else Verdict("more")

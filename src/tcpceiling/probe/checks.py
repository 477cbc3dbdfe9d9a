"""Service checks: one protocol request per connection and the verdict on the reply.

Pure functions on bytes, so each protocol is table-tested with literal replies.
A reply is "ok" (the server served the request), "error" (the server answered but
refused: redis "-ERR max number of clients reached", memcached "SERVER_ERROR",
an HTTP 5xx, a TLS alert) or "more" (incomplete: keep reading).
"""

from __future__ import annotations

import contextlib
import ssl
from dataclasses import dataclass
from typing import Literal

CHECKS = ("none", "echo", "http", "redis", "memcached", "tls")
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


def request(check: str, host: str) -> bytes:
    """What to send on a new connection ("none": nothing)."""
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


def verdict(check: str, data: bytes, sent: bytes) -> Verdict:
    """Judge what the server sent so far in answer to `sent`."""
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

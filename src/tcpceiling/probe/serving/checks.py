"""Service checks: what `--check SPEC` sends on each new connection, how the reply
is judged, what `--check-every` sends on a held one, and what the server may say
on a held connection (a WebSocket close frame, a ping to answer).

SPEC is a kind with an optional argument:
  none | echo | redis | memcached | tls | postgres
  http[:PATH]                GET PATH (default /) with keep-alive
  websocket[:PATH]           RFC 6455 upgrade of PATH (default /)
  mqtt[:KEEPALIVE]           MQTT 3.1.1 CONNECT with a keep-alive in seconds (0: off)
  dns[:NAME]                 a DNS query over TCP for NAME's A record (default localhost.)
  fastcgi[:PATH]             a FastCGI Responder request for PATH (default /ping) on a
                             kept connection (FCGI_KEEP_CONN): any FastCGI application
  send:DATA,expect:REGEX[,refuse:REGEX]   any protocol: send DATA (text with \\r \\n
                             \\xNN escapes, or 0xHEX; omit `send:` for a banner), served
                             when the reply matches `expect`, refused when `refuse` does.
The wire formats are in tcpceiling.probe.serving.protocols; a server's own in its module of
tcpceiling.servers (registered in tcpceiling.servers.checks).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

from tcpceiling.errors import InputError
from tcpceiling.probe.serving import dns, fastcgi, http
from tcpceiling.probe.serving import protocols as p
from tcpceiling.probe.serving.protocols import MAX_REPLY, Verdict, first_line
from tcpceiling.servers.checks import LINE_CHECKS, WIRE_CHECKS

__all__ = ["MAX_REPLY", "Check", "Held", "Kind", "Verdict", "first_line", "parse"]

Kind = Literal[
    "none",
    "echo",
    "http",
    "redis",
    "memcached",
    "tls",
    "websocket",
    "mqtt",
    "postgres",
    "fastcgi",
    "dns",
    "send",
]
KINDS: tuple[Kind, ...] = get_args(Kind)
#: The spec forms, for help and error messages.
FORMS = (
    "none, echo, http[:PATH], redis, memcached, tls, postgres, websocket[:PATH], "
    "mqtt[:KEEPALIVE], fastcgi[:PATH], dns[:NAME], send:DATA,expect:REGEX[,refuse:REGEX]"
)
#: what `--check fastcgi` asks for: a common ping path; where no ping is set up,
#: the application's process still answers (403 or 404 through FastCGI): served
FASTCGI_PATH = "/ping"
#: what `--check dns` asks for: a name every resolver answers itself (RFC 6761 §6.3)
DNS_NAME = "localhost."
_FIELD = re.compile(r",(?=(?:send|expect|refuse):)")


@dataclass(frozen=True)
class Held:
    """What a held connection's incoming bytes ask for: a reply to send (a pong), or
    the server's closing words."""

    reply: bytes = b""
    closing: str | None = None


@dataclass(frozen=True)
class Check:
    kind: Kind = "none"
    path: str = "/"  # http, websocket; fastcgi: its default is FASTCGI_PATH; dns: a name
    keep_alive: int = 0  # mqtt, seconds; 0 = the broker's timer off
    send: bytes = b""  # send/expect
    expect: str = ""
    refuse: str = ""

    @property
    def served_means(self) -> str:
        """What this check counts as served, where that is not a plain reply."""
        return WIRE_CHECKS[self.kind].served_means if self.kind in WIRE_CHECKS else ""

    # -- a new connection -------------------------------------------------------------
    def request(self, host: str) -> bytes:
        """What to send on a new connection ("none" and a banner check: nothing)."""
        if self.kind in LINE_CHECKS:
            return LINE_CHECKS[self.kind].request
        if self.kind in WIRE_CHECKS:
            return WIRE_CHECKS[self.kind].request
        made = _REQUESTS.get(self.kind)
        return made(self, host) if made is not None else b""

    def verdict(self, data: bytes, sent: bytes, again: bool = False) -> Verdict:
        """Judge what the server sent so far in answer to `sent` (`again`: the
        --check-every request on a held connection)."""
        if again and self.kind == "websocket":
            return p.websocket_pong(data)
        if again and self.kind == "mqtt":
            return p.mqtt_pingresp(data)
        return self._first_verdict(data, sent)

    def _first_verdict(self, data: bytes, sent: bytes) -> Verdict:
        k = self.kind
        if k in LINE_CHECKS:
            line = LINE_CHECKS[k]
            return p.line_reply(data, line.served, line.refused)
        if k in WIRE_CHECKS:
            return WIRE_CHECKS[k].judge(data)
        if k in _JUDGES:
            return _JUDGES[k](data)
        if k == "echo":
            return p.echo_reply(data, sent)
        if k == "send":
            return p.expect_reply(data, _regex(self.expect), _regex(self.refuse))
        return Verdict("more")  # "none": keep what the server volunteers (a refusal)

    # -- a held connection --------------------------------------------------------------
    def recheck(self, host: str) -> bytes | None:
        """What --check-every sends on a held connection; None when the check is a
        one-time handshake (TLS, a server's own, a banner)."""
        if self.kind == "websocket":
            return p.ws_frame(p.WS_PING, b"tcpceiling")
        if self.kind == "mqtt":
            return p.MQTT_PINGREQ
        one_time = self.kind in ("tls", "none") or self.kind in WIRE_CHECKS
        if one_time or (self.kind == "send" and not self.send):
            return None
        return self.request(host)

    @property
    def repeatable(self) -> bool:
        return self.recheck("") is not None

    @property
    def ping_every(self) -> float | None:
        """Seconds between keep-alive pings on every held connection: MQTT 3.1.1
        §3.1.2.10 lets the broker drop a client silent for 1.5 x keep-alive; half of
        it leaves room for a busy worker."""
        return self.keep_alive / 2 if self.kind == "mqtt" and self.keep_alive else None

    def framed(
        self, data: bytes, sent: bytes, again: bool = False
    ) -> tuple[Verdict, http.HttpBody | None, bytes]:
        """The verdict on what the server sent so far, with the framing of what follows
        the reply: an HTTP response is judged once its head is whole, and its body
        (Content-Length, chunked, or until the close) is never a reply of its own:
        (verdict, the body still to come or None, the bytes after the message)."""
        if self.kind == "http":
            return http.http_response(data)
        v = self.verdict(data, sent, again)
        return v, None, self.after_reply(data, again) if v.outcome == "ok" else b""

    def after_reply(self, data: bytes, again: bool) -> bytes:
        """What followed the served reply in the same bytes, to be read as held data."""
        first = self.kind == "websocket" and not again
        return p.websocket_after_handshake(data) if first else b""

    def refusal(self, words: bytes) -> str | None:
        """The server's refusal in what it said right after a passing reply (a
        greeting first, the admission check after): the `refuse` pattern of a generic
        check, an error line of a line protocol; None when it refuses nothing."""
        if self.kind == "send" and self.refuse:
            v = p.expect_reply(words, None, _regex(self.refuse))
            return v.text if v.outcome == "error" else None
        errors = LINE_CHECKS[self.kind].refused if self.kind in LINE_CHECKS else ()
        if errors and b"\n" in words and words.startswith(errors):
            return first_line(words)
        return None

    def pongs_within(self, data: bytes, again: bool) -> list[bytes]:
        """Pongs for the server's own pings inside the reply to a --check-every
        ping: a server pinging on its own timer (RFC 6455 §5.5.2) closes a client that
        waits for its own pong before it answers."""
        if not (again and self.kind == "websocket"):
            return []
        frames = p.ws_frames(data)[0]
        return [p.ws_frame(p.WS_PONG, payload) for opcode, payload in frames if opcode == p.WS_PING]

    def held(self, data: bytes) -> Held:
        """Bytes the server sent on a held connection: a WebSocket ping is answered,
        a close frame is the server's closing words; the rest is ignored."""
        if self.kind != "websocket":
            return Held()
        reply = b""
        for opcode, payload in p.ws_frames(data)[0]:
            if opcode == p.WS_CLOSE:
                return Held(reply, p.ws_close_text(payload))
            if opcode == p.WS_PING:
                reply += p.ws_frame(p.WS_PONG, payload)
        return Held(reply)

    @property
    def spec(self) -> str:
        """The SPEC this check was parsed from, in its canonical form."""
        return _spec(self)


def _spec(c: Check) -> str:
    default = {"http": "/", "websocket": "/", "fastcgi": FASTCGI_PATH, "dns": DNS_NAME}
    if c.kind in default and c.path != default[c.kind]:
        return f"{c.kind}:{c.path}"
    if c.kind == "mqtt" and c.keep_alive:
        return f"mqtt:{c.keep_alive}"
    if c.kind != "send":
        return c.kind
    parts = [f"send:{_show(c.send)}"] if c.send else []
    parts.append(f"expect:{c.expect}")
    return ",".join(parts + ([f"refuse:{c.refuse}"] if c.refuse else []))


#: what each kind sends on a new connection (the servers' own kinds aside)
_REQUESTS: dict[str, Callable[[Check, str], bytes]] = {
    "echo": lambda c, host: b"tcpceiling echo check\n",
    "send": lambda c, host: c.send,
    "http": lambda c, host: (
        f"GET {c.path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: tcpceiling\r\n\r\n".encode()
    ),
    "websocket": lambda c, host: p.websocket_upgrade(host, c.path),
    "mqtt": lambda c, host: p.mqtt_connect(c.keep_alive),
    "fastcgi": lambda c, host: fastcgi.fastcgi_request(c.path),
    "dns": lambda c, host: dns.dns_query(c.path),
    "tls": lambda c, host: p.tls_client_hello(),
}
#: the first verdict of the kinds judged by their reply alone
_JUDGES: dict[str, Callable[[bytes], Verdict]] = {
    "websocket": p.websocket_handshake,
    "mqtt": p.mqtt_connack,
    "http": http.http_status,
    "tls": p.tls_server_hello,
    "fastcgi": fastcgi.fastcgi_reply,
    "dns": dns.dns_reply,
}


@functools.lru_cache(maxsize=64)
def _regex(pattern: str) -> re.Pattern[bytes] | None:
    return re.compile(pattern.encode(), re.MULTILINE) if pattern else None


def _show(data: bytes) -> str:
    return data.decode("latin-1").encode("unicode_escape").decode("ascii")


def _data(text: str) -> bytes:
    """send: DATA as 0xHEX, or text with backslash escapes (\\r, \\n, \\xNN)."""
    try:
        if text.lower().startswith("0x"):
            return bytes.fromhex(text[2:])
        return text.encode("utf-8").decode("unicode_escape").encode("latin-1")
    except (ValueError, UnicodeError) as exc:
        raise InputError(f"--check send: cannot decode {text!r}: {exc}") from exc


def _dns(name: str) -> Check:
    labels = name.rstrip(".").split(".")
    if not name or len(name) > 253 or any(not 0 < len(x) < 64 or " " in x for x in labels):
        raise InputError(f"--check dns:NAME: {name!r} is not a domain name")
    return Check("dns", path=name)


def _generic(spec: str) -> Check:
    fields: dict[str, str] = {}
    for part in _FIELD.split(spec):
        key, _, value = part.partition(":")
        if key in fields:
            raise InputError(f"--check: {key}: given twice in {spec!r}")
        fields[key] = value
    if not fields.get("expect"):
        raise InputError(f"--check {spec!r}: needs expect:REGEX (what a served reply matches)")
    for key in ("expect", "refuse"):
        try:
            _regex(fields.get(key, ""))
        except re.error as exc:
            raise InputError(f"--check {key}: not a regular expression: {exc}") from exc
    send = _data(fields.get("send", ""))
    return Check("send", send=send, expect=fields["expect"], refuse=fields.get("refuse", ""))


@functools.lru_cache(maxsize=64)
def parse(spec: str) -> Check:
    """A Check from its SPEC (module docstring); InputError names what is wrong."""
    if spec.startswith(("send:", "expect:")):
        return _generic(spec)
    kind, colon, arg = spec.partition(":")
    if kind not in KINDS or kind == "send":
        raise InputError(f"--check {spec!r}: unknown; one of {FORMS}")
    if kind in ("http", "websocket", "fastcgi") and colon:
        if not arg.startswith("/") or any(c.isspace() for c in arg):
            raise InputError(f"--check {kind}:PATH: {arg!r} is not a request path")
        return Check(kind, path=arg)
    if kind == "fastcgi":
        return Check(kind, path=FASTCGI_PATH)
    if kind == "dns":
        return _dns(arg if colon else DNS_NAME)
    if kind == "mqtt" and colon:
        if not arg.isdigit() or int(arg) > 65535:
            raise InputError(f"--check mqtt:KEEPALIVE: {arg!r} is not 0..65535 seconds")
        return Check("mqtt", keep_alive=int(arg))
    if colon:
        raise InputError(f"--check {kind} takes no argument (got {arg!r})")
    return Check(kind)

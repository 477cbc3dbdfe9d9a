"""Pure parts of server probing: protocol verdicts, evidence and attribution."""

from __future__ import annotations

import pytest

from tcpceiling.errors import InputError, ParseError
from tcpceiling.host.parse import parse_conntrack_stat
from tcpceiling.host.sockets import Listener
from tcpceiling.probe.serving import checks, http
from tcpceiling.probe.serving import protocols as wire
from tcpceiling.probe.serving.evidence import ServerProcess, ServerSample, attribute
from tcpceiling.probe.workers import pacing
from tcpceiling.servers import postgresql

ECHO = checks.parse("echo").request("h")


#: A server's 101 for the fixed key (RFC 6455 §1.3: SHA-1 of key + GUID, base64).
WS_OK = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: " + wire.websocket_accept(wire.WS_KEY).encode() + b"\r\n\r\n"
)
_PG_FIELDS = b"SFATAL\0VFATAL\0C53300\0Msorry, too many clients already\0\0"
#: The generic check on an SMTP banner (RFC 5321 §4.2: 220 ready, 421 busy).
SMTP = "expect:^220 ,refuse:^[45][0-9][0-9] "
PG_TOO_MANY = b"E" + (4 + len(_PG_FIELDS)).to_bytes(4, "big") + _PG_FIELDS


def test_websocket_accept_is_rfc_6455s_example() -> None:
    assert wire.websocket_accept("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_mqtt_connect_and_pg_startup_bytes() -> None:
    assert wire.mqtt_connect().hex() == "100c00044d515454040200000000"
    startup = postgresql.pg_startup()
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
        # a close right behind the 101 is heard while the connection settles (watch.py)
        ("websocket", WS_OK + b"\x88\x02\x03\xf5", "ok", ""),
        ("websocket", WS_OK + b"\x89\x00", "ok", ""),  # a ping with the 101: served
        ("mqtt", bytes([0x20, 2, 0, 0]), "ok", ""),
        ("mqtt", bytes([0x20, 2, 0, 3]), "error", "connection refused: server unavailable"),
        ("mqtt", bytes([0x20, 2]), "more", ""),
        ("mqtt", bytes([0x30, 2, 0, 0]), "error", "not a CONNACK (packet type 3)"),
        ("postgres", b"R\x00\x00\x00\x08\x00\x00\x00\x00", "ok", ""),  # AuthenticationOk
        ("postgres", b"R\x00\x00\x00\x0c\x00\x00\x00\x05salt", "ok", ""),  # asks MD5
        ("postgres", PG_TOO_MANY, "error", "FATAL: sorry, too many clients already"),
        ("postgres", PG_TOO_MANY[:12], "more", ""),
        (SMTP, b"220 mx.example.org ESMTP Postfix\r\n", "ok", ""),
        (SMTP, b"220-mx.example.org ESMTP\r\n", "more", ""),  # a multi-line banner goes on
        (SMTP, b"220-mx ESMTP\r\n220 ready\r\n", "ok", ""),
        (SMTP, b"220-mx\r\n421 4.7.0 Too many connections\r\n", "error",
         "421 4.7.0 Too many connections"),
        (SMTP, b"x" * 4096, "error", "no match in the reply: " + "x" * 120),
        ("send:PING\\r\\n,expect:^\\+PONG", b"+PONG\r\n", "ok", ""),
    ],
)  # fmt: skip
def test_verdicts(check: str, reply: bytes, outcome: str, text: str) -> None:
    c = checks.parse(check)
    v = c.verdict(reply, c.request("h"))
    assert (v.outcome, v.text) == (outcome, text)


def test_requests() -> None:
    assert checks.parse("none").request("h") == b""
    http = checks.parse("http").request("example.org")
    assert http.startswith(b"GET / HTTP/1.1\r\nHost: example.org")
    assert checks.parse("redis").request("h") == b"*1\r\n$4\r\nPING\r\n"
    assert checks.parse("websocket:/chat?x=1").request("h").startswith(b"GET /chat?x=1 HTTP/1.1")
    assert checks.parse("mqtt:60").request("h")[10:12] == b"\x00\x3c"  # keep-alive 60 s
    assert checks.parse("send:HELO x\\r\\n,expect:^250").request("h") == b"HELO x\r\n"
    assert checks.parse("send:0x0d0a00ff,expect:x").request("h") == b"\r\n\x00\xff"
    assert checks.parse("expect:^220 ").request("h") == b""  # a banner: the server speaks first
    hello = checks.parse("tls").request("h")
    assert hello[0] == 22 and hello[5] == 1  # handshake record carrying ClientHello


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("gopher", "unknown"),
        ("redis:x", "takes no argument"),
        ("http:x", "is not a request path"),
        ("websocket:chat", "not a request path"),
        ("websocket:/a b", "not a request path"),
        ("mqtt:70000", "not 0..65535"),
        ("mqtt:-1", "not 0..65535"),
        ("send:x", "needs expect:REGEX"),
        ("send:x,expect:", "needs expect:REGEX"),
        ("send:x,expect:(", "not a regular expression"),
        ("send:x,expect:a,refuse:[", "not a regular expression"),
        ("send:0xZZ,expect:a", "cannot decode"),
        ("send:a\\,expect:a", "cannot decode"),
        ("expect:a,expect:b", "given twice"),
    ],
)
def test_bad_check_specs_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        checks.parse(spec)


@pytest.mark.parametrize(
    "spec",
    ["none", "http", "websocket", "websocket:/chat", "mqtt", "mqtt:30", "expect:^220 ",
     "send:QUIT\\r\\n,expect:^221", "send:\\x00\\xff,expect:ok,refuse:^no"],
)  # fmt: skip
def test_check_specs_round_trip(spec: str) -> None:
    assert checks.parse(spec).spec == spec
    assert checks.parse(checks.parse(spec).spec) == checks.parse(spec)


def _server_frame(opcode: int, payload: bytes) -> bytes:
    """An unmasked server frame (RFC 6455 §5.1), with the 16-bit length past 125."""
    n = len(payload)
    size = bytes([n]) if n < 126 else b"\x7e" + n.to_bytes(2, "big")
    return bytes([0x80 | opcode]) + size + payload


CLOSE_1013 = _server_frame(0x8, b"\x03\xf5Try Again Later")


def test_websocket_frames_both_ways() -> None:
    ping = wire.ws_frame(wire.WS_PING, b"abc")
    assert ping[:2] == b"\x89\x83" and ping[2:6] == wire.WS_MASK  # final, masked, 3 bytes
    assert wire.ws_frames(ping) == ([(wire.WS_PING, b"abc")], b"")
    text = _server_frame(0x1, b"y" * 300)
    assert wire.ws_frames(text + CLOSE_1013[:3]) == ([(0x1, b"y" * 300)], CLOSE_1013[:3])
    assert wire.ws_close_text(b"\x03\xe8") == "websocket close 1000"


@pytest.mark.parametrize(
    ("spec", "reply", "outcome", "text"),
    [
        ("websocket", _server_frame(0xA, b"tcpceiling"), "ok", ""),
        ("websocket", _server_frame(0x1, b"news") + _server_frame(0xA, b""), "ok", ""),
        ("websocket", CLOSE_1013, "error", "websocket close 1013 Try Again Later"),
        ("websocket", _server_frame(0xA, b"x")[:2], "more", ""),
        ("mqtt", b"\xd0\x00", "ok", ""),
        ("mqtt", b"\xd0", "more", ""),
        ("mqtt", b"\x30\x00", "error", "not a PINGRESP (packet type 3)"),
        ("redis", b"+PONG\r\n", "ok", ""),
    ],
)
def test_recheck_verdicts(spec: str, reply: bytes, outcome: str, text: str) -> None:
    c = checks.parse(spec)
    sent = c.recheck("h")
    assert sent is not None
    v = c.verdict(reply, sent, again=True)
    assert (v.outcome, v.text) == (outcome, text)


def test_what_can_be_rechecked_and_pinged() -> None:
    assert checks.parse("websocket").recheck("h") == wire.ws_frame(wire.WS_PING, b"tcpceiling")
    assert checks.parse("mqtt").recheck("h") == wire.MQTT_PINGREQ
    once = ["tls", "postgres", "none", "expect:^220"]
    assert [checks.parse(s).repeatable for s in once] == [False] * 4
    assert checks.parse("send:x,expect:y").repeatable
    assert checks.parse("mqtt:60").ping_every == 30 and checks.parse("mqtt").ping_every is None


def test_held_websocket_answers_pings_and_hears_close() -> None:
    ws = checks.parse("websocket")
    ping = _server_frame(0x9, b"hi")
    assert ws.held(ping) == checks.Held(reply=wire.ws_frame(wire.WS_PONG, b"hi"))
    assert ws.held(ping + CLOSE_1013).closing == "websocket close 1013 Try Again Later"
    assert checks.parse("mqtt").held(b"\xd0\x00") == checks.Held()
    assert ws.after_reply(WS_OK + ping, again=False) == ping
    assert ws.after_reply(ping, again=True) == b""


def test_pongs_within_a_recheck_answer_the_servers_own_pings() -> None:
    """A server that pings on its own timer while our --check-every ping waits for its
    pong gets its pong too (else it closes the client for not answering)."""
    ws = checks.parse("websocket")
    ping, pong = _server_frame(0x9, b"srv"), _server_frame(0xA, b"tcpceiling")
    assert ws.pongs_within(ping + pong, again=True) == [wire.ws_frame(wire.WS_PONG, b"srv")]
    assert ws.pongs_within(ping[:3], again=True) == []  # a partial frame waits
    assert ws.pongs_within(ping, again=False) == []  # the handshake's frames: after_reply
    assert checks.parse("mqtt").pongs_within(b"\xd0\x00", again=True) == []


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
QUEUE_EMPTY = (Listener("127.0.0.1", 80, 0, 1000, 1),)
QUEUE_70 = (Listener("127.0.0.1", 80, 70, 1000, 1),)
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


@pytest.mark.parametrize(
    ("listeners", "silent", "reason", "words"),
    [
        (QUEUE_EMPTY, 70, "server_queued", "accepted 70 or more"),  # a proxy's own queue
        (QUEUE_70, 70, "server_silent", "not calling accept()"),  # all still in the queue
        ((), 70, "server_silent", "stuck"),  # a remote server: no listener to look at
    ],
)
def test_silent_connections_accepted_or_not(
    listeners: tuple[Listener, ...], silent: int, reason: str, words: str
) -> None:
    """Established and unanswered: accepted by the server (HAProxy queueing past a
    backend's maxconn) or still in the listener's accept queue (not accepting)."""
    after = sample(listeners, ROOMY, ListenOverflows=0)
    stop = attribute("silent", {}, sample(ListenOverflows=0), after, silent)
    assert stop.reason == reason and words in stop.detail
    assert stop.evidence["silent"] == silent


def test_the_opening_window_grows_while_answers_are_prompt_and_halves_when_not() -> None:
    """Slow start to the first sign, additive increase after it, one halving per
    window of verdicts, never below MIN_WINDOW, never above the most."""
    w = pacing.Window(most=1024)
    for _ in range(40):
        w.answer(0.001)
    assert w.limit == pacing.MIN_WINDOW + 40  # one more per prompt answer
    w.answer(0.5)  # far past 4 x the fastest and 50 ms more: behind
    assert (w.limit, w.cuts) == (28, 1)
    w.answer(0.5)  # within the same window of verdicts: no second halving
    assert (w.limit, w.cuts) == (28, 1)
    for _ in range(30):
        w.answer(0.001)  # above the threshold: one per window of answers
    assert w.limit == 29
    w.connected(0.0001)
    w.connected(1.01)  # a SYN retransmit (1 s initial RTO)
    assert w.cuts == 2 and w.limit == pacing.MIN_WINDOW
    for _ in range(100):
        w.timed_out()
    assert w.limit == pacing.MIN_WINDOW and w.answered == 72
    assert pacing.Window(most=4).limit == 4  # --max-pending is the most, even below the floor


OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"


@pytest.mark.parametrize(
    ("segments", "outcome", "rest"),
    [
        # head and body in separate writes (gunicorn's): the body is no reply of its own
        ([OK_HEAD + b"Content-Length: 2\r\n\r\n", b"ok"], "ok", b""),
        ([OK_HEAD + b"Content-Length: 2\r\n\r\nok-ERR next"], "ok", b"-ERR next"),
        ([OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n2\r\no", b"k\r\n0\r\n", b"\r\nBYE"],
         "ok", b"BYE"),
        ([OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nheld\n\r\n", b"5\r\nheld\n\r\n"],
         "ok", b""),  # a stream that goes on: all of it body
        ([OK_HEAD + b"\r\nuntil the close", b"and more"], "ok", b""),
        ([b"HTTP/1.1 204 No Content\r\n\r\n-ERR after"], "ok", b"-ERR after"),
        ([b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy"], "error", b""),
        ([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"], "more", b""),  # the head not whole
    ],
)  # fmt: skip
def test_http_responses_are_framed_before_they_are_judged(
    segments: list[bytes], outcome: str, rest: bytes
) -> None:
    v, body, after = http.http_response(segments[0])
    assert v.outcome == outcome
    for more in segments[1:]:
        assert body is not None
        after += body.feed(more)
    assert after == rest


def test_a_chunk_size_line_split_anywhere_is_still_read() -> None:
    body = http.HttpBody("chunked")
    stream = b"a;ext=1\r\n0123456789\r\n0\r\nX-Trailer: 1\r\n\r\nnext"
    out = b"".join(body.feed(stream[i : i + 1]) for i in range(len(stream)))
    assert out == b"next" and body.done

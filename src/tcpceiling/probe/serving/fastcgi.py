"""FastCGI's wire format for `--check fastcgi`: the request a web server sends and
the verdict on the application's answer. Pure functions on bytes."""

from __future__ import annotations

import struct

from tcpceiling.probe.serving.protocols import Verdict

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

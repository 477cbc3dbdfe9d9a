"""HTTP/1.x for `--check http`: the status line's verdict and the framing of a
response (RFC 9112 §6), so a body is never judged as a reply of its own. Pure
functions on bytes, table-tested with literal responses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tcpceiling.probe.serving.protocols import MAX_REPLY, Verdict, first_line


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

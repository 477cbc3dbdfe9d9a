"""DNS over TCP for `--check dns`: a query and the verdict on its response. Pure
functions on bytes."""

from __future__ import annotations

import struct

from tcpceiling.probe.serving.protocols import Verdict

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

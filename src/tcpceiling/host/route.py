"""Which source address the kernel would pick for a destination (a route look-up).

A UDP socket's connect() runs the same route look-up as TCP's and sends nothing;
getsockname() then reports the chosen source (ip-route(8) "src").
"""

from __future__ import annotations

import socket


def source_for(dst: str, port: int) -> str | None:
    """The source IP for dst:port in the calling thread's netns, or None if unroutable."""
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.connect((dst, port or 9))
        except OSError:
            return None
        return str(s.getsockname()[0])


def is_local(ip: str) -> bool:
    """True when ip is an address of this netns (the peer's socket costs memory here too)."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.bind((ip, 0))
        except OSError:
            return False
        return True

"""mosquitto: `max_connections` of each listener (default -1: unlimited). It counts
the listener's connected clients only; past it the broker closes each new socket
before any CONNACK (net__socket_accept, src/net.c). Set before any `listener` line,
it applies to the default listener."""

from __future__ import annotations

from tcpceiling.host.roots import Roots
from tcpceiling.servers import text
from tcpceiling.servers.model import AppLimit, Found, Source

NAME = "mosquitto"


def matches(comm: str, exe: str) -> bool:
    return comm == "mosquitto" or exe.endswith("/mosquitto")


def parse_listeners(conf: str) -> dict[int | None, int]:
    """max_connections per listener port (None: the default listener)."""
    out: dict[int | None, int] = {}
    port: int | None = None
    for raw in conf.splitlines():
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        if words[0] == "listener" and len(words) > 1:
            port = text.to_int(words[1])
        elif words[0] == "max_connections" and len(words) > 1:
            value = text.to_int(words[1])
            if value is not None:
                out[port] = value
    return out


def read(found: Found, roots: Roots) -> AppLimit:
    conf = text.flag(found.main.cmdline, "-c")
    limits = parse_listeners(text.host_file(roots, conf)) if conf else {}
    value = limits.get(found.port, limits.get(None, -1))
    source: Source = "config" if conf and (found.port in limits or None in limits) else "default"
    cap = value if value >= 0 else None
    return AppLimit(
        server=NAME,
        pid=found.main.pid,
        listen=f"{found.host}:{found.port}",
        setting="max_connections",
        value=cap,
        source=source,
        source_detail=conf or "mosquitto default max_connections -1 (unlimited)",
        capacity=cap,
        in_use=found.established,
        arithmetic=f"max_connections {value} of the listener on port {found.port}: its "
        "connected clients only (net__socket_accept, src/net.c)"
        if cap is not None
        else "max_connections -1: no cap of its own (RLIMIT_NOFILE binds)",
        symptom="the broker closes new connections before CONNACK",
        raise_=f"max_connections {(cap or 1000) * 2} under `listener {found.port}`",
        check="mqtt",
        nofile_needed=cap,
        nofile=found.main.nofile,
    )

"""HAProxy: the frontend's `maxconn` (else the `defaults` one, else the global
one), never more than the global maxconn. At it HAProxy stops accepting: the
listener is paused and the rest wait in the accept queue (src/listener.c). Behind
it, servers with `maxconn` forward that many at once and queue the others in the
backend (src/queue.c), accepted but unanswered: the frontend then serves at most the
sum of its default backend's server maxconn. The stats socket (`stats socket` in
the global section) gives the running limits: `show stat` slim and scur.

A proxy, it is a client of its backend's servers: each session holds one connection
toward the server it was sent to (HAProxy's maxconn counts sessions, not fds: about
two fds each). The source of those connections (tcp_connect_server, src/proto_tcp.c):
a server's `source`, else the backend's (or defaults'); `source ADDR:LO-HI` makes
HAProxy hand out that range itself, one pool per address for every server using it
("no free ports" past it, CO_ER_PORT_RANGE): on a server line an allocator of its
own, on a backend one for all its servers; `source ADDR` binds with
IP_BIND_ADDRESS_NO_PORT, so the kernel's range serves each (source, server) apart;
no source, the kernel picks address and port at connect()."""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from tcpceiling.host.roots import Roots
from tcpceiling.servers import text
from tcpceiling.servers.model import AppLimit, Found, Source, Upstream, UpstreamServer

NAME = "haproxy"


@dataclass(frozen=True)
class Section:
    kind: str  # global, defaults, frontend, backend, listen
    name: str
    maxconn: int | None = None
    binds: tuple[int, ...] = ()  # ports
    default_backend: str | None = None
    server_maxconn: tuple[int | None, ...] = ()
    stats_socket: str | None = None
    server_lines: tuple[tuple[str, ...], ...] = ()  # each `server` line's words
    source: tuple[str, ...] = ()  # the section's `source` words
    reuse: str | None = None  # http-reuse
    mode: str | None = None


@dataclass
class _Building:
    kind: str
    name: str
    values: dict[str, str] = field(default_factory=dict)
    binds: list[int] = field(default_factory=list)
    servers: list[int | None] = field(default_factory=list)
    lines: list[tuple[str, ...]] = field(default_factory=list)
    source: tuple[str, ...] = ()


def matches(comm: str, exe: str) -> bool:
    return comm == "haproxy" or exe.endswith("/haproxy")


def _port(address: str) -> int | None:
    return text.to_int(address.rpartition(":")[2].split(",")[0]) if ":" in address else None


def _line(cur: _Building, words: list[str]) -> None:
    key = words[0]
    if key == "bind" and len(words) > 1 and (port := _port(words[1])) is not None:
        cur.binds.append(port)
    elif key == "server":
        at = words.index("maxconn") if "maxconn" in words else -1
        cur.servers.append(text.to_int(words[at + 1]) if 0 <= at < len(words) - 1 else None)
        cur.lines.append(tuple(words))
    elif key == "source":
        cur.source = tuple(words[1:])
    elif key == "stats" and words[1:2] == ["socket"] and len(words) > 2:
        cur.values["stats_socket"] = words[2]
    elif len(words) > 1:
        cur.values[key] = words[1]


def parse_config(conf: str) -> tuple[Section, ...]:
    """The sections of haproxy.cfg that matter here, in order."""
    built: list[_Building] = []
    for raw in conf.splitlines():
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        if words[0] in ("global", "defaults", "frontend", "backend", "listen"):
            built.append(_Building(words[0], words[1] if len(words) > 1 else ""))
        elif built:
            _line(built[-1], words)
    return tuple(
        Section(
            b.kind,
            b.name,
            text.to_int(b.values.get("maxconn")),
            tuple(b.binds),
            b.values.get("default_backend"),
            tuple(b.servers),
            b.values.get("stats_socket"),
            tuple(b.lines),
            b.source,
            b.values.get("http-reuse"),
            b.values.get("mode"),
        )
        for b in built
    )


def parse_stat(csv: str) -> dict[tuple[str, str], dict[str, str]]:
    """`show stat`: CSV with a '# ' header, rows keyed by (pxname, svname)."""
    head, *rows = csv.lstrip("# ").splitlines() or [""]
    names = head.split(",")
    table = [dict(zip(names, row.split(","), strict=False)) for row in rows if row]
    return {(r.get("pxname", ""), r.get("svname", "")): r for r in table}


def _first(sections: tuple[Section, ...], kind: str) -> Section | None:
    return next((s for s in sections if s.kind == kind), None)


def capacity(sections: tuple[Section, ...], port: int) -> tuple[int | None, str, str]:
    """(connections served at once, the proxy's name, the arithmetic) for `port`."""
    front = next(
        (s for s in sections if s.kind in ("frontend", "listen") and port in s.binds), None
    )
    glob, defaults = _first(sections, "global"), _first(sections, "defaults")
    if front is None:
        return None, "", f"no frontend binds port {port}"
    own = front.maxconn or (defaults.maxconn if defaults else None)
    limits = [v for v in (own, glob.maxconn if glob else None) if v]
    back = (
        front
        if front.kind == "listen"
        else next(
            (s for s in sections if s.kind == "backend" and s.name == front.default_backend), None
        )
    )
    servers = back.server_maxconn if back else ()
    why = f"frontend {front.name}: maxconn {own}, global {glob.maxconn if glob else None}"
    if servers and all(servers):
        limits.append(sum(v for v in servers if v))
        why += f", its servers' maxconn {' + '.join(str(v) for v in servers)} (the rest queue)"
    return (min(limits) if limits else None), front.name, why


def _stat(sock_path: str) -> str:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(2)
        s.connect(sock_path)
        s.sendall(b"show stat\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.decode(errors="replace")


def reached(row: dict[str, str], proxy: str) -> str:
    """HAProxy's own count that a frontend reached its limit: its peak sessions (smax)
    at its session limit (slim)."""
    smax, slim = text.to_int(row.get("smax")), text.to_int(row.get("slim"))
    if smax is None or slim is None or smax < slim:
        return ""
    return f"frontend {proxy} reached its maxconn: smax {smax} of slim {slim} (show stat)"


@dataclass(frozen=True)
class Running:
    """What the stats socket says of a frontend: its sessions now, its running
    session limit, and its own words if it reached it."""

    scur: int | None
    slim: int | None
    said: str
    upstream: str = ""  # its count of connections that failed toward the backend's servers


def running(sections: tuple[Section, ...], proxy: str, backend: str = "") -> Running | None:
    glob = _first(sections, "global")
    if glob is None or not glob.stats_socket:
        return None
    try:
        table = parse_stat(_stat(glob.stats_socket))
    except OSError:
        return None
    row = table.get((proxy, "FRONTEND"), {})
    return Running(
        text.to_int(row.get("scur")),
        text.to_int(row.get("slim")),
        reached(row, proxy),
        connect_errors(table, backend),
    )


def connect_errors(table: dict[tuple[str, str], dict[str, str]], backend: str) -> str:
    """HAProxy's own count of a backend's failed connections toward its servers
    (econ: a connect() that failed, "no free ports" among them; show stat)."""
    rows = [(sv, r) for (px, sv), r in table.items()
            if px == backend and sv not in ("FRONTEND", "BACKEND")]  # fmt: skip
    failed = [f"{sv} econ {r.get('econ')}" for sv, r in rows if (text.to_int(r.get("econ")) or 0)]
    if not failed:
        return ""
    return f"backend {backend}: connection errors toward its servers (show stat): " + ", ".join(
        failed
    )


def parse_source(words: tuple[str, ...]) -> tuple[str, tuple[int, int] | None] | None:
    """`source ADDR[:LO[-HI]] [usesrc ...]` -> (address, the range HAProxy hands out);
    None with usesrc (the client's own address: its ports are not the proxy's)."""
    if not words or "usesrc" in words:
        return None
    addr, colon, ports = words[0].rpartition(":") if ":" in words[0] else (words[0], "", "")
    if not colon:
        return words[0], None
    lo, _, hi = ports.partition("-")
    low, high = text.to_int(lo), text.to_int(hi or lo)
    return addr.strip("[]"), (low, high) if low and high else None


Resolver = Callable[[str, int], list[str]]


def _server(words: tuple[str, ...], inherited: tuple[str, ...], resolver: Resolver
            ) -> list[UpstreamServer]:  # fmt: skip
    """One `server NAME ADDR:PORT [maxconn N] [source ...]` line, resolved."""
    if len(words) < 3 or ":" not in words[2] or words[2].startswith(("unix@", "/", "abns@")):
        return []
    host, _, port_text = words[2].rpartition(":")
    port = text.to_int(port_text)
    at = words.index("source") if "source" in words else -1
    src = parse_source(words[at + 1 :] if at >= 0 else inherited)
    if port is None or (src is None and (at >= 0 or inherited)):
        return []  # no port given (the client's), or usesrc: not the proxy's ports
    m = words.index("maxconn") if "maxconn" in words else -1
    cap = text.to_int(words[m + 1]) if 0 <= m < len(words) - 1 else None
    sources, rng = ((src[0],), src[1]) if src else ((), None)
    shared = rng is not None and at < 0  # the backend's range: one allocator for all
    return [
        UpstreamServer(h, port, 1, cap, sources, rng, range_shared=shared)
        for h in resolver(host.strip("[]"), port)
    ]


def upstreams(sections: tuple[Section, ...], port: int, resolver: Resolver) -> tuple[Upstream, ...]:
    """The backend a frontend binding `port` sends its sessions to (default_backend,
    or a listen section's own servers), its servers and where their source comes from."""
    front = next((s for s in sections if s.kind in ("frontend", "listen") and port in s.binds),
                 None)  # fmt: skip
    if front is None:
        return ()
    back = (
        front
        if front.kind == "listen"
        else next(
            (s for s in sections if s.kind == "backend" and s.name == front.default_backend), None
        )
    )
    if back is None:
        return ()
    defaults = _first(sections, "defaults")
    inherited = back.source or (defaults.source if defaults else ())
    servers = [srv for line in back.server_lines for srv in _server(line, inherited, resolver)]
    mode = back.mode or (defaults.mode if defaults else None) or "tcp"
    reuse = back.reuse or (defaults.reuse if defaults else None) or "safe"
    keep = 1 if mode == "http" and reuse != "never" else 0  # idle connections reused
    return (Upstream(back.name, tuple(servers), keepalive=keep, directive=f"backend {back.name}"),)


def read(found: Found, roots: Roots) -> AppLimit:
    conf_path = text.flag(found.main.cmdline, "-f") or "/etc/haproxy/haproxy.cfg"
    sections = parse_config(text.host_file(roots, conf_path))
    cap, proxy, why = capacity(sections, found.port)
    source: Source = "config"
    detail, in_use, said = conf_path, found.established, ""
    ups = upstreams(sections, found.port, text.resolve)
    live = running(sections, proxy, ups[0].name if ups else "") if roots.live else None
    if live is not None:
        source, detail, said = "server", f"show stat (slim, scur; and {conf_path})", live.said
        in_use = live.scur if live.scur is not None else in_use
        if live.slim and cap and live.slim < cap:  # the running frontend limit is lower
            cap, why = live.slim, f"{why}; running frontend slim {live.slim}"
    return AppLimit(
        server=NAME,
        pid=found.main.pid,
        listen=f"{found.host}:{found.port}",
        setting="maxconn",
        value=cap,
        source=source,
        source_detail=detail,
        capacity=cap,
        in_use=in_use,
        arithmetic=why,
        symptom="the frontend stops accepting (its listener paused); its queue fills "
        "(ListenOverflows); or past a server's maxconn, sessions wait in the backend queue",
        raise_=f"maxconn {(cap or 1000) * 2} in frontend {proxy or 'FRONTEND'} and in global "
        "(HAProxy needs about 2 fds per connection: ulimit-n)",
        check="none",
        nofile_needed=2 * cap if cap else None,
        nofile=found.main.nofile,
        nofile_per_setting=2,
        evidence=said,
        upstreams=ups,
        upstream_words=live.upstream if live is not None else "",
        upstream_symptom="HAProxy logs 'Connect() failed for backend BE: no free ports', "
        "counts it in its server's econ and answers its client 503"
        if ups
        else "",
    )


def upstream_fix(limit: AppLimit, up: Upstream, sources: int = 0) -> str:
    """More ports toward a backend, in HAProxy's words: a wider range it hands out
    itself per source address, or more source addresses (the server again with
    another `source`: each address brings a range toward it), or server-side reuse
    in HTTP mode."""
    first = up.servers[0] if up.servers else None
    addr = first.sources[0] if first and first.sources else "ADDR"
    n = sources or 2
    lines = [f"source {addr}:1024-65535 on each server line of backend {up.name} "
             "(HAProxy then hands out the whole range itself)",
             f"or {n} source addresses: the same server line {n} times, each with its "
             "own `source ADDRi:LO-HI` (HAProxy balances over them)"]  # fmt: skip
    if not up.keepalive:
        lines.append("in mode http, `http-reuse safe` (the default) keeps idle server "
                     "connections for the next requests")  # fmt: skip
    return "; ".join(lines)

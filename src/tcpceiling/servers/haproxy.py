"""HAProxy: the frontend's `maxconn` (else the `defaults` one, else the global
one), never more than the global maxconn. At it HAProxy stops accepting: the
listener is paused and the rest wait in the accept queue (src/listener.c). Behind
it, servers with `maxconn` forward that many at once and queue the others in the
backend (src/queue.c), accepted but unanswered: the frontend then serves at most the
sum of its default backend's server maxconn. The stats socket (`stats socket` in
the global section) gives the running limits: `show stat` slim and scur."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from tcpceiling.host.roots import Roots
from tcpceiling.servers import text
from tcpceiling.servers.model import AppLimit, Found, Source

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


@dataclass
class _Building:
    kind: str
    name: str
    values: dict[str, str] = field(default_factory=dict)
    binds: list[int] = field(default_factory=list)
    servers: list[int | None] = field(default_factory=list)


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


def running(sections: tuple[Section, ...], proxy: str) -> Running | None:
    glob = _first(sections, "global")
    if glob is None or not glob.stats_socket:
        return None
    try:
        row = parse_stat(_stat(glob.stats_socket)).get((proxy, "FRONTEND"), {})
    except OSError:
        return None
    return Running(text.to_int(row.get("scur")), text.to_int(row.get("slim")), reached(row, proxy))


def read(found: Found, roots: Roots) -> AppLimit:
    conf_path = text.flag(found.main.cmdline, "-f") or "/etc/haproxy/haproxy.cfg"
    sections = parse_config(text.host_file(roots, conf_path))
    cap, proxy, why = capacity(sections, found.port)
    source: Source = "config"
    detail, in_use, said = conf_path, found.established, ""
    live = running(sections, proxy) if roots.live else None
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
    )

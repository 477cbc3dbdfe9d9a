"""Unbound: `incoming-num-tcp` (default 10) TCP handlers per thread for each TCP
listening socket (listen_create, services/listen_dnsport.c: one comm_point with that
many handlers per socket and thread). With every handler of a socket busy, the
thread stops accepting on it (comm_point_stop_listening): new connections wait in
the listen queue. So one listening address serves `num-threads` x incoming-num-tcp
at once. With `so-reuseport: yes` (the default) and more than one thread, each
thread has a socket of its own and the kernel spreads connections over them by
hash: one fills while another has room, so fewer may be held at once.

Its idle timeouts shrink as its handlers fill (setup_tcp_handler,
util/netevent.c): a connection accepted with more than half of them in use gets
tcp-idle-timeout / 100, above 65 % / 500, above 80 % none, and never less than
200 ms. So it serves all its handlers at once but keeps only about half of them
idle for `tcp-idle-timeout` (default 30 s): it closes the newest idle ones first.

Where it is read: its configuration file (`-c FILE`, default
/etc/unbound/unbound.conf), `server:` clause `key: value` lines and their
`include:` globs, read when it starts (and on `unbound-control reload`)."""

from __future__ import annotations

from dataclasses import dataclass

from tcpceiling.host.roots import Roots
from tcpceiling.servers import text
from tcpceiling.servers.model import AppLimit, Found, Source

NAME = "unbound"
DEFAULT_CONF = "/etc/unbound/unbound.conf"
DEFAULT_TCP = 10
DEFAULT_IDLE_MS = 30000


@dataclass(frozen=True)
class Settings:
    threads: int
    incoming_tcp: int
    idle_ms: int
    reuseport: bool
    given: bool  # incoming-num-tcp set in the file


def matches(comm: str, exe: str) -> bool:
    return comm == "unbound" or exe.endswith("/unbound")


def parse_conf(body: str) -> tuple[dict[str, str], list[str]]:
    """The `server:` clause's `key: value` lines (the last one wins; '#' starts a
    comment; quotes dropped) and the `include:` patterns, in order."""
    values: dict[str, str] = {}
    includes: list[str] = []
    clause = "server"
    for raw in body.splitlines():
        line = raw.split("#", 1)[0].strip()
        key, colon, value = line.partition(":")
        if not colon:
            continue
        key, value = key.strip().lower(), value.strip()
        if key in ("include", "include-toplevel"):
            includes.append(value.strip("\"'"))
        elif not value:
            clause = key  # `server:`, `remote-control:`, `forward-zone:`...
        elif clause == "server":
            values[key] = value.strip("\"'")
    return values, includes


def load(roots: Roots, path: str, depth: int = 0) -> dict[str, str]:
    values, includes = parse_conf(text.host_file(roots, path))
    for pattern in includes if depth < 8 else []:
        for name in text.host_glob(roots, pattern):
            values.update(load(roots, name, depth + 1))
    return values


def settings(values: dict[str, str]) -> Settings:
    def number(key: str, default: int) -> int:
        got = text.to_int(values.get(key))
        return default if got is None else got

    return Settings(
        threads=max(1, number("num-threads", 1)),
        incoming_tcp=number("incoming-num-tcp", DEFAULT_TCP),
        idle_ms=number("tcp-idle-timeout", DEFAULT_IDLE_MS),
        reuseport=values.get("so-reuseport", "yes") == "yes",
        given="incoming-num-tcp" in values,
    )


def read(found: Found, roots: Roots) -> AppLimit:
    path = text.flag(found.main.cmdline, "-c") or DEFAULT_CONF
    s = settings(load(roots, path))
    source: Source = "config" if s.given else "default"
    value = s.incoming_tcp
    spread = (
        f"; so-reuseport with {s.threads} threads: a socket each, spread by hash, so fewer "
        "may be held at once"
        if s.reuseport and s.threads > 1
        else ""
    )
    return AppLimit(
        server=NAME,
        pid=found.main.pid,
        listen=f"{found.host}:{found.port}",
        setting="incoming-num-tcp",
        value=value,
        source=source,
        source_detail=f"{path}: server: incoming-num-tcp; num-threads {s.threads}",
        capacity=s.threads * value,
        in_use=found.established,
        arithmetic=f"num-threads {s.threads} x incoming-num-tcp {value} handlers for this "
        f"listening socket (listen_create){spread}; past half of them in use, idle "
        f"connections are closed after tcp-idle-timeout {s.idle_ms} ms / 100, / 500, then "
        "200 ms (setup_tcp_handler)",
        symptom="new connections wait unanswered in the listen queue; idle ones are closed "
        "sooner the fuller it is",
        raise_=f"incoming-num-tcp: {2 * value} under server: (each handler keeps a "
        "msg-buffer-size buffer), then restart",
        check="dns",
        nofile=found.main.nofile,
        per_setting=s.threads,
    )

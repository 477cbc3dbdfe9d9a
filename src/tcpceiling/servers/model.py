"""What the registry knows of one listening server, as plain typed data."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from tcpceiling.host.roots import Roots
from tcpceiling.probe.serving.protocols import Verdict

#: Where the limit was read: the running server, its command line, its config
#: file, or the server's compiled-in default.
Source = Literal["server", "command line", "config", "default"]


@dataclass(frozen=True)
class ServerProcess:
    """A process that owns a listener (through its socket inode in /proc/PID/fd)."""

    pid: int
    ppid: int
    comm: str
    exe: str
    cmdline: tuple[str, ...]
    nofile: int | None  # soft RLIMIT_NOFILE


@dataclass(frozen=True)
class LineCheck:
    """A server's line protocol as `probe --check` speaks it: the request sent on a
    new connection, the reply prefixes that mean served and those that are the
    server's own error (its refusal)."""

    request: bytes
    served: tuple[bytes, ...]
    refused: tuple[bytes, ...]


@dataclass(frozen=True)
class WireCheck:
    """A server's own handshake as `probe --check` speaks it: the request sent once
    on a new connection, the judge of the reply, and what counts as served where that
    is not a plain reply. A one-time handshake: nothing is re-sent on a held
    connection."""

    request: bytes
    judge: Callable[[bytes], Verdict]
    served_means: str


@dataclass(frozen=True)
class Found:
    """A listening server: its main process (the oldest owner), every process that
    owns the listener (nginx's workers), and the endpoint asked about."""

    main: ServerProcess
    owners: tuple[ServerProcess, ...]
    host: str
    port: int
    listeners: int  # listening sockets the main process owns (nginx counts them)
    established: int | None = None  # connections on the port now (sock_diag)


@dataclass(frozen=True)
class UpstreamServer:
    """One address a proxy connects to for an upstream: an nginx `server` of an
    `upstream {}` block (or a proxy_pass address), an HAProxy backend's `server` line,
    resolved as the server resolved it (every address a name gives is a peer)."""

    host: str
    port: int
    weight: int = 1
    max_conns: int | None = None  # nginx max_conns, HAProxy per-server maxconn
    #: the proxy's own source for this server: addresses it binds (() = the kernel's
    #: choice), the port range it hands out itself (HAProxy source ADDR:LO-HI), and
    #: whether bind() leaves the port to connect() (IP_BIND_ADDRESS_NO_PORT): then
    #: each (source, server) has its own ports; else one pool per source address
    sources: tuple[str, ...] = ()
    port_range: tuple[int, int] | None = None
    bind_no_port: bool = True
    #: the proxy's range is one allocator for every server that inherits it (HAProxy
    #: `source A:LO-HI` on a backend), not one per server (on a server line)
    range_shared: bool = False

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Upstream:
    """Where a proxying listener sends its clients: a named group of servers (nginx
    `upstream`, HAProxy `backend`) or one address, with the proxy's words for it."""

    name: str
    servers: tuple[UpstreamServer, ...]
    #: idle connections kept open toward it per worker (nginx `keepalive N` with
    #: HTTP/1.1 and no Connection: close; HAProxy http-reuse other than never):
    #: 0 means each request opens a connection and the proxy closes it, leaving a
    #: TIME_WAIT on the proxy's port
    keepalive: int = 0
    directive: str = ""  # how the configuration names it: "proxy_pass http://app"
    #: 'split': the source addresses are chosen per client over a map (nginx
    #: proxy_bind $var with split_clients), as opposed to one fixed address
    sources_from: str = ""


@dataclass(frozen=True)
class AppLimit:
    """The server's own cap: how many connections it serves at once, and why."""

    server: str
    pid: int
    listen: str
    setting: str  # e.g. "worker_connections"
    value: int | None  # the setting as read; None: unlimited
    source: Source
    source_detail: str  # the file, command or argument it came from
    capacity: int | None  # connections served at once; None: no cap of its own
    in_use: int | None
    arithmetic: str  # how capacity follows from value, with the server's source
    symptom: str  # the server's own words at the cap
    raise_: str  # the config line
    check: str  # probe --check SPEC that proves it
    nofile_needed: int | None = None  # fds per process the cap needs
    nofile: int | None = None  # the serving process's soft RLIMIT_NOFILE
    known: bool = True  # False: no module of the registry recognised it
    evidence: str = ""  # the server's own words that it reached its cap (a log line...)
    #: the arithmetic, for planning: capacity_at(value) = per_setting x ((value - value //
    #: kept_free_share - own) // per_client) + offset (kept_free_share 0: none), and
    #: the fds it needs = nofile_per_setting x value + nofile_offset. A proxy spends
    #: per_client 2 of the setting on a client: its own connection and the upstream's
    per_setting: int = 1
    offset: int = 0
    kept_free_share: int = 0
    nofile_per_setting: int = 1
    nofile_offset: int = 0
    own: int = 0
    per_client: int = 1

    @property
    def fds_short(self) -> bool:
        """Its RLIMIT_NOFILE is below the fds its own cap needs: it runs out of fds
        (EMFILE) before it reaches the cap."""
        return (
            self.nofile is not None
            and self.nofile_needed is not None
            and self.nofile < self.nofile_needed
        )

    def capacity_at(self, value: int) -> int:
        kept = value // self.kept_free_share if self.kept_free_share else 0
        return self.per_setting * ((value - kept - self.own) // self.per_client) + self.offset

    def setting_for(self, connections: int) -> int:
        """The smallest setting that serves `connections` at once: the linear estimate,
        then the steps the kept-free share's and per-client rounding ask for."""
        share = 1 - (1 / self.kept_free_share if self.kept_free_share else 0)
        linear = (connections - self.offset) * self.per_client / (self.per_setting * share)
        value = max(1, math.ceil(linear + self.own / share))
        while value > 1 and self.capacity_at(value - 1) >= connections:
            value -= 1
        while self.capacity_at(value) < connections:
            value += 1
        return value

    def nofile_for(self, value: int) -> int:
        return math.ceil(self.nofile_per_setting * value + self.nofile_offset)

    per_process: dict[int, int] = field(default_factory=dict)
    #: a proxy: where this listener's clients are sent, each costing one connection
    #: (and one port) toward it; the proxy's own words when it could not connect
    upstreams: tuple[Upstream, ...] = ()
    upstream_words: str = ""
    #: whether those words say connect() found no free port (the module reads them)
    upstream_ports_gone: bool = False
    #: what the proxy says and its clients get when its ports toward an upstream run out
    upstream_symptom: str = ""


class ServerModule(Protocol):
    """One server's knowledge (a module of this package)."""

    NAME: str

    def matches(self, comm: str, exe: str) -> bool: ...

    def read(self, found: Found, roots: Roots) -> AppLimit: ...

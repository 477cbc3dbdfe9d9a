"""What the registry knows of one listening server, as plain typed data."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from tcpceiling.host.roots import Roots
from tcpceiling.probe.protocols import Verdict

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
    #: the arithmetic, for planning: capacity_at(value) = per_setting x (value - value //
    #: kept_free_share) + offset (kept_free_share 0: none), and the fds it needs =
    #: nofile_per_setting x value + nofile_offset
    per_setting: int = 1
    offset: int = 0
    kept_free_share: int = 0
    nofile_per_setting: int = 1
    nofile_offset: int = 0

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
        return self.per_setting * (value - kept) + self.offset

    def setting_for(self, connections: int) -> int:
        """The smallest setting that serves `connections` at once: the linear estimate,
        then the steps the kept-free share's rounding asks for."""
        share = 1 - (1 / self.kept_free_share if self.kept_free_share else 0)
        value = max(1, math.ceil((connections - self.offset) / (self.per_setting * share)))
        while value > 1 and self.capacity_at(value - 1) >= connections:
            value -= 1
        while self.capacity_at(value) < connections:
            value += 1
        return value

    def nofile_for(self, value: int) -> int:
        return math.ceil(self.nofile_per_setting * value + self.nofile_offset)

    per_process: dict[int, int] = field(default_factory=dict)


class ServerModule(Protocol):
    """One server's knowledge (a module of this package)."""

    NAME: str

    def matches(self, comm: str, exe: str) -> bool: ...

    def read(self, found: Found, roots: Roots) -> AppLimit: ...

"""The data of an analysis: scenario in, constraints and a verdict out."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Any, Literal

from tcpceiling.errors import InputError

Role = Literal["server", "client", "nat"]
IoModel = Literal["epoll", "threads"]
Kind = Literal["total", "burst", "rate"]
#: Every constraint a limit family can report (probe stop reasons name these too).
ConstraintId = Literal[
    "ports",
    "time_wait",
    "nofile",
    "file_max",
    "epoll_watches",
    "memory",
    "cgroup_memory",
    "tcp_mem",
    "threads",
    "cgroup_pids",
    "backlog",
    "conntrack",
    "cpu",
    "cpu_churn",
    "app_limit",
    "upstream_ports",
    "upstream_time_wait",
    "snat_ports",
    "firewall",
]


@dataclass(frozen=True, order=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_endpoint(text: str, default_host: str | None = None) -> Endpoint:
    """ "HOST:PORT", "[v6]:PORT" or, with default_host, a bare ":PORT"/"PORT". An IPv6
    address without brackets is refused: "::1:8080" could be either."""
    raw = text.strip()
    if raw.startswith("["):
        host, _, rest = raw[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else rest
    else:
        host, sep, port = raw.rpartition(":")
        if ":" in host:
            raise InputError(f"bad endpoint {text!r}: {_brackets(raw)}")
        if not sep and default_host is not None:
            host, port = default_host, raw
    host = host or (default_host or "")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"bad endpoint {text!r}: expected HOST:PORT with a port 1-65535")
    return Endpoint(host, int(port))


def _brackets(raw: str) -> str:
    """How to write an IPv6 endpoint, given what was written."""
    try:
        address = ipaddress.IPv6Address(raw)
    except ValueError:
        return "an IPv6 address takes brackets: [ADDRESS]:PORT"
    return f"an IPv6 address takes brackets and a port: [{address}]:PORT"


#: Source addresses a run can use: a /16 of IPv4 (each gives a port range per
#: destination, so a /16 is 1.8 billion 4-tuples at the default range).
MAX_SOURCES = 65536


def host_count(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> int:
    """Usable hosts of a network, by arithmetic: all of a /32, /31 (RFC 3021), /128
    or /127; else less the network and broadcast addresses (IPv4) or the
    subnet-router anycast address (IPv6), as ipaddress's hosts() gives them."""
    if net.prefixlen >= net.max_prefixlen - 1:
        return net.num_addresses
    return net.num_addresses - (2 if net.version == 4 else 1)


def parse_network(item: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """An address or a CIDR; host bits set is an error that names the network meant."""
    try:
        return ipaddress.ip_network(item.strip(), strict=True)
    except ValueError as exc:
        try:
            meant = ipaddress.ip_network(item.strip(), strict=False)
        except ValueError:
            raise InputError(f"bad --source-ip {item!r}: {exc}") from exc
        raise InputError(
            f"bad --source-ip {item!r}: host bits are set (the network is {meant})"
        ) from exc


def resolve(endpoint: Endpoint) -> Endpoint:
    """A hostname to its first address (getaddrinfo order: what a client would use)."""
    try:
        infos = socket.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise InputError(f"cannot resolve {endpoint.host!r}: {exc.strerror}") from exc
    return Endpoint(str(infos[0][4][0]), endpoint.port)


def expand_sources(items: tuple[str, ...], limit: int = MAX_SOURCES) -> tuple[str, ...]:
    """Source IPs from addresses and CIDRs (a /24 gives its 254 hosts). The count
    is checked by arithmetic before any address is listed: more than `limit` is an
    error, never a silent cut."""
    nets = [parse_network(item) for item in items]
    total = sum(host_count(n) for n in nets)
    if total > limit:
        raise InputError(
            f"--source-ip gives {total:,} addresses; at most {limit:,} can be used "
            "(a /16 of IPv4): give a smaller network"
        )
    out: list[str] = []
    for net in nets:
        hosts = [net.network_address] if net.num_addresses == 1 else net.hosts()
        out.extend(str(h) for h in hosts)
    return tuple(dict.fromkeys(out))


@dataclass(frozen=True)
class Scenario:
    """What the workload is: role, endpoints, I/O model, processes, traffic."""

    role: Role
    connect: tuple[Endpoint, ...] = ()
    sources: tuple[str, ...] = ()
    listen: tuple[Endpoint, ...] = ()
    clients: int | None = None
    io_model: IoModel = "epoll"
    #: epoll watches per connection on this host; None: one per socket here under
    #: epoll. A prober that only holds its sockets (probe without traffic) watches none.
    epoll_watches: int | None = None
    processes: int = 1
    buffered_bytes: int = 0
    app_bytes_per_conn: int = 0
    backlog: int | None = None
    churn_per_s: float = 0.0
    measured_kernel_bytes: float | None = None
    memory_floor: int = 0
    #: bytes each memory cgroup keeps free (None: the guard's default, max(32 MiB,
    #: 10 % of its limit): analysis.limits.memory.cgroup_floor)
    cgroup_floor: int | None = 0
    #: the other end of every connection is on this host, in this cgroup (a local
    #: load generator, a sidecar, probe's own sink): both ends count
    peer_local: bool = False
    message_rate: float = 0.0  # messages per connection per second
    message_bytes: int = 64
    cpu_us_per_message: float | None = None  # measured by `probe --measure-cpu`
    cpu_target: float = 0.7  # the share of all CPUs the workload may use
    cpu_us_per_cycle: float | None = None  # measured by `tcpceiling rate` (both ends)
    client_hosts: int = 1  # a client role spread over this many hosts like this one

    def __post_init__(self) -> None:
        if self.processes < 1:
            raise InputError("--processes must be at least 1")
        if self.buffered_bytes < 0 or self.app_bytes_per_conn < 0:
            raise InputError("byte counts must not be negative")
        if self.client_hosts < 1:
            raise InputError("--client-hosts must be at least 1")
        if self.clients is not None and self.clients < 1:
            raise InputError("--clients must be at least 1")
        if self.cgroup_floor is not None and self.cgroup_floor < 0:
            raise InputError("--cgroup-floor must not be negative")
        if self.message_rate < 0 or not 0 < self.cpu_target <= 1:
            raise InputError("--message-rate must be >= 0 and --cpu-target in (0, 1]")


@dataclass(frozen=True)
class Constraint:
    """One limit as it applies to a scenario.

    ceiling is the number of connections this limit allows (None: it does not bind
    here, `note` says why); kind "burst" and "rate" constraints are reported apart
    from the total (a backlog caps a burst, TIME_WAIT a churn rate). A rate's ceiling
    is new connections per second with its decimals (100 ports / 60 s = 1.667, not 1).
    """

    id: ConstraintId
    capacity: float | None
    in_use: float | None
    per_connection: float | None
    ceiling: int | float | None
    symptom: str
    raise_: str
    source: str
    kind: Kind = "total"
    unit: str = "connections"
    capacity_unit: str = "connections"
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)


def total_ceiling(c: Constraint) -> int | None:
    """A total constraint's ceiling: whole connections (a rate's keeps decimals)."""
    return None if c.ceiling is None else int(c.ceiling)


@dataclass(frozen=True)
class ScenarioResult:
    role: Role
    ceiling: int | None
    binding: ConstraintId | None
    runners_up: tuple[ConstraintId, ...]
    summary: str
    scenario: Scenario
    constraints: tuple[Constraint, ...]
    #: the other half: new connections per second, and the rate limit reached first
    rate_ceiling: float | None = None  # new connections per second, decimals kept
    rate_binding: ConstraintId | None = None
    rate_summary: str = ""

    def constraint(self, cid: str) -> Constraint:
        for c in self.constraints:
            if c.id == cid:
                return c
        raise KeyError(cid)


@dataclass(frozen=True)
class Analysis:
    scenarios: tuple[ScenarioResult, ...]
    host: dict[str, Any]


#: A documentation address (RFC 5737) standing for "one remote ip:port" when no
#: destination is given; nothing is ever sent to it.
DEFAULT_REMOTE = Endpoint("192.0.2.1", 443)
RoleChoice = Literal["server", "client", "both", "nat"]


def build_scenarios(
    role: RoleChoice,
    connect: tuple[str, ...] = (),
    source_ip: tuple[str, ...] = (),
    listen: tuple[str, ...] = (),
    **common: Any,
) -> list[Scenario]:
    """Scenarios from text as a user gives it: one per role ('both' gives server
    then client); `common` are Scenario's other fields."""
    dests = tuple(parse_endpoint(c) for c in connect)
    listens = tuple(parse_endpoint(x, default_host="0.0.0.0") for x in listen)
    sources = expand_sources(source_ip)
    roles: list[Role] = ["server", "client"] if role == "both" else [role]
    return [
        Scenario(
            role=r,
            connect=(dests or (DEFAULT_REMOTE,)) if r == "client" else dests if r == "nat" else (),
            sources=sources if r in ("client", "nat") else (),
            listen=listens if r == "server" else (),
            **common,
        )
        for r in roles
    ]

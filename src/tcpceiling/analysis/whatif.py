"""What-if: the snapshot as it would read after changing sysctls, rlimits or cgroup
limits (`analyze --set KEY=VALUE`, and how `tune` checks its own plan).

Each key names the file the value would be written to, as sysctl(8) names it, or
the resource: `nofile` and `nproc` (SOFT or SOFT:HARD, prlimit(1)'s form),
`memory.max` and `pids.max` (cgroup v2). Pure: a new HostSnapshot, nothing written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from tcpceiling.errors import InputError, ParseError
from tcpceiling.host import parse
from tcpceiling.host.read import HostSnapshot
from tcpceiling.units import parse_bytes

T = TypeVar("T")
Setting = tuple[str, str]  # (key, value) as the user wrote it
Setter = Callable[[HostSnapshot, str], HostSnapshot]


def _int(text: str, key: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise InputError(f"--set {key}: {text!r} is not an integer") from None
    if value < 0:
        raise InputError(f"--set {key}: must not be negative")
    return value


def _system(field: str) -> Setter:
    def go(snap: HostSnapshot, text: str) -> HostSnapshot:
        change: dict[str, Any] = {field: _int(text, field)}
        return replace(snap, system=replace(snap.system, **change))

    return go


def _net(field: str) -> Setter:
    def go(snap: HostSnapshot, text: str) -> HostSnapshot:
        change: dict[str, Any] = {field: _int(text, field)}
        return replace(snap, net=replace(snap.net, **change))

    return go


def _file_max(snap: HostSnapshot, text: str) -> HostSnapshot:
    nr = replace(snap.system.file_nr, maximum=_int(text, "fs.file-max"))
    return replace(snap, system=replace(snap.system, file_nr=nr))


def _parsed(text: str, key: str, parser: Callable[[str], T]) -> T:
    try:
        return parser(text)
    except ParseError as exc:
        raise InputError(f"--set {key}: {exc}") from None


def _port_range(snap: HostSnapshot, text: str) -> HostSnapshot:
    key = "net.ipv4.ip_local_port_range"
    low, high = _parsed(text, key, parse.parse_port_range)
    return replace(snap, net=replace(snap.net, port_range=(low, high)))


def _reserved(snap: HostSnapshot, text: str) -> HostSnapshot:
    ports = _parsed(text, "net.ipv4.ip_local_reserved_ports", parse.parse_port_list)
    return replace(snap, net=replace(snap.net, reserved_ports=ports))


def _tcp_mem(snap: HostSnapshot, text: str) -> HostSnapshot:
    values = _parsed(text, "net.ipv4.tcp_mem", lambda t: parse.parse_ints(t, 3, "tcp_mem"))
    return replace(snap, system=replace(snap.system, tcp_mem=values))


def _rlimit(field: str) -> Setter:
    """SOFT or SOFT:HARD (prlimit's form); `unlimited` for either."""

    def one(part: str) -> int | None:
        return None if part == "unlimited" else _int(part, field)

    def go(snap: HostSnapshot, text: str) -> HostSnapshot:
        soft, _, hard = text.partition(":")
        limit = parse.RLimit(one(soft), one(hard or soft))
        if limit.soft is not None and limit.hard is not None and limit.soft > limit.hard:
            raise InputError(f"--set {field}: the soft limit is above the hard one")
        change: dict[str, Any] = {field: limit}
        limits = replace(snap.process.limits, **change)
        return replace(snap, process=replace(snap.process, limits=limits))

    return go


def _limit(text: str, key: str) -> int | None:
    """A cgroup limit: "max" (none), bytes with a unit for memory.max, else a count."""
    if text == "max":
        return None
    return parse_bytes(text) if key == "memory.max" else _int(text, key)


def _memory_max(snap: HostSnapshot, text: str) -> HostSnapshot:
    return replace(snap, cgroup=replace(snap.cgroup, memory_limit=_limit(text, "memory.max")))


def _pids_max(snap: HostSnapshot, text: str) -> HostSnapshot:
    return replace(snap, cgroup=replace(snap.cgroup, pids_max=_limit(text, "pids.max")))


#: Every key --set knows, and what it changes in the model.
SETTERS: dict[str, Setter] = {
    "fs.nr_open": _system("nr_open"),
    "fs.file-max": _file_max,
    "fs.epoll.max_user_watches": _system("epoll_max_user_watches"),
    "kernel.pid_max": _system("pid_max"),
    "kernel.threads-max": _system("threads_max"),
    "vm.max_map_count": _system("max_map_count"),
    "net.ipv4.tcp_mem": _tcp_mem,
    "net.ipv4.ip_local_port_range": _port_range,
    "net.ipv4.ip_local_reserved_ports": _reserved,
    "net.core.somaxconn": _net("somaxconn"),
    "net.ipv4.tcp_max_tw_buckets": _net("max_tw_buckets"),
    "net.ipv4.tcp_tw_reuse": _net("tw_reuse"),
    "net.netfilter.nf_conntrack_max": _net("conntrack_max"),
    "nofile": _rlimit("nofile"),
    "nproc": _rlimit("nproc"),
    "memory.max": _memory_max,
    "pids.max": _pids_max,
}


def parse_setting(text: str) -> Setting:
    """KEY=VALUE, KEY one of SETTERS (sysctl keys also with / for .)."""
    key, eq, value = text.partition("=")
    key = key.strip().replace("/", ".")
    if not eq or not value.strip():
        raise InputError(f"--set {text!r}: expected KEY=VALUE")
    if key not in SETTERS:
        raise InputError(f"--set {key}: not a limit the model knows; one of {', '.join(SETTERS)}")
    return key, value.strip()


def apply(snap: HostSnapshot, settings: Sequence[Setting]) -> HostSnapshot:
    """The snapshot with each setting applied in order."""
    for key, value in settings:
        snap = SETTERS[key](snap, value)
    return snap

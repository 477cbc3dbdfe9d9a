"""Pure parsers: text of a /proc, /sys or cgroup file in, a typed frozen value out.

No function here touches the file system. Every one raises only ParseError on
malformed input, so that callers can report which file was wrong.
Formats are those of proc(5), Documentation/filesystems/proc.rst and the
cgroup v1/v2 documentation of Linux 6.x.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from tcpceiling.errors import ParseError

#: Bytes per page on this machine (slab sizes and tcp_mem are counted in pages).
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

T = TypeVar("T")

#: cgroup v1 reports "no limit" as PAGE_COUNTER_MAX rounded to pages; anything
#: this large is treated as unlimited (mm/page_counter.c).
CGROUP_UNLIMITED_FLOOR = 1 << 62


@dataclass(frozen=True)
class RLimit:
    """One resource limit; None means unlimited."""

    soft: int | None
    hard: int | None


@dataclass(frozen=True)
class Limits:
    """Rows of /proc/PID/limits that bear on connections."""

    nofile: RLimit
    nproc: RLimit
    stack: RLimit


@dataclass(frozen=True)
class ProcStatus:
    """Fields of /proc/PID/status: real uid, effective capabilities, thread count."""

    uid: int
    cap_eff: int
    threads: int

    def has_cap(self, bit: int) -> bool:
        return bool(self.cap_eff >> bit & 1)


@dataclass(frozen=True)
class Meminfo:
    """Bytes from /proc/meminfo (the file gives kB)."""

    mem_total: int
    mem_available: int
    slab: int
    mem_free: int = 0
    kernel_stack: int = 0  # 16 KiB per task (THREAD_SIZE), not part of Slab
    page_tables: int = 0
    s_reclaimable: int = 0  # Slab = SReclaimable + SUnreclaim
    s_unreclaim: int = 0


@dataclass(frozen=True)
class Sockstat:
    """The TCP line of /proc/net/sockstat (net/ipv4/proc.c, sockstat_seq_show).

    inuse and tw are per netns; orphan, alloc and mem (pages) are global.
    """

    inuse: int
    orphan: int
    tw: int
    alloc: int
    mem_pages: int


@dataclass(frozen=True)
class FileNr:
    """/proc/sys/fs/file-nr: allocated handles, (always 0), maximum."""

    allocated: int
    maximum: int


@dataclass(frozen=True)
class SlabCache:
    """Geometry of one slab cache: bytes a slot really costs incl. slab packing."""

    name: str
    object_size: int
    objs_per_slab: int
    pages_per_slab: int
    active_objs: int = 0
    #: SLAB_RECLAIM_ACCOUNT (/sys/kernel/slab/NAME/reclaim_account): its pages count
    #: in SReclaimable, not SUnreclaim (mm/slub.c); None where only slabinfo was read
    reclaimable: bool | None = None

    @property
    def effective_size(self) -> float:
        """Bytes per object with the slab page overhead spread over its objects."""
        return self.pages_per_slab * PAGE_SIZE / self.objs_per_slab


def _guard(what: str, fn: Callable[[], T]) -> T:
    """Run fn, turning any ValueError/IndexError/KeyError into a ParseError."""
    try:
        return fn()
    except ParseError:
        raise
    except (ValueError, IndexError, KeyError, OverflowError) as exc:
        raise ParseError(f"cannot parse {what}: {exc}") from exc


def parse_int(text: str, what: str = "integer") -> int:
    """A file holding one integer, e.g. /proc/sys/net/core/somaxconn."""
    return _guard(what, lambda: int(text.strip()))


def parse_ints(text: str, count: int, what: str = "integers") -> tuple[int, ...]:
    """A file holding `count` whitespace separated integers, e.g. tcp_mem."""

    def go() -> tuple[int, ...]:
        parts = text.split()
        if len(parts) != count:
            raise ParseError(f"cannot parse {what}: expected {count} numbers, got {len(parts)}")
        return tuple(int(p) for p in parts)

    return _guard(what, go)


def parse_port_range(text: str) -> tuple[int, int]:
    """/proc/sys/net/ipv4/ip_local_port_range: "low<TAB>high"."""
    low, high = parse_ints(text, 2, "ip_local_port_range")
    if not 0 <= low <= high <= 65535:
        raise ParseError(f"cannot parse ip_local_port_range: bad range {low}-{high}")
    return low, high


def parse_port_list(text: str) -> frozenset[int]:
    """ip_local_reserved_ports: comma separated ports and ranges, e.g. "8080,9000-9010"."""

    def go() -> frozenset[int]:
        ports: set[int] = set()
        for item in text.strip().split(","):
            item = item.strip()
            if not item:
                continue
            low, _, high = item.partition("-")
            lo, hi = int(low), int(high or low)
            if not 0 <= lo <= hi <= 65535:
                raise ParseError(f"cannot parse reserved ports: bad item {item!r}")
            ports.update(range(lo, hi + 1))
        return frozenset(ports)

    return _guard("ip_local_reserved_ports", go)


def _limit_value(word: str) -> int | None:
    return None if word == "unlimited" else int(word)


def parse_limits(text: str) -> Limits:
    """/proc/PID/limits (fs/proc/base.c, proc_pid_limits): fixed-width rows."""
    rows = {
        "Max open files": "nofile",
        "Max processes": "nproc",
        "Max stack size": "stack",
    }

    def go() -> Limits:
        found: dict[str, RLimit] = {}
        for line in text.splitlines():
            for title, key in rows.items():
                if line.startswith(title):
                    words = line[len(title) :].split()
                    found[key] = RLimit(_limit_value(words[0]), _limit_value(words[1]))
        missing = set(rows.values()) - set(found)
        if missing:
            raise ParseError(f"cannot parse limits: missing {', '.join(sorted(missing))}")
        return Limits(**found)

    return _guard("limits", go)


def _fields(text: str, sep: str = ":") -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, found, value = line.partition(sep)
        if found:
            out[key.strip()] = value.strip()
    return out


def parse_status(text: str) -> ProcStatus:
    """/proc/PID/status: Uid (real), CapEff (hex), Threads."""

    def go() -> ProcStatus:
        f = _fields(text)
        return ProcStatus(
            uid=int(f["Uid"].split()[0]), cap_eff=int(f["CapEff"], 16), threads=int(f["Threads"])
        )

    return _guard("status", go)


def parse_meminfo(text: str) -> Meminfo:
    """/proc/meminfo, kB values turned into bytes."""

    def go() -> Meminfo:
        f = _fields(text)

        def kb(key: str) -> int:
            return int(f[key].split()[0]) * 1024

        def opt(key: str) -> int:
            return kb(key) if key in f else 0

        return Meminfo(
            kb("MemTotal"),
            kb("MemAvailable"),
            kb("Slab"),
            kb("MemFree"),
            opt("KernelStack"),
            opt("PageTables"),
            opt("SReclaimable"),
            opt("SUnreclaim"),
        )

    return _guard("meminfo", go)


def parse_sockstat(text: str) -> Sockstat:
    """/proc/net/sockstat: the line "TCP: inuse X orphan Y tw Z alloc A mem M"."""

    def go() -> Sockstat:
        for line in text.splitlines():
            if line.startswith("TCP:"):
                words = line.split()[1:]
                kv = dict(zip(words[::2], (int(w) for w in words[1::2]), strict=True))
                return Sockstat(kv["inuse"], kv["orphan"], kv["tw"], kv["alloc"], kv["mem"])
        raise ParseError("cannot parse sockstat: no TCP line")

    return _guard("sockstat", go)


def parse_file_nr(text: str) -> FileNr:
    """/proc/sys/fs/file-nr: allocated, unused (0 since 2.6), max."""
    allocated, _unused, maximum = parse_ints(text, 3, "file-nr")
    return FileNr(allocated, maximum)


def parse_loadavg_tasks(text: str) -> int:
    """/proc/loadavg fourth field "running/total": total tasks (threads) on the system."""
    return _guard("loadavg", lambda: int(text.split()[3].split("/")[1]))


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """/proc/PID/cgroup lines "id:controllers:path" -> {controller: path}; v2 is key ""."""

    def go() -> dict[str, str]:
        out: dict[str, str] = {}
        for line in text.splitlines():
            if not line.strip():
                continue
            _hid, controllers, path = line.split(":", 2)
            for name in controllers.split(",") if controllers else [""]:
                out[name] = path
        return out

    return _guard("cgroup membership", go)


def parse_cgroup_value(text: str) -> int | None:
    """memory.max / pids.max / memory.limit_in_bytes: a number, or None for no limit."""
    word = text.strip()
    if word == "max":
        return None
    value = parse_int(word, "cgroup value")
    return None if value >= CGROUP_UNLIMITED_FLOOR else value


def parse_flat_keyed(text: str, what: str = "flat keyed file") -> dict[str, int]:
    """'KEY VALUE' per line: memory.stat, memory.events, memory.oom_control
    (Documentation/admin-guide/cgroup-v2.rst, "Format", flat keyed)."""

    def go() -> dict[str, int]:
        out: dict[str, int] = {}
        for line in text.splitlines():
            words = line.split()
            if len(words) == 2:
                out[words[0]] = int(words[1])
            elif words:
                raise ValueError(f"not KEY VALUE: {line!r}")
        return out

    return _guard(what, go)


def parse_slabinfo(text: str) -> dict[str, SlabCache]:
    """/proc/slabinfo 2.1: name active num objsize objperslab pagesperslab : ..."""

    def go() -> dict[str, SlabCache]:
        out: dict[str, SlabCache] = {}
        for line in text.splitlines():
            if line.startswith(("slabinfo", "#")) or not line.strip():
                continue
            w = line.split()
            out[w[0]] = SlabCache(w[0], int(w[3]), int(w[4]), int(w[5]), int(w[1]))
        return out

    return _guard("slabinfo", go)


def slab_aliases(links: Mapping[str, str | None]) -> dict[str, tuple[str, ...]]:
    """SLUB merges caches of like size and flags into one (mm/slab_common.c,
    find_mergeable): /sys/kernel/slab/NAME is then a symlink to the shared cache
    (":A-0000128"), and /proc/slabinfo shows it under one of its names only. Given
    name -> link target (None: not merged), each merged name -> the others sharing
    its cache."""
    out: dict[str, tuple[str, ...]] = {}
    for name, target in links.items():
        if target is None:
            continue
        others = tuple(n for n, t in links.items() if t == target and n != name)
        if others:
            out[name] = others
    return out


def parse_netstat(text: str) -> dict[str, int]:
    """/proc/net/netstat or /proc/net/snmp: header/value line pairs -> {"TcpExt.X": n}."""

    def go() -> dict[str, int]:
        out: dict[str, int] = {}
        lines = [ln for ln in text.splitlines() if ln.strip()]
        for head, values in zip(lines[::2], lines[1::2], strict=False):
            prefix, names = head.split(":", 1)
            vprefix, nums = values.split(":", 1)
            if prefix != vprefix:
                raise ParseError(f"cannot parse netstat: {prefix!r} row without values")
            for name, num in zip(names.split(), nums.split(), strict=True):
                out[f"{prefix}.{name}"] = int(num)
        return out

    return _guard("netstat", go)


def parse_conntrack_stat(text: str) -> dict[str, int]:
    """/proc/net/stat/nf_conntrack (net/netfilter/nf_conntrack_standalone.c)."""
    return parse_percpu_stat(text, "nf_conntrack stat")


def parse_percpu_stat(text: str, what: str = "/proc/net/stat table") -> dict[str, int]:
    """A /proc/net/stat table (nf_conntrack, arp_cache): a header of names, then one
    row of hex per CPU, summed per name ("entries" is a global gauge repeated per
    CPU: taken once)."""

    def go() -> dict[str, int]:
        lines = [ln.split() for ln in text.splitlines() if ln.strip()]
        names, rows = lines[0], lines[1:]
        if not rows or any(len(r) != len(names) for r in rows):
            raise ParseError(f"cannot parse {what}: rows and header differ")
        out = {n: sum(int(r[i], 16) for r in rows) for i, n in enumerate(names)}
        if "entries" in out:
            out["entries"] = int(rows[0][names.index("entries")], 16)
        return out

    return _guard(what, go)


def parse_cpu_list(text: str) -> int:
    """/sys/devices/system/cpu/online, e.g. "0-1" or "0,2-5": the number of CPUs."""

    def go() -> int:
        count = 0
        for part in text.strip().split(","):
            low, _, high = part.partition("-")
            count += (int(high) if high else int(low)) - int(low) + 1
        if count < 1:
            raise ParseError(f"cannot parse cpu list {text!r}")
        return count

    return _guard("cpu list", go)


#: Pids below this are not handed out again once allocation has passed it
#: (RESERVED_PIDS, include/linux/pid.h; alloc_pid in kernel/pid.c).
RESERVED_PIDS = 300


def pid_room(pid_max: int, pids: list[int]) -> int:
    """How many more tasks fit under pid_max, given the pids in use in a pid namespace.

    alloc_pid (kernel/pid.c) hands pids out cyclically: from the last one given up to
    pid_max - 1, then, once past RESERVED_PIDS, from RESERVED_PIDS again. The last
    pid given is taken to be the highest in use: every pid above it is free, and
    below it the free ones at or above RESERVED_PIDS."""
    if not pids:
        return max(0, pid_max - 1)
    top = max(pids)
    above = max(0, pid_max - 1 - top)
    if top < RESERVED_PIDS:
        return above
    used_below = sum(1 for p in pids if RESERVED_PIDS <= p < top)
    return above + max(0, top - RESERVED_PIDS - used_below)

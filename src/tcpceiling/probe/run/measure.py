"""What the connections cost: kernel Slab delta (with its breakdown by slab cache),
MemAvailable drop, worker RSS and CPU (psutil), all per established connection."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import psutil

from tcpceiling.host import parse
from tcpceiling.host.read import (
    SOCKET_SLABS,
    read_meminfo,
    read_meminfo_field,
    read_slab_links,
    read_slabinfo,
)
from tcpceiling.host.roots import Roots
from tcpceiling.probe.run import slabmeter
from tcpceiling.probe.run.result import PerConnection


def mem_field(name: str, roots: Roots | None = None) -> int:
    """One /proc/meminfo field in bytes (host.read.read_meminfo_field)."""
    return read_meminfo_field(roots or Roots(), name)


def wait_settled(timeout: float = 15.0, window: float = 0.5, tolerance: int = 4 << 20) -> bool:
    """Wait until MemFree and Slab move less than `tolerance` over `window` seconds.

    A previous run's sockets and namespace are freed asynchronously (RCU, the netns
    cleanup workqueue); a baseline taken meanwhile would count that memory coming
    back as the next run's connections costing nothing.
    """
    deadline = time.monotonic() + timeout

    def read() -> tuple[int, int]:
        return mem_field("MemFree"), mem_field("Slab")

    last = read()
    while time.monotonic() < deadline:
        time.sleep(window)
        now = read()
        if all(abs(a - b) < tolerance for a, b in zip(now, last, strict=True)):
            return True
        last = now
    return False


def mem_available() -> int:
    return mem_field("MemAvailable")


def meminfo(roots: Roots | None = None) -> parse.Meminfo:
    return read_meminfo(roots or Roots())


@dataclass(frozen=True)
class Sample:
    meminfo: parse.Meminfo
    slabs: dict[str, parse.SlabCache]
    #: slabinfo names SLUB merged with other socket caches (parse.slab_aliases)
    aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def take(cls, roots: Roots | None = None) -> Sample:
        roots = roots or Roots()
        meminfo = read_meminfo(roots)
        return cls(meminfo, read_slabinfo(roots), parse.slab_aliases(read_slab_links(roots)))


@dataclass(frozen=True)
class Usage:
    cpu_seconds: float
    rss_bytes: int


def process_usage(pids: list[int]) -> Usage:
    """CPU (user+system) and RSS of the workers plus this coordinator."""
    cpu, rss = 0.0, 0
    for pid in [*pids, os.getpid()]:
        try:
            p = psutil.Process(pid)
            t = p.cpu_times()
            cpu += t.user + t.system
            if pid != os.getpid():
                rss += p.memory_info().rss
        except psutil.Error:
            continue
    return Usage(cpu, rss)


def softirq_threads() -> list[int]:
    """The ksoftirqd/N threads: where the kernel runs softirq work it could not finish
    on the way out of an interrupt or a local_bh_enable() (kernel/softirq.c), such
    as a burst of loopback packets past net_rx_action's budget."""
    return [p.pid for p in psutil.process_iter(["name"])
            if (p.info["name"] or "").startswith("ksoftirqd/")]  # fmt: skip


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes (every thread), via psutil."""
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


def slab_breakdown(before: Sample, after: Sample, n: int) -> dict[str, float]:
    """Bytes per connection by slab cache (/proc/slabinfo names; SLUB merges some
    caches, so a name may carry others' objects: docs/limits.md §4)."""
    out = {}
    for name in SOCKET_SLABS:
        a, b = before.slabs.get(name), after.slabs.get(name)
        if a is None or b is None or not n:
            continue
        delta = (b.active_objs - a.active_objs) * b.effective_size / n
        if abs(delta) >= 1:
            out[name] = round(delta, 1)
    return out


def per_connection(
    before: Sample, after: Sample, n: int, usage: Usage, start_rss: int, share: float | None
) -> PerConnection:
    """Each figure's growth over n. Slab's is the run's own (slabmeter.growth, with
    `share` as the memory guard meters it); reclaimable growth past the sockets'
    share is another process's cache and is given apart."""
    if n <= 0:
        return PerConnection(None, None, None)
    a, b = before.meminfo, after.meminfo
    slab, foreign = slabmeter.growth(a, b, share)
    tasks = (b.kernel_stack - a.kernel_stack) + (b.page_tables - a.page_tables)
    user = max(0, usage.rss_bytes - start_rss)
    breakdown = slab_breakdown(before, after, n)
    return PerConnection(
        kernel_bytes=round(slab / n, 1),
        user_bytes=round(user / n, 1),
        mem_available_bytes=round((a.mem_available - b.mem_available) / n, 1),
        slab_breakdown=breakdown,
        slab_shared={k: list(v) for k, v in after.aliases.items() if k in breakdown},
        total_bytes=round((slab + tasks + user) / n, 1),
        task_bytes=round(tasks / n, 1),
        foreign_reclaimable_bytes=round(foreign / n, 1),
    )

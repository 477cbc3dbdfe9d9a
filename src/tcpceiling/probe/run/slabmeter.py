"""The memory guard's meter of what the run's connections cost the kernel: Slab
growth since opening began, with reclaimable slab counted only up to the sockets'
own share of it.

Slab, not MemAvailable or MemFree: MemAvailable counts pinned sockfs inodes and
dentries as half reclaimable (si_mem_available, mm/show_mem.c), and MemFree misses
pages parked on the per-CPU free lists the slab allocator draws from.

A socket's inode (sock_inode_cache) and dentry are made in caches created with
SLAB_RECLAIM_ACCOUNT (net/socket.c init_inodecache, fs/dcache.c dcache_init), so
their pages count in /proc/meminfo's SReclaimable although an open socket pins them;
its tcp_sock, file and LSM blobs count in SUnreclaim. Another process reading
/proc/PID/fd of the run's workers (a monitoring agent, `ls -l`, psutil's
num_fds()) makes a proc inode and a dentry per fd, reclaimable too: on this 2-core
VM that added up to 1,800 B per connection to Slab in some runs, 9.5 KB against 7.7
(proc_inode_cache in /proc/slabinfo; docs/probe.md, "Guards"). The kernel frees
those under pressure, so they do not eat the host's room; counting them stopped
the guard 10-14 % short of analyze's prediction.

The meter counts all of SUnreclaim's growth (whoever made it) and of SReclaimable's
no more than the share slab geometry gives the run's own sockets: the reclaimable
bytes of one socket's caches per unreclaimable byte (/sys/kernel/slab/NAME:
reclaim_account and the object's size with slab packing). One socket's share is the
most a connection has: its epoll watch and port buckets add only unreclaimable
bytes. Where the flags cannot be read (no sysfs), all of Slab's growth counts.
"""

from __future__ import annotations

from dataclasses import dataclass

from tcpceiling.analysis.costs import SOCKET_PARTS
from tcpceiling.host.parse import Meminfo, SlabCache


@dataclass(frozen=True)
class SlabMeter:
    """Where the run's Slab started and how much it may grow."""

    unreclaimable: int  # SUnreclaim when opening began, bytes
    reclaimable: int  # SReclaimable then
    room: int  # MemAvailable less the floor then: the growth the budget allows
    share: float | None  # the sockets' reclaimable bytes per unreclaimable one
    split: bool = True  # False: meminfo had no SReclaimable/SUnreclaim, Slab is metered

    @property
    def fields(self) -> tuple[bytes, ...]:
        """The /proc/meminfo fields grown() takes, in its order."""
        return (b"SUnreclaim:", b"SReclaimable:") if self.split else (b"Slab:",)

    def grown(self, unreclaimable: int, reclaimable: int = 0) -> int:
        """The run's Slab growth: all of SUnreclaim's, SReclaimable's up to the share."""
        du = unreclaimable - self.unreclaimable
        dr = reclaimable - self.reclaimable
        if self.share is None:
            return du + dr
        return du + min(dr, int(self.share * max(du, 0)))

    def foreign(self, unreclaimable: int, reclaimable: int = 0) -> int:
        """Reclaimable growth past the sockets' share: left out of grown()."""
        whole = unreclaimable - self.unreclaimable + reclaimable - self.reclaimable
        return whole - self.grown(unreclaimable, reclaimable)

    def over(self, unreclaimable: int, reclaimable: int = 0) -> bool:
        return self.grown(unreclaimable, reclaimable) > self.room


def socket_share(slabs: dict[str, SlabCache]) -> float | None:
    """One socket's reclaimable slab bytes per unreclaimable byte (TCP, or TCPv6
    where IPv4's cache is not read: a larger tcp_sock, a smaller share); None when a
    cache's flag is unknown."""
    proto = "TCP" if "TCP" in slabs else "TCPv6"
    caches = [slabs.get(name) for name in (proto, *SOCKET_PARTS)]
    known = [c for c in caches if c is not None and c.reclaimable is not None]
    if len(known) < len(caches):
        return None
    unreclaimable = sum(c.effective_size for c in known if not c.reclaimable)
    reclaimable = sum(c.effective_size for c in known if c.reclaimable)
    return reclaimable / unreclaimable if unreclaimable else None


def metering(m: Meminfo, room: int, share: float | None) -> SlabMeter:
    """A meter from /proc/meminfo read as opening begins. A meminfo without the
    split (SReclaimable and SUnreclaim both 0) meters Slab whole."""
    if not (m.s_reclaimable or m.s_unreclaim):
        return SlabMeter(m.slab, 0, room, None, split=False)
    return SlabMeter(m.s_unreclaim, m.s_reclaimable, room, share)


def start(m: Meminfo, floor: int, slabs: dict[str, SlabCache]) -> SlabMeter:
    """The guard's meter: its room is MemAvailable less the floor."""
    return metering(m, m.mem_available - floor, socket_share(slabs))


def growth(before: Meminfo, after: Meminfo, share: float | None) -> tuple[int, int]:
    """(the run's Slab growth, reclaimable growth past the sockets' share) between
    two readings."""
    meter = metering(before, 0, share)
    now = reading(after)
    return meter.grown(*now), meter.foreign(*now)


def reading(m: Meminfo) -> tuple[int, int]:
    """(unreclaimable, reclaimable) as SlabMeter.grown takes them."""
    if not (m.s_reclaimable or m.s_unreclaim):
        return m.slab, 0
    return m.s_unreclaim, m.s_reclaimable

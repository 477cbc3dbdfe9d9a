"""What one connection costs in kernel and user memory.

The idle-socket figure is built from this kernel's own slab geometry
(/sys/kernel/slab/NAME: order and objs_per_slab give the bytes each object really
takes, slab packing included), as measured on Linux 6.18 (docs/limits.md §4): TCP 2,521 +
sock_inode_cache 862 + filp 195 + dentry 195 + LSM blobs 56 = 3,829 B, against
3,800 B measured. Fallbacks are those measured numbers, for kernels where a cache
cannot be read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tcpceiling.host.parse import PAGE_SIZE, SlabCache

PAGE = PAGE_SIZE  # bytes per page (os.sysconf)

#: Measured on Linux 6.18 (docs/limits.md §4, §6); used when a slab cannot be read.
FALLBACK_SLAB_BYTES = {
    "TCP": 2521.0,
    "TCPv6": 2521.0,
    "sock_inode_cache": 862.0,
    "filp": 195.0,
    "dentry": 195.0,
    "lsm_inode_cache": 32.0,
    "lsm_file_cache": 24.0,
    "eventpoll_epi": 128.0,
    "eventpoll_pwq": 64.0,
    "tcp_bind_bucket": 128.0,
    "tcp_bind2_bucket": 128.0,
}
#: ep_head, a 16-byte kmalloc per watched file (fs/eventpoll.c, attach_epitem).
EPOLL_HEAD_BYTES = 16.0
#: fd table slot: an 8-byte pointer plus bitmap bits, grown in powers of two (≈13 measured).
FD_TABLE_BYTES = 13.0
#: One blocked Python threading.Thread: kernel stack 16 KiB, task_struct and VMAs,
#: page tables and 16 KiB RSS; MemFree fell ≈44 KB per thread (docs/limits.md §6).
PYTHON_THREAD_BYTES = 44_000.0

PORT_BUCKETS = "client port buckets"
IDLE_SOCKET = "idle socket"
SOCKET_PARTS = ("sock_inode_cache", "filp", "dentry", "lsm_inode_cache", "lsm_file_cache")


@dataclass(frozen=True)
class CostItem:
    name: str
    bytes: float
    count: float
    source: str

    @property
    def total(self) -> float:
        return self.bytes * self.count


@dataclass(frozen=True)
class PortPool:
    """The (source, local port) pairs a client's connections share.

    connect() may hand out a local port already in use toward another destination:
    __inet_hash_connect checks only that the 4-tuple is free (net/ipv4/
    inet_hashtables.c). Connections to one destination take N distinct ports; to D
    destinations, each a run of N/D ports from its own hashed offset, they cover
    P(1 - (1 - N/(D P))^D) of a source's P ports. Measured on this machine with 30
    destinations: 36 B of bucket per connection at 100k (this model: 70), 127 at 24k,
    where one port per connection would be 256."""

    ports: int  # usable local ports per source
    sources: int
    destinations: int  # per source

    def pairs(self, n: float) -> float:
        """(source, port) pairs in use by n connections spread evenly."""
        if self.destinations <= 1:
            return n
        full = self.destinations * self.ports
        share = min(1.0, n / self.sources / full)
        return self.sources * self.ports * (1 - (1 - share) ** self.destinations)


@dataclass(frozen=True)
class ConnectionCost:
    items: tuple[CostItem, ...]
    pool: PortPool | None = None  # the client port buckets are shared among these

    def bucket_share(self, n: int) -> float:
        """Port bucket pairs per connection when n are held: 1, or fewer when the
        pool is shared among several destinations."""
        if self.pool is None or n <= 0:
            return 1.0
        return self.pool.pairs(n) / n

    def bytes_for(self, n: int) -> float:
        """Bytes n connections cost: every item per connection but the port buckets,
        one pair per (source, port) in use."""
        share = self.bucket_share(n)
        if share >= 1.0:
            return n * self.total
        return n * (self.unshared + (self.total - self.unshared) * share)

    def fit(self, budget: float) -> int:
        """The most connections whose bytes_for() fits the budget (bytes_for only
        grows with n, so a bisection between budget/total and budget/unshared)."""
        if budget <= 0 or self.total <= 0:
            return 0
        lo = int(budget // self.total)  # every connection with its own port
        hi = int(budget // max(self.unshared, 1e-9))  # as if buckets cost nothing
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if self.bytes_for(mid) <= budget else (lo, mid - 1)
        return lo

    @property
    def unshared(self) -> float:
        """Per-connection bytes without the port buckets (the floor of bytes_for(n)/n)."""
        return self.total - sum(i.total for i in self.items if i.name == PORT_BUCKETS)

    @property
    def kernel_bytes(self) -> float:
        return sum(i.total for i in self.items if not i.name.startswith("app"))

    @property
    def total(self) -> float:
        return sum(i.total for i in self.items)


def slab_bytes(slabs: dict[str, SlabCache], name: str) -> tuple[float, str]:
    """Effective bytes of one object of cache `name`, and where the figure came from."""
    cache = slabs.get(name)
    if cache is not None:
        return (
            cache.effective_size,
            f"slab {name}: {cache.pages_per_slab} pages / {cache.objs_per_slab} objects",
        )
    return FALLBACK_SLAB_BYTES[name], f"{name}: measured on 6.18 (docs/limits.md §4)"


def slab_sum(slabs: dict[str, SlabCache], parts: list[str]) -> tuple[float, str]:
    """Bytes of one object of each cache, and the sum's source: the caches, and
    which of them had no geometry to read and took the figure measured on 6.18."""
    total = sum(slab_bytes(slabs, p)[0] for p in parts)
    fallback = [p for p in parts if p not in slabs]
    src = " + ".join(parts)
    if fallback:
        src += f" (fallback, measured on 6.18: {', '.join(fallback)})"
    return total, src


def idle_socket(slabs: dict[str, SlabCache], ipv6: bool) -> CostItem:
    """One idle TCP socket: tcp_sock, socket inode, file, dentry, LSM blobs."""
    total, src = slab_sum(slabs, ["TCPv6" if ipv6 else "TCP", *SOCKET_PARTS])
    return CostItem(IDLE_SOCKET, total, 1, "sum of slab object sizes: " + src)


def epoll_item(slabs: dict[str, SlabCache]) -> CostItem:
    """epitem + eppoll_entry + ep_head for one registered fd (docs/limits.md §4)."""
    total, src = slab_sum(slabs, ["eventpoll_epi", "eventpoll_pwq"])
    return CostItem("epoll watch", total + EPOLL_HEAD_BYTES, 1, f"{src} + 16")


def port_bucket(slabs: dict[str, SlabCache]) -> CostItem:
    """tcp_bind_bucket + tcp_bind2_bucket of a client's local port (at most one pair
    per connection: see PortPool)."""
    total, src = slab_sum(slabs, ["tcp_bind_bucket", "tcp_bind2_bucket"])
    return CostItem(PORT_BUCKETS, total, 1, src)


def buffered(nbytes: int) -> CostItem:
    """Queued data is charged in whole pages (sk_forward_alloc; docs/limits.md §5)."""
    pages = math.ceil(nbytes / PAGE) if nbytes > 0 else 0
    return CostItem(
        "buffered data (page-rounded)",
        float(pages * PAGE),
        1,
        "--buffered-bytes rounded up to pages",
    )


def measured(kernel_bytes: float, sockets: int) -> CostItem:
    """A probe's measured kernel bytes per loopback connection (both ends), scaled."""
    return CostItem("measured kernel cost", kernel_bytes / 2, sockets, "--cost-from probe result")

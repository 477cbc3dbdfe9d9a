"""Everything a limit family needs: the snapshot, the scenario, and what follows from
them (the (source, destination) tuples, whether the peer is local, the cost of one
connection)."""

from __future__ import annotations

from dataclasses import dataclass

from tcpceiling.analysis import costs
from tcpceiling.analysis.model import Endpoint, Scenario
from tcpceiling.host.read import HostSnapshot

CAP_SYS_ADMIN = 21
CAP_SYS_RESOURCE = 24

PathTuple = tuple[str | None, Endpoint]  # (source IP or None: kernel's choice, destination)


@dataclass(frozen=True)
class Context:
    snap: HostSnapshot
    scenario: Scenario
    tuples: tuple[PathTuple, ...]
    peer_local: bool
    cost: costs.ConnectionCost

    @property
    def sockets_here(self) -> int:
        """Sockets on this host per connection: both ends when the peer is local."""
        return 2 if self.peer_local else 1

    @property
    def watches(self) -> int:
        """epoll watches per connection on this host (none unless the model is epoll)."""
        return watches_per_connection(self.scenario, self.sockets_here)

    @property
    def is_admin(self) -> bool:
        return self.snap.process.status.has_cap(CAP_SYS_ADMIN)

    @property
    def can_raise_hard(self) -> bool:
        return self.snap.process.status.has_cap(CAP_SYS_RESOURCE)

    def sysctl(self, assignment: str) -> str:
        """A sysctl command, run inside the analysed namespace when there is one."""
        cmd = f"sysctl -w {assignment}"
        return f"ip netns exec {self.snap.netns} {cmd}" if self.snap.netns else cmd

    def proc(self, rel: str) -> str:
        """The file a value came from, as a path under the procfs root."""
        return str(self.snap.roots.procfs / rel)

    def sys(self, rel: str) -> str:
        """The file a value came from, as a path under the sysfs root."""
        return str(self.snap.roots.sysfs / rel)


def watches_per_connection(scenario: Scenario, sockets: int) -> int:
    """One epoll watch per socket here under epoll (epitem + pwq, fs/eventpoll.c),
    unless the scenario says how many of its ends are watched."""
    if scenario.io_model != "epoll":
        return 0
    return sockets if scenario.epoll_watches is None else scenario.epoll_watches


def port_pool(snap: HostSnapshot, tuples: tuple[PathTuple, ...]) -> costs.PortPool | None:
    """The local ports a client's connections share (costs.PortPool): the range less
    its reserved ports, per source, over the destinations of each source."""
    if not tuples:
        return None
    low, high = snap.net.port_range
    size = high - low + 1 - in_port_range(snap, snap.net.reserved_ports)
    sources = len({src for src, _dst in tuples})
    return costs.PortPool(size, sources, max(1, len(tuples) // sources))


def in_port_range(snap: HostSnapshot, ports: frozenset[int]) -> int:
    """How many of `ports` lie in the ephemeral range (ip_local_port_range)."""
    low, high = snap.net.port_range
    return sum(1 for p in ports if low <= p <= high)


def connection_cost(
    snap: HostSnapshot,
    scenario: Scenario,
    peer_local: bool,
    pool: costs.PortPool | None = None,
) -> costs.ConnectionCost:
    """Kernel + user bytes of one connection for this scenario (see tcpceiling.analysis.costs)."""
    slabs = snap.system.slabs
    sockets = 2 if peer_local else 1
    ipv6 = any(":" in e.host for e in (*scenario.connect, *scenario.listen))
    items: list[costs.CostItem] = []
    if scenario.measured_kernel_bytes is not None:
        items.append(costs.measured(scenario.measured_kernel_bytes, sockets))
    else:
        sock = costs.idle_socket(slabs, ipv6)
        items.append(costs.CostItem(sock.name, sock.bytes, sockets, sock.source))
        items.append(
            costs.CostItem(
                "fd table slot",
                costs.FD_TABLE_BYTES,
                sockets,
                "8 B pointer + bitmaps (≈13 B measured)",
            )
        )
        watches = watches_per_connection(scenario, sockets)
        if watches:
            ep = costs.epoll_item(slabs)
            items.append(costs.CostItem(ep.name, ep.bytes, watches, ep.source))
        if scenario.role == "client":
            items.append(costs.port_bucket(slabs))
    if scenario.io_model == "threads":
        items.append(
            costs.CostItem(
                "thread per connection",
                costs.PYTHON_THREAD_BYTES,
                1,
                "Python thread, measured ≈44 KB (docs/limits.md §6)",
            )
        )
    if scenario.buffered_bytes:
        items.append(costs.buffered(scenario.buffered_bytes))
    if scenario.app_bytes_per_conn:
        items.append(
            costs.CostItem(
                "app bytes", float(scenario.app_bytes_per_conn), 1, "--app-bytes-per-conn"
            )
        )
    return costs.ConnectionCost(tuple(items), pool)

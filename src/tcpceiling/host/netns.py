"""Network namespaces: enter a named one for reading, or make a private one for a run.

Per-netns sysctls under /proc/sys/net and the files under /proc/net follow the
namespace of the calling thread, so reading "inside" a namespace is a setns()
around ordinary reads (pyroute2.netns.pushns/popns; os.setns needs Python 3.12).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tcpceiling.errors import InputError
from tcpceiling.host.roots import Roots
from tcpceiling.signals import deferred

NETNS_RUN_DIR = Path("/run/netns")


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise InputError(f"{what} needs root (CAP_SYS_ADMIN); run as root or leave it out")


@contextmanager
def inside(name: str | None) -> Iterator[None]:
    """Run the body with the calling thread in network namespace `name` (None: stay)."""
    if name is None:
        yield
        return
    require(name)
    from pyroute2 import netns

    netns.pushns(name)
    try:
        yield
    finally:
        netns.popns()


@contextmanager
def of_process(pid: int, roots: Roots) -> Iterator[None]:
    """Run the body with the calling thread in the network namespace of process pid."""
    from pyroute2 import netns

    netns.pushns(str(roots.procfs / str(pid) / "ns" / "net"))
    try:
        yield
    finally:
        netns.popns()


def require(name: str) -> None:
    """Root, and a named namespace that exists (an input error otherwise)."""
    require_root(f"--netns {name}")
    if not (NETNS_RUN_DIR / name).exists():
        raise InputError(f"no network namespace named {name!r} (see `ip netns list`)")


def create(name: str) -> None:
    """Make a named netns with loopback up (the kernel starts it down)."""
    from pyroute2 import IPRoute, netns

    netns.create(name)
    with inside(name), IPRoute() as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")


@contextmanager
def made(name: str) -> Iterator[str]:
    """A named netns of ours for the body, removed after on every way out. Its
    making holds SIGINT and SIGTERM off until it is done (then raised): making it
    runs other processes (pyroute2 finds libc with ldconfig), and a Ctrl-C in
    between ended the run with the namespace made and the body's clean-up not yet
    entered: the namespace was left behind."""
    try:
        with deferred():
            create(name)
        yield name
    finally:
        remove(name)


def remove(name: str) -> None:
    """Delete a named netns; its sockets die with it once no process is inside."""
    from pyroute2 import netns

    if (NETNS_RUN_DIR / name).exists():
        netns.remove(name)


def add_addresses(name: str, addresses: tuple[str, ...]) -> None:
    """Add host addresses (/32, /128) to loopback inside namespace `name`."""
    from pyroute2 import IPRoute

    with inside(name), IPRoute() as ipr:
        lo = ipr.link_lookup(ifname="lo")[0]
        for a in addresses:
            ipr.addr("add", index=lo, address=a, prefixlen=128 if ":" in a else 32)

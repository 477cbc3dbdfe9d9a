"""Network namespaces: enter a named one for reading, or make a private one for a run.

Per-netns sysctls under /proc/sys/net and the files under /proc/net follow the
namespace of the calling thread, so reading "inside" a namespace is a setns(2) of
that thread around ordinary reads (libc's, as pyroute2.netns.setns calls it;
os.setns needs Python 3.12), back to the namespace the thread was in.

Making, removing and addressing namespaces (netlink, mounts) is pyroute2's work, done
in a forked child that exits after it: once imported, pyroute2 holds 16 MiB of
anonymous memory in the importing process (RssAnon of `python3 -c "import pyroute2"`
less that of `python3 -c pass`: 23.2 against 6.9 MiB, pyroute2 0.9.7). In a probe's
own process that memory is charged to the memory cgroup the probe proves, so it was
16 MiB, about 3,000 connections, that the proof could not reach.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tcpceiling.errors import InputError
from tcpceiling.host.roots import Roots
from tcpceiling.signals import deferred

NETNS_RUN_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000  # include/uapi/linux/sched.h
_libc = ctypes.CDLL(None, use_errno=True)  # the process's own libc: no ldconfig run


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
    with _entered(NETNS_RUN_DIR / name):
        yield


@contextmanager
def of_process(pid: int, roots: Roots) -> Iterator[None]:
    """Run the body with the calling thread in the network namespace of process pid."""
    with _entered(roots.procfs / str(pid) / "ns" / "net"):
        yield


@contextmanager
def _entered(path: Path) -> Iterator[None]:
    """The calling thread in the namespace open at `path` for the body, then back in
    its own (/proc/thread-self/ns/net: the thread's, where /proc/self would give the
    main thread's)."""
    own = os.open(Roots().procfs / "thread-self" / "ns" / "net", os.O_RDONLY)
    try:
        target = os.open(path, os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)


def _setns(fd: int) -> None:
    """setns(2) of the calling thread into the network namespace open at fd."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def require(name: str) -> None:
    """Root, and a named namespace that exists (an input error otherwise)."""
    require_root(f"--netns {name}")
    if not (NETNS_RUN_DIR / name).exists():
        raise InputError(f"no network namespace named {name!r} (see `ip netns list`)")


def create(name: str) -> None:
    """Make a named netns with loopback up (the kernel starts it down)."""
    in_child(lambda: _create(name))


def _create(name: str) -> None:
    from pyroute2 import IPRoute, netns

    netns.create(name)
    with inside(name), IPRoute() as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")


def in_child(work: Callable[[], None]) -> None:
    """Run `work` in a forked child and wait for it: what it imports and allocates
    goes when the child exits. An exception there is raised here as OSError (its
    errno kept) with the child's message."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child; its outcome is read by the parent
        os.close(r)
        code = 0
        try:
            work()
        except BaseException as e:  # every failure goes to the parent
            err = getattr(e, "errno", None) or 0
            os.write(w, f"{err}\n{type(e).__name__}: {e}".encode()[:4096])
            code = 1
        os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        said = f.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        err, _, message = said.partition("\n")
        raise OSError(int(err or 0) or None, message or f"child exited with {status}")


@contextmanager
def made(name: str) -> Iterator[str]:
    """A named netns of ours for the body, removed after on every way out. Its
    making holds SIGINT and SIGTERM off until it is done (then raised): making it
    runs other processes (a child, and pyroute2 finds libc with ldconfig), and a Ctrl-C in
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
    if (NETNS_RUN_DIR / name).exists():
        in_child(lambda: _remove(name))


def _remove(name: str) -> None:
    from pyroute2 import netns

    netns.remove(name)


def add_addresses(name: str, addresses: tuple[str, ...]) -> None:
    """Add host addresses (/32, /128) to loopback inside namespace `name`."""
    in_child(lambda: _add_addresses(name, addresses))


def _add_addresses(name: str, addresses: tuple[str, ...]) -> None:
    from pyroute2 import IPRoute

    with inside(name), IPRoute() as ipr:
        lo = ipr.link_lookup(ifname="lo")[0]
        for a in addresses:
            ipr.addr("add", index=lo, address=a, prefixlen=128 if ":" in a else 32)

"""Which engine a worker runs on: io_uring where the kernel lets this process have
a ring with the operations it needs, else epoll, and why (the result says which ran).

io_uring is refused by kernel.io_uring_disabled (2: for everyone; 1: for processes
outside the group in kernel.io_uring_group, Documentation/admin-guide/sysctl/kernel.rst),
by a seccomp filter (Docker's default profile denies io_uring_setup since 25.0), or
by a kernel older than the operations (IORING_OP_SOCKET 5.19, the socket uring_cmd
setsockopt 6.7, IORING_OP_BIND 6.11)."""

from __future__ import annotations

import errno
from collections.abc import Iterable
from typing import Literal

from tcpceiling.probe.uring import ring as r

EngineChoice = Literal["auto", "uring", "epoll"]
Engine = Literal["uring", "epoll"]
EngineRan = Literal["uring", "epoll", "mixed"]  # a run's: mixed when some were refused

OP_NAMES = {
    r.OP_SOCKET: "IORING_OP_SOCKET (Linux 5.19)",
    r.OP_CONNECT: "IORING_OP_CONNECT (5.5)",
    r.OP_ACCEPT: "IORING_OP_ACCEPT (5.5)",
    r.OP_ASYNC_CANCEL: "IORING_OP_ASYNC_CANCEL (5.5)",
    r.OP_CLOSE: "IORING_OP_CLOSE (5.6)",
    r.OP_URING_CMD: "the socket uring_cmd (6.7)",
    r.OP_BIND: "IORING_OP_BIND (6.11)",
}


def open_ring(
    choice: EngineChoice, ops: tuple[int, ...], entries: int = 1024, completions: int = 0
) -> tuple[r.Ring | None, str]:
    """A ring that has every one of ops, or None (run on epoll) and why not ("" when
    epoll was chosen)."""
    if choice == "epoll":
        return None, ""
    try:
        ring = r.Ring(entries, completions)
    except OSError as exc:
        name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        return None, f"io_uring_setup() refused: {name} ({exc.strerror})"
    have = r.supported(ring)
    missing = [OP_NAMES.get(op, str(op)) for op in ops if op not in have]
    if missing:
        ring.close()
        return None, "this kernel's io_uring lacks " + ", ".join(missing)
    return ring, ""


def ran_on(engines: Iterable[Engine]) -> EngineRan:
    """A run's engine from its workers': io_uring when every one ran on it, epoll
    when none did, else mixed."""
    ran = set(engines)
    if len(ran) > 1:
        return "mixed"
    return "uring" if ran == {"uring"} else "epoll"


def refusal_notes(choice: EngineChoice, refusals: Iterable[str]) -> list[str]:
    """Why io_uring was not used where it was asked for, once per reason."""
    return [
        f"io_uring was asked for ({choice}) and not used: {why}; ran on epoll"
        for why in dict.fromkeys(w for w in refusals if w)
    ]

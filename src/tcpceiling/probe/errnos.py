"""Which limit an errno names (docs/limits.md, "errno → limit")."""

from __future__ import annotations

import errno

#: errno -> constraint id of tcpceiling.analysis.registry.CONSTRAINT_IDS.
ERRNO_CONSTRAINT = {
    errno.EMFILE: "nofile",
    errno.ENFILE: "file_max",
    errno.EADDRNOTAVAIL: "ports",
    errno.EADDRINUSE: "ports",
    errno.ENOSPC: "epoll_watches",
    errno.ENOMEM: "memory",
    errno.ENOBUFS: "memory",
    errno.EAGAIN: "threads",
    errno.ETIMEDOUT: "backlog",
}
#: Server-side symptoms: the peer refused or reset.
SERVER_SIDE = {errno.ECONNREFUSED: "refused", errno.ECONNRESET: "reset"}


def name(num: int) -> str:
    return errno.errorcode.get(num, str(num))


def constraint_for(num: int) -> str:
    return ERRNO_CONSTRAINT.get(num) or SERVER_SIDE.get(num) or f"errno:{name(num)}"

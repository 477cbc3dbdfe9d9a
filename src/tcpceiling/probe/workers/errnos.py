"""Which limit an errno names (docs/limits.md, "errno → limit")."""

from __future__ import annotations

import errno

from tcpceiling.analysis.model import ConstraintId
from tcpceiling.probe.run.result import StopReason

#: errno -> constraint id of tcpceiling.analysis.registry.CONSTRAINT_IDS.
ERRNO_CONSTRAINT: dict[int, ConstraintId] = {
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
SERVER_SIDE: dict[int, StopReason] = {errno.ECONNREFUSED: "refused", errno.ECONNRESET: "reset"}


def name(num: int) -> str:
    return errno.errorcode.get(num, str(num))


def constraint_for(num: int) -> StopReason:
    """The limit an errno names; "unknown" for one that names none (the errno itself
    is reported beside the reason)."""
    return ERRNO_CONSTRAINT.get(num) or SERVER_SIDE.get(num) or "unknown"

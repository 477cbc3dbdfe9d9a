"""What every worker process (client or sink) needs: its fd limit raised, its own
/proc files kept open, and closing with an RST."""

from __future__ import annotations

import _socket
import os
import resource
import socket
import struct
from array import array

from tcpceiling.host.roots import Roots

LINGER_RST = struct.pack("ii", 1, 0)


def raise_nofile(cap: int | None) -> int:
    """Soft limit to the hard limit (or to cap, which may also lower it); returns soft."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if cap is None else (min(cap, hard) if hard != resource.RLIM_INFINITY else cap)
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard if cap is None else want))
    return want


class SelfStats:
    """/proc/self/statm and /proc/meminfo kept open from the start, so reading them
    needs no new fd even when the worker sits at its RLIMIT_NOFILE."""

    def __init__(self, roots: Roots | None = None) -> None:
        procfs = (roots or Roots()).procfs
        self.statm = os.open(procfs / "self" / "statm", os.O_RDONLY)
        self.meminfo = os.open(procfs / "meminfo", os.O_RDONLY)
        self.fd_dir = procfs / "self" / "fd"
        self.page = os.sysconf("SC_PAGE_SIZE")

    def rss(self) -> int:
        return int(os.pread(self.statm, 256, 0).split()[1]) * self.page

    def meminfo_fields(self, names: tuple[bytes, ...]) -> tuple[int, ...]:
        """Fields of one read of /proc/meminfo, in bytes."""
        text = os.pread(self.meminfo, 8192, 0)
        out = []
        for name in names:
            start = text.index(name) + len(name)
            out.append(int(text[start : text.index(b"kB", start)]) * 1024)
        return tuple(out)

    def open_fds(self) -> int:
        """fds open now, less the one listing the directory takes."""
        return len(os.listdir(self.fd_dir)) - 1


def close_with_rst(fds: array[int]) -> None:
    """Close with SO_LINGER 0: an RST instead of a FIN, so no TIME_WAIT stays behind.
    The wrapper is told family, type and protocol (any: SOL_SOCKET options ignore
    them), else it asks the kernel with two getsockopt() calls per fd."""
    wrap, family, stream = _socket.socket, socket.AF_INET, socket.SOCK_STREAM
    for fd in fds:
        try:
            s = wrap(family, stream, 0, fd)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
            s.close()
        except OSError:
            pass

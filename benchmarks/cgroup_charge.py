"""What one TCP socket charges to a memory cgroup, per end: the measurement behind
docs/limits.md §4 ("Memory cgroups are charged less than the host").

    sudo python benchmarks/cgroup_charge.py [--connections 10000]

A memory cgroup of its own (removed at the end) holds one end of N loopback
connections; the other end is held by a child outside it. Prints the growth of the
cgroup's usage per connection, for the connecting end and for the accepting end,
beside the growth of its RSS (the Python lists holding the sockets). Root and a
memory cgroup controller (v1 or v2) are needed.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import socket
import sys
import time
import uuid
from pathlib import Path

from tcpceiling.host.parse import parse_flat_keyed


def controller() -> tuple[Path, str, str]:
    """(mount, usage file, rss key of memory.stat) of the memory controller."""
    v1 = Path("/sys/fs/cgroup/memory")
    if (v1 / "cgroup.procs").exists():
        return v1, "memory.usage_in_bytes", "total_rss"
    return Path("/sys/fs/cgroup"), "memory.current", "anon"


def hold_other_end(root: Path, role: str, port: int, n: int) -> int:
    """A child outside the cgroup holding the other end of each connection."""
    pid = os.fork()
    if pid:
        return pid
    (root / "cgroup.procs").write_text(str(os.getpid()))
    kept: list[socket.socket] = []
    if role == "connect":  # we connect in the cgroup: the child accepts
        ls = socket.create_server(("127.0.0.1", port), backlog=4096, reuse_port=True)
        while len(kept) < n:
            kept.append(ls.accept()[0])
    else:
        for _ in range(n):
            kept.append(socket.create_connection(("127.0.0.1", port)))
    time.sleep(3600)
    os._exit(0)


def measure(group: Path, usage_file: str, rss_key: str, role: str, n: int) -> tuple[float, float]:
    """(usage growth, RSS growth) per connection for one end held in `group`."""
    root, _, _ = controller()
    ls = socket.create_server(("127.0.0.1", 0), backlog=4096, reuse_port=True)
    port = ls.getsockname()[1]
    if role == "connect":
        ls.close()
    child = hold_other_end(root, role, port, n)
    time.sleep(0.5)
    u0 = int((group / usage_file).read_text())
    r0 = parse_flat_keyed((group / "memory.stat").read_text()).get(rss_key, 0)
    kept = []
    for _ in range(n):
        kept.append(
            socket.create_connection(("127.0.0.1", port)) if role == "connect" else ls.accept()[0]
        )
    time.sleep(1)
    u1 = int((group / usage_file).read_text())
    r1 = parse_flat_keyed((group / "memory.stat").read_text()).get(rss_key, 0)
    os.kill(child, signal.SIGKILL)
    os.waitpid(child, 0)
    for s in kept:
        s.close()
    return (u1 - u0) / n, (r1 - r0) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, default=10_000)
    n = ap.parse_args().connections
    resource.setrlimit(resource.RLIMIT_NOFILE, (n + 100, resource.getrlimit(7)[1]))
    root, usage_file, rss_key = controller()
    group = root / f"tcx-charge-{uuid.uuid4().hex[:8]}"
    group.mkdir()
    try:
        (group / "cgroup.procs").write_text(str(os.getpid()))
        for role in ("connect", "accept"):
            usage, rss = measure(group, usage_file, rss_key, role, n)
            print(f"{role:8} end: {usage:7.0f} B/connection charged ({rss:.0f} B of it RSS)")
    finally:
        (root / "cgroup.procs").write_text(str(os.getpid()))
        for _ in range(50):
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.1)
    sys.stdout.flush()


if __name__ == "__main__":
    main()

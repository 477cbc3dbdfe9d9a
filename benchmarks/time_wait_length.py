"""How long TIME_WAIT holds a port here, against TCP_TIMEWAIT_LEN (60 s, the kernel's
constant) measured in the same run: one ephemeral port (ip_local_port_range with one
port, tcp_tw_reuse 0, in a namespace of its own), the client closing first; the
time from each close until connect() gets the port again.

One command:  sudo python benchmarks/time_wait_length.py [--periods 3]

The timer wheel fires a timer that far out at the next multiple of its level's
granularity (512 jiffies, 2.048 s at HZ 250; kernel/time/timer.c), so a period is
60 s plus up to that much: what `rate` and the tour's rate step must wait. About a
minute per period. Not a test.
"""

from __future__ import annotations

import argparse
import socket
import time

from tcpceiling.host import netns
from tcpceiling.host.owned import own_name
from tcpceiling.probe.run.isolate import apply_sysctls

TCP_TIMEWAIT_LEN = 60.0  # include/net/tcp.h: (60*HZ)
PORT = 7000
POLL_S = 0.005


def close_client_first(c: socket.socket, ls: socket.socket) -> None:
    """The client's end closes first, so TIME_WAIT (and its port) stays on its side."""
    accepted = ls.accept()[0]
    c.close()
    time.sleep(POLL_S)  # the FIN reaches the server before it closes
    accepted.close()


def period(ls: socket.socket, closed: float) -> float:
    """Seconds from `closed` until connect() finds the one port free again."""
    while time.monotonic() - closed < 2 * TCP_TIMEWAIT_LEN:
        c = socket.socket()
        try:
            c.connect(("127.0.0.1", PORT))
        except OSError:
            c.close()
            time.sleep(POLL_S)
            continue
        took = time.monotonic() - closed
        close_client_first(c, ls)
        return took
    raise TimeoutError("the port never came back")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--periods", type=int, default=3)
    args = ap.parse_args()
    name = own_name("tw")
    netns.create(name)
    try:
        with netns.inside(name):
            apply_sysctls((("net.ipv4.ip_local_port_range", "61000 61000"),
                           ("net.ipv4.tcp_tw_reuse", "0")))  # fmt: skip
            ls = socket.create_server(("127.0.0.1", PORT))
            close_client_first(socket.create_connection(("127.0.0.1", PORT)), ls)
            closed, seen = time.monotonic(), []
            for _ in range(args.periods):
                seen.append(period(ls, closed))
                closed = time.monotonic()  # period() closed the client first again
                ratio = seen[-1] / TCP_TIMEWAIT_LEN
                print(f"port back after {seen[-1]:.3f} s = {ratio:.3f} x TCP_TIMEWAIT_LEN")
    finally:
        netns.remove(name)
    print(f"{len(seen)} periods: {min(seen):.3f} to {max(seen):.3f} s "
          f"({max(seen) / TCP_TIMEWAIT_LEN:.3f} x at most)")  # fmt: skip


if __name__ == "__main__":
    main()

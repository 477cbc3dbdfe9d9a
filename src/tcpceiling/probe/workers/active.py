"""The active phase of a client worker: traffic on its held connections at a fixed
message rate, then wake-up round trips (how long the server takes to wake the one
connection that has work). Plain functions over the worker's fds."""

from __future__ import annotations

import contextlib
import os
import random
import select
import time
from array import array
from collections.abc import Callable

from tcpceiling.probe.workers.histogram import Histogram

BURST = 4096  # messages sent at most before looking at the clock again


def traffic(
    fds: array[int],
    rate: float,
    size: int,
    seconds: float,
    stopped: Callable[[], bool],
) -> int:
    """Send `size` bytes on every fd `rate` times a second, round robin, reading back
    the previous echo first, for `seconds` (or until stopped()); returns messages sent."""
    payload = b"x" * size
    total, n = rate * len(fds), len(fds)
    sent = i = 0
    t0 = time.perf_counter()
    while n and not stopped():
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            break
        due = min(int(elapsed * total) - sent, BURST)
        if due <= 0:
            time.sleep(0.001)
        for _ in range(due):
            fd, i = fds[i], (i + 1) % n
            with contextlib.suppress(OSError):
                os.read(fd, 65536)  # the echo of this connection's last message
            with contextlib.suppress(OSError):
                sent += os.write(fd, payload) > 0
    return sent


def wake_ups(fds: array[int], samples: int) -> Histogram:
    """Round trips of one byte on random fds, one at a time (µs)."""
    hist = Histogram()
    po = select.poll()
    for idx in random.sample(range(len(fds)), min(samples, len(fds))):
        fd = fds[idx]
        with contextlib.suppress(OSError):
            os.read(fd, 65536)
        po.register(fd, select.POLLIN)
        start = time.perf_counter()
        os.write(fd, b"w")
        if po.poll(1000):
            hist.add((time.perf_counter() - start) * 1e6)
            with contextlib.suppress(OSError):
                os.read(fd, 65536)
        po.unregister(fd)
    return hist

"""What `tcpceiling trace` costs the host: `tcpceiling rate --rate max` with and without
a trace running, in the same run, in turns; then the events per second the trace
handles when every connect fails.

One command:  sudo python benchmarks/trace_overhead.py [--seconds 5] [--repeat 3]

Each engine of rate in turn (--engine uring: a burst of cycles in three io_uring
submissions; --engine epoll: five or six system calls a cycle), as the trace's cost
is a cost per system call (syscall tracepoints send every one through the slow path).

The trace's filters let only failures through, so a host that is not failing should
not notice it: the ratio of the two rates (with / without) is the overhead, and so
is the ratio of CPU a cycle (without / with). Not a test.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import threading
import time

TCPCEILING = [sys.executable, "-m", "tcpceiling"]


def rate(seconds: float, engine: str) -> tuple[float, float]:
    """(cycles a second, CPU microseconds a cycle): the second moves less between runs
    of the same command, as it does not count the time a worker was off its core."""
    out = subprocess.run(
        [*TCPCEILING, "rate", "--duration", str(seconds), "--close", "rst", "--engine", engine,
         "--json"],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    r = json.loads(out)
    if r["engine"] != engine:
        raise SystemExit(f"asked for {engine}, ran on {r['engine']}: {r['notes']}")
    return float(r["burst_per_s"]), float(r["cpu_us_per_cycle"]["both"])


def with_trace(seconds: float, engine: str) -> tuple[float, float]:
    tr = subprocess.Popen([*TCPCEILING, "trace", str(seconds + 2)], stdout=subprocess.DEVNULL)
    time.sleep(1)
    try:
        return rate(seconds, engine)
    finally:
        tr.wait()


def failing_events(seconds: float) -> tuple[int, float]:
    """Connects refused as fast as one thread goes, traced: (events counted, per s)."""
    stop = time.monotonic() + seconds + 1.5
    tried = [0]

    def refuse() -> None:
        time.sleep(0.5)
        while time.monotonic() < stop:
            with socket.socket() as s:
                s.connect_ex(("127.0.0.1", 1))
            tried[0] += 1

    t = threading.Thread(target=refuse)
    t.start()
    out = subprocess.run(
        [*TCPCEILING, "trace", str(seconds), "--json"], capture_output=True, text=True
    ).stdout
    t.join()
    doc = json.loads(out)
    return int(doc["events"]), doc["events"] / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    for engine in ("uring", "epoll"):
        plain: list[tuple[float, float]] = []
        traced: list[tuple[float, float]] = []
        for i in range(a.repeat):  # in turns, ABBA: a drift over the run favours neither
            first_plain = i % 2 == 0
            if first_plain:
                plain.append(rate(a.seconds, engine))
            traced.append(with_trace(a.seconds, engine))
            if not first_plain:
                plain.append(rate(a.seconds, engine))
        p, t = (statistics.median(x[0] for x in plain), statistics.median(x[0] for x in traced))
        pc, tc = (statistics.median(x[1] for x in plain), statistics.median(x[1] for x in traced))
        print(f"rate --rate max --engine {engine}: {p:,.0f}/s alone, {t:,.0f}/s with a trace: "
              f"{t / p:.3f}x; CPU a cycle {pc:.1f} and {tc:.1f} us: {pc / tc:.3f}x",
              flush=True)  # fmt: skip
    events, per_s = failing_events(a.seconds)
    print(f"every connect refused: the trace counted {events:,} events, {per_s:,.0f}/s")


if __name__ == "__main__":
    main()

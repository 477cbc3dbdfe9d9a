"""What `tcpceiling trace` costs the host: `tcpceiling rate --rate max` with and without
a trace running, in the same run, in turns; then the events per second the trace
handles when every connect fails.

One command:  sudo python benchmarks/trace_overhead.py [--seconds 5] [--repeat 3]

The trace's filters let only failures through, so a host that is not failing should
not notice it: the ratio of the two rates (with / without) is the overhead. Not a test.
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


def rate(seconds: float) -> float:
    out = subprocess.run(
        [*TCPCEILING, "rate", "--duration", str(seconds), "--close", "rst", "--json"],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    return float(json.loads(out)["burst_per_s"])


def with_trace(seconds: float) -> float:
    tr = subprocess.Popen([*TCPCEILING, "trace", str(seconds + 2)], stdout=subprocess.DEVNULL)
    time.sleep(1)
    try:
        return rate(seconds)
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
    plain, traced = [], []
    for _ in range(a.repeat):
        plain.append(rate(a.seconds))
        traced.append(with_trace(a.seconds))
    p, t = statistics.median(plain), statistics.median(traced)
    print(f"rate --rate max: {p:,.0f}/s alone, {t:,.0f}/s with a trace: {t / p:.3f}x")
    events, per_s = failing_events(a.seconds)
    print(f"every connect refused: the trace counted {events:,} events, {per_s:,.0f}/s")


if __name__ == "__main__":
    main()

"""analyze on a busy host: its wall time with 0, 100k and 1M TCP sockets in the
namespace it reads, next to `ss -s` and `ss -tan | wc -l` measured in the same run.

One command:  python benchmarks/analyze_busy.py [--sizes 0,100000,1000000] [--runs 3]

The sockets live in a private network namespace made here (deleted at the end):
`tcpceiling probe --netns NS --target N/2 --hold ...` holds N/2 loopback connections,
N sockets counting both ends; the wait for them is bounded and counted with
`ss -s`. Then each command runs --runs times and its median is printed:
  analyze          `tcpceiling analyze --netns NS --json` (the default scenarios:
                   server, and a client toward one remote ip:port)
  analyze (dest)   the client role toward a sink port that holds connections, so the
                   kernel's filter matches real sockets
  ss -s            the kernel's totals only
  ss -tan | wc -l  every socket, one line each
Needs root. Not a test: timings belong here, never in tests/.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import time

NS = f"tcpcbench-{os.getpid()}"
WAIT_S = 600


def timed(cmd: str, runs: int) -> float:
    """Median wall seconds of a shell command."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, shell=True, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def sockets_in_ns() -> int:
    out = subprocess.run(
        ["ip", "netns", "exec", NS, "ss", "-s"], capture_output=True, text=True, check=True
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("TCP:"))
    return int(line.split()[1])


def a_sink_port() -> str:
    out = subprocess.run(
        ["ip", "netns", "exec", NS, "ss", "-Htln"], capture_output=True, text=True, check=True
    ).stdout
    return out.split()[3] if out.strip() else "127.0.0.1:9"


def hold(n: int) -> subprocess.Popen[bytes] | None:
    """Start a probe holding n/2 connections in NS; wait (bounded) until they are up."""
    if n == 0:
        return None
    proc = subprocess.Popen(
        ["tcpceiling", "probe", "--netns", NS, "--target", str(n // 2), "--hold", "3600"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + WAIT_S
    while sockets_in_ns() < n and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(1)
    return proc


def release(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=WAIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def measure(n: int, runs: int) -> dict[str, float]:
    proc = hold(n)
    try:
        held = sockets_in_ns()
        ex = f"ip netns exec {NS}"
        row = {
            "sockets": float(held),
            "analyze": timed(f"tcpceiling analyze --netns {NS} --json", runs),
            "analyze_dest": timed(
                f"tcpceiling analyze --netns {NS} --role client --connect {a_sink_port()} --json",
                runs,
            ),
            "ss_s": timed(f"{ex} ss -s", runs),
            "ss_tan": timed(f"{ex} ss -tan | wc -l", runs),
        }
    finally:
        release(proc)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="0,100000,1000000")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", NS, "ip", "link", "set", "lo", "up"], check=True)
        head = ("sockets", "analyze", "analyze→dest", "ss -s", "ss -tan|wc")
        print("{:>10} {:>9} {:>13} {:>8} {:>11}".format(*head))
        for n in (int(x) for x in args.sizes.split(",")):
            r = measure(n, args.runs)
            print(
                f"{int(r['sockets']):>10,} {r['analyze']:>8.3f}s {r['analyze_dest']:>12.3f}s "
                f"{r['ss_s']:>7.3f}s {r['ss_tan']:>10.3f}s",
                flush=True,
            )
    finally:
        subprocess.run(["ip", "netns", "del", NS], check=False)


if __name__ == "__main__":
    main()

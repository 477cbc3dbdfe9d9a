"""The exporter's scrape time on a busy host: GET /metrics of `tcpceiling exporter
--netns NS` with 0, 100k and 1M TCP sockets in that namespace, next to `ss -s` and
`ss -tan | wc -l` measured in the same run.

One command:  python benchmarks/exporter_scrape.py [--sizes 0,100000,1000000] [--runs 5]
                                                   [--servers 10]

With --servers K, each size is scraped twice in the same run: with no server
listening, then with K servers the registry knows listening in the namespace (half
redis-server, half nginx, each reading its limit its own way: CONFIG GET, nginx -T),
and the ratio is printed. The servers' limits are read again every 30 s at most, so
the median is the steady state; the first scrape after a server appears pays its
read once (printed as "first").

The sockets are held as in analyze_busy.py (a probe holding N/2 loopback
connections in a private namespace made here, deleted at the end). Each scrape
reads a fresh Sample: analyze's two scenarios, every listener, the client sockets
(a sport-range filter in the kernel), the processes holding them (the first match
in each process's fds), their fds (stat of /proc/PID/fd) and the counters. The
median of --runs scrapes is printed, with the exporter's own
tcpceiling_scrape_duration_seconds. Needs root. Not a test.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import analyze_busy as busy


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(url: str) -> tuple[float, float]:
    """(wall seconds of one GET, the exporter's own scrape_duration_seconds)."""
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as r:
        text = r.read().decode()
    took = time.perf_counter() - t0
    line = next(x for x in text.splitlines() if x.startswith("tcpceiling_scrape_duration_seconds"))
    return took, float(line.split()[1])


NGINX = """worker_processes 1; user root; pid {dir}/nginx.pid; error_log {dir}/error.log;
events {{ worker_connections 1024; }}
http {{ access_log off; server {{ listen 127.0.0.1:{port}; return 200; }} }}
"""


@contextmanager
def known_servers(count: int) -> Iterator[None]:
    """`count` servers the registry knows, listening in the namespace on ports below
    its ephemeral range, stopped by pid at the end."""
    procs = []
    ex = ["ip", "netns", "exec", busy.NS]
    with tempfile.TemporaryDirectory(prefix="tcx-bench-") as tmp:
        try:
            for i in range(count):
                port = 7000 + i
                if i % 2:
                    d = Path(tmp) / str(i)
                    d.mkdir()
                    (d / "nginx.conf").write_text(NGINX.format(dir=d, port=port))
                    cmd = ["nginx", "-p", str(d), "-c", str(d / "nginx.conf"), "-g", "daemon off;"]
                else:
                    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                           "--save", "", "--appendonly", "no"]  # fmt: skip
                procs.append(subprocess.Popen([*ex, *cmd], stdout=subprocess.DEVNULL))
            time.sleep(1)
            yield
        finally:
            for p in procs:
                p.terminate()
                p.wait(30)


def measure(n: int, runs: int, servers: int = 0) -> dict[str, float]:
    with ExitStack() as stack:
        if servers:
            stack.enter_context(known_servers(servers))
        return _measure(n, runs)


def _measure(n: int, runs: int) -> dict[str, float]:
    proc = busy.hold(n)
    port = free_port()
    exporter = subprocess.Popen(
        ["tcpceiling", "exporter", "--netns", busy.NS, "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        deadline, first = time.monotonic() + 30, 0.0
        while time.monotonic() < deadline:
            try:
                first = scrape(url)[0]
                break
            except OSError:
                time.sleep(0.2)
        got = [scrape(url) for _ in range(runs)]
        ex = f"ip netns exec {busy.NS}"
        return {
            "sockets": float(busy.sockets_in_ns()),
            "first": first,
            "scrape": statistics.median(g[0] for g in got),
            "inside": statistics.median(g[1] for g in got),
            "ss_s": busy.timed(f"{ex} ss -s", runs),
            "ss_tan": busy.timed(f"{ex} ss -tan | wc -l", runs),
        }
    finally:
        exporter.terminate()
        exporter.wait(30)
        busy.release(proc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="0,100000,1000000")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--servers", type=int, default=0)
    args = ap.parse_args()
    subprocess.run(["ip", "netns", "add", busy.NS], check=True)
    try:
        subprocess.run(
            ["ip", "netns", "exec", busy.NS, "ip", "link", "set", "lo", "up"], check=True
        )
        print(
            "{:>10} {:>9} {:>14} {:>8} {:>11} {:>11}".format(
                "sockets", "scrape", "(in exporter)", "ss -s", "ss -tan|wc", "scrape/ss"
            )
        )
        for n in (int(x) for x in args.sizes.split(",")):
            r = measure(n, args.runs)
            print(
                f"{int(r['sockets']):>10,} {r['scrape']:>8.3f}s {r['inside']:>13.3f}s "
                f"{r['ss_s']:>7.3f}s {r['ss_tan']:>10.3f}s {r['scrape'] / r['ss_tan']:>10.2f}x",
                flush=True,
            )
            if args.servers:
                k = measure(n, args.runs, args.servers)
                print(
                    f"{'':>10} with {args.servers} known servers: {k['scrape']:.3f}s "
                    f"(first {k['first']:.3f}s), {k['scrape'] / r['scrape']:.2f}x the scrape "
                    "without them",
                    flush=True,
                )
    finally:
        subprocess.run(["ip", "netns", "del", busy.NS], check=False)


if __name__ == "__main__":
    main()

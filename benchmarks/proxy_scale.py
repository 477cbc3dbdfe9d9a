"""A proxy's host at scale: `analyze --listen` and an exporter scrape with 100,000
connections toward the proxy's upstream, on this code and on a reference tree (the
code before the proxy work, or any commit) measured in the same run.

One command:  python benchmarks/proxy_scale.py [--connections 100000] [--runs 5]
                                                [--reference 49e62dc]

In a private network namespace made here (deleted at the end): a probe holds N
connections to its sink (N sockets toward the sink's ports, N accepted: a proxy's
upstream ends and its clients' ends), and a real nginx whose `upstream {}` lists
those sink ports as its servers, so the new code's upstream read walks N sockets
toward them (a kernel-filtered sock_diag dump per namespace). The reference tree is
`git archive REF src` unpacked into a temporary folder (the repository is not
touched) and run with PYTHONPATH. Printed: the median of --runs for each, and the
ratio new / reference. Needs root and nginx. Not a test.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NS = f"tcpcbench-proxy-{os.getpid()}"
WAIT_S = 600
NGINX = """worker_processes 1; user root; pid {dir}/nginx.pid; error_log {dir}/error.log;
events {{ worker_connections 1024; }}
http {{ access_log off; upstream app {{ {servers} }}
  server {{ listen 127.0.0.1:8000; location / {{ proxy_pass http://app; }} }} }}
"""


def sh(*cmd: str) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def in_ns(*cmd: str) -> list[str]:
    return ["ip", "netns", "exec", NS, *cmd]


def sockets_in_ns() -> int:
    line = next(x for x in sh(*in_ns("ss", "-s")).splitlines() if x.startswith("TCP:"))
    return int(line.split()[1])


@contextmanager
def held(n: int) -> Iterator[list[str]]:
    """A probe holding n connections in NS; yields the sink's listening addresses."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tcpceiling", "probe", "--netns", NS, "--target", str(n),
         "--hold", "3600"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + WAIT_S
        while sockets_in_ns() < 2 * n and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(1)
        sinks = [ln.split()[3] for ln in sh(*in_ns("ss", "-Htln")).splitlines()]
        yield sinks
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(WAIT_S)


@contextmanager
def nginx(sinks: list[str]) -> Iterator[None]:
    with tempfile.TemporaryDirectory(prefix="tcpcbench-nginx-") as d:
        conf = Path(d) / "nginx.conf"
        conf.write_text(NGINX.format(dir=d, servers=" ".join(f"server {s};" for s in sinks)))
        proc = subprocess.Popen(in_ns("nginx", "-p", d, "-c", str(conf), "-g", "daemon off;"))
        try:
            deadline = time.monotonic() + 15
            while ":8000" not in sh(*in_ns("ss", "-Htln")) and time.monotonic() < deadline:
                time.sleep(0.1)
            yield
        finally:
            proc.terminate()
            proc.wait(10)


@contextmanager
def reference(ref: str) -> Iterator[Path]:
    """The reference tree's src/, unpacked from git archive into a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="tcpcbench-ref-") as d:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "src"],
                                 capture_output=True, check=True).stdout  # fmt: skip
        tar = Path(d) / "src.tar"
        tar.write_bytes(archive)
        with tarfile.open(tar) as t:
            t.extractall(d, filter="data")
        yield Path(d) / "src"


def timed(cmd: list[str], src: Path, runs: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(src)}
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrapes(src: Path, runs: int) -> float:
    """Median wall time of GET /metrics from an exporter of `src` reading NS."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(src)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tcpceiling", "exporter", "--netns", NS, "--listen",
         f"127.0.0.1:{port}"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url, times = f"http://127.0.0.1:{port}/metrics", []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(url, timeout=60).read()  # the first: servers' reads
                break
            except OSError:
                time.sleep(0.2)
        for _ in range(runs):
            t0 = time.perf_counter()
            urllib.request.urlopen(url, timeout=120).read()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--reference", default="49e62dc")
    args = ap.parse_args()
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        subprocess.run(in_ns("ip", "link", "set", "lo", "up"), check=True)
        analyze = [sys.executable, "-m", "tcpceiling", "analyze", "--netns", NS, "--role",
                   "server", "--listen", "127.0.0.1:8000", "--json"]  # fmt: skip
        with held(args.connections) as sinks, nginx(sinks), reference(args.reference) as ref:
            print(f"{sockets_in_ns():,} sockets in the namespace; nginx -> {len(sinks)} "
                  f"upstream servers holding {args.connections:,} connections")  # fmt: skip
            new_src = ROOT / "src"
            rows = {
                "analyze --listen": (timed(analyze, ref, args.runs),
                                     timed(analyze, new_src, args.runs)),
                "exporter scrape": (scrapes(ref, args.runs), scrapes(new_src, args.runs)),
            }  # fmt: skip
        print(f"{'':18} {'reference':>10} {'this code':>10} {'ratio':>6}")
        for name, (old, new) in rows.items():
            print(f"{name:18} {old:>9.3f}s {new:>9.3f}s {new / old:>5.2f}x")
    finally:
        subprocess.run(["ip", "netns", "del", NS], check=False)


if __name__ == "__main__":
    main()

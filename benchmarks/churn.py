"""Churn: new connections per second with `tcpceiling rate --close rst` against the
C reference (benchmarks/cref.c churn: connect, accept, close with RST, in forked
workers), measured in the same run.

One command:  python benchmarks/churn.py [--seconds 5] [--workers 1,2] [--repeat 2]

For each worker count, the C reference and tcpceiling on each engine (--engine uring,
--engine epoll) run --repeat times in turns and each one's best run is kept; prints
the rates and their ratios to C. Needs root (the probe's own namespace).
Not a test: timings belong here, never in tests/.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BINARY = HERE / "out" / "cref"


def cref(seconds: float, workers: int) -> float:
    BINARY.parent.mkdir(exist_ok=True)
    if not BINARY.exists() or BINARY.stat().st_mtime < (HERE / "cref.c").stat().st_mtime:
        subprocess.run(["cc", "-O2", "-o", str(BINARY), str(HERE / "cref.c")], check=True)
    out = subprocess.run(
        [str(BINARY), "churn", "-d", str(seconds), "-P", str(workers)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return float(re.search(r"rate ([\d.]+)", out).group(1))  # type: ignore[union-attr]


def tcpceiling(seconds: float, workers: int, engine: str) -> float:
    args = ["rate", "--close", "rst", "--duration", str(seconds), "--workers", str(workers),
            "--engine", engine]  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-m", "tcpceiling", *args, "--json"], capture_output=True, text=True
    ).stdout
    r = json.loads(out)
    if r["engine"] != engine:
        raise SystemExit(f"asked for {engine}, ran on {r['engine']}: {r['notes']}")
    return float(r["sustained_per_s"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    print(f"{'workers':>8} {'cref (C)':>12} {'uring':>12} {'ratio':>7} {'epoll':>12} {'ratio':>7}")
    for w in (int(x) for x in args.workers.split(",")):
        runs: dict[str, list[float]] = {"cref": [], "uring": [], "epoll": []}
        for _ in range(args.repeat):  # in turns: the VM's speed drifts over a minute
            runs["cref"].append(cref(args.seconds, w))
            for engine in ("uring", "epoll"):
                runs[engine].append(tcpceiling(args.seconds, w, engine))
        c, u, e = (max(runs[k]) for k in ("cref", "uring", "epoll"))
        print(f"{w:>8} {c:>10,.0f}/s {u:>10,.0f}/s {u / c:>6.2f}x {e:>10,.0f}/s {e / c:>6.2f}x",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

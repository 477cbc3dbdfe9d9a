"""Churn: new connections per second with `tcpceiling rate --close rst` against the
C reference (benchmarks/cref.c churn: connect, accept, close with RST, in forked
workers), measured in the same run.

One command:  python benchmarks/churn.py [--seconds 5] [--workers 1,2] [--repeat 2]

For each worker count, each tool runs --repeat times and its best run is kept;
prints the rates and their ratio. Needs root (the probe's own namespace).
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


def tcpceiling(seconds: float, workers: int) -> float:
    args = ["rate", "--close", "rst", "--duration", str(seconds), "--workers", str(workers)]
    out = subprocess.run(
        [sys.executable, "-m", "tcpceiling", *args, "--json"], capture_output=True, text=True
    ).stdout
    return float(json.loads(out)["sustained_per_s"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    print(f"{'workers':>8} {'cref (C)':>12} {'tcpceiling':>12} {'ratio':>7}")
    for w in (int(x) for x in args.workers.split(",")):
        c = max(cref(args.seconds, w) for _ in range(args.repeat))
        t = max(tcpceiling(args.seconds, w) for _ in range(args.repeat))
        print(f"{w:>8} {c:>10,.0f}/s {t:>10,.0f}/s {t / c:>6.2f}x", flush=True)


if __name__ == "__main__":
    main()

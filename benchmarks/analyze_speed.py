"""How long `tcpceiling analyze` takes (the aim: under 0.5 s wall per run).

Runs the installed console script N times as a user would and prints the median
and worst wall time. Not a test: timings belong here, never in tests/.
usage: python benchmarks/analyze_speed.py [RUNS]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    cmd = ["tcpceiling", "analyze", "--json"]
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    in_proc = []
    from tcpceiling.analysis.analyze import analyze
    from tcpceiling.analysis.model import build_scenarios

    scenarios = build_scenarios("both", (), (), ())
    for _ in range(runs):
        t0 = time.perf_counter()
        analyze(scenarios)
        in_proc.append(time.perf_counter() - t0)
    print(
        f"analyze --json, {runs} runs: median {statistics.median(times):.3f} s, "
        f"worst {max(times):.3f} s wall (process start included); "
        f"library call median {statistics.median(in_proc) * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()

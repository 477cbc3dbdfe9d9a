"""tcpceiling probe against the C reference benchmarks/cref.c, in the same run.

Compiles cref with cc, runs it and `tcpceiling probe` at the same number of
connections (default 200,000), and prints the open-rate ratio and the memory per
connection ratio (kernel Slab, both ends; and Slab + worker RSS). Not a test.
usage: python benchmarks/probe_vs_cref.py [CONNECTIONS]
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "cref.c"
BINARY = HERE / "out" / "cref"


def cref(n: int) -> dict[str, float]:
    """cref hold -n N: open rate, Slab and worker RSS per connection."""
    BINARY.parent.mkdir(exist_ok=True)
    if not BINARY.exists() or BINARY.stat().st_mtime < SOURCE.stat().st_mtime:
        subprocess.run(["cc", "-O2", "-o", str(BINARY), str(SOURCE)], check=True)
    out = subprocess.run(
        [str(BINARY), "hold", "-n", str(n)],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    ).stdout
    fields = dict(re.findall(r"(\w+) ([\d.]+)", out))
    return {
        "workers": float(fields["workers"]),
        "rate": float(fields["rate"]),
        "seconds": float(fields["seconds"]),
        "slab": float(fields["slab_per_conn"]),
        "rss": float(fields["rss_per_conn"]),
    }


PROBE = (sys.executable, "-m", "tcpceiling", "probe")


def probe(n: int, engine: str = "auto") -> dict[str, float]:
    """tcpceiling probe --target N --engine ENGINE: the same figures from its JSON."""
    out = subprocess.run(
        [*PROBE, "--target", str(n), "--engine", engine, "--json"],
        capture_output=True,
        text=True,
        timeout=1200,
    ).stdout
    r = json.loads(out)
    if r["established"] < n:
        raise SystemExit(f"probe stopped at {r['established']}: {r['stop']}")
    if engine != "auto" and r["engine"] != engine:
        raise SystemExit(f"asked for {engine}, ran on {r['engine']}: {r['notes']}")
    pc = r["per_connection"]
    return {
        "held": r["established"],
        "rate": r["rate_per_s"],
        "seconds": r["open_seconds"],
        # Slab's whole growth, as cref reads it: with another process's cache from a
        # /proc/PID/fd listing, which the probe's kernel_bytes leaves out
        "slab": pc["kernel_bytes"] + (pc.get("foreign_reclaimable_bytes") or 0),
        "rss": pc["user_bytes"],
        "workers": r["workers"] + r["sink_workers"],
    }


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    c, p = cref(n), probe(n)
    print(f"{n:,} connections")
    print(f"{'':14}{'open rate/s':>14}{'seconds':>10}{'slab B/conn':>13}{'rss B/conn':>12}")
    for name, d in (("cref (C)", c), ("tcpceiling", p)):
        print(
            f"{name:14}{d['rate']:>14,.0f}{d['seconds']:>10.2f}{d['slab']:>13,.0f}"
            f"{d['rss']:>12,.0f}"
        )
    print(f"open-rate ratio (tcpceiling / cref): {p['rate'] / c['rate']:.2f}")
    mem_c, mem_p = c["slab"] + c["rss"], p["slab"] + p["rss"]
    print(
        f"memory per connection ratio (slab + rss): {mem_p / mem_c:.2f} "
        f"(slab alone {p['slab'] / c['slab']:.2f})"
    )


if __name__ == "__main__":
    main()

"""Rendering a probe: a live status line while it runs, a table at the end."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from tcpceiling.probe.result import ProbeResult
from tcpceiling.report.analysis import human


class LiveProgress:
    """Progress to the terminal (rich status) and/or JSON lines to stdout."""

    def __init__(self, console: Console, json_lines: bool, live: bool) -> None:
        self.console, self.json_lines = console, json_lines
        self.status = console.status("starting…") if live else None
        self.last_json = 0.0

    def __enter__(self) -> LiveProgress:
        if self.status:
            self.status.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.status:
            self.status.__exit__(None, None, None)

    def __call__(self, msg: dict[str, Any]) -> None:
        est, t = msg.get("established", 0), msg.get("elapsed", 0.0)
        rate = est / t if t else 0.0
        errs = ", ".join(f"{k} x{v}" for k, v in (msg.get("errors") or {}).items()) or "none"
        if self.status:
            self.status.update(
                f"{est:,} established · {rate:,.0f}/s · {msg.get('workers')} workers · "
                f"errors {errs} · MemAvailable {human(msg.get('mem_available'), 'B')}"
            )
        if self.json_lines and t - self.last_json >= 1.0:
            self.last_json = t
            sys.stdout.write(json.dumps(msg) + "\n")
            sys.stdout.flush()


def render_probe(r: ProbeResult, console: Console) -> None:
    verdict = "reached the target" if r.target_reached else f"stopped: {r.stop.reason}"
    t = Table(
        title=f"{r.established:,} connections established — {verdict}",
        title_justify="left",
        show_header=False,
    )
    t.add_column(style="bold")
    t.add_column()
    pc = r.per_connection
    rows = [
        (
            "stop reason",
            f"{r.stop.reason}" + (f" (first errno {r.stop.errno})" if r.stop.errno else ""),
        ),
        ("errors", ", ".join(f"{k}: {v:,}" for k, v in r.stop.errno_counts.items()) or "none"),
        (
            "predicted by analyze",
            f"{human(r.predicted.ceiling)} ({r.predicted.binding}; then "
            f"{', '.join(r.predicted.runners_up)})",
        ),
        ("open rate", f"{r.rate_per_s:,.0f}/s over {r.open_seconds:.2f} s"),
        ("kernel memory / conn", f"{human(pc.kernel_bytes, ' B')} Slab (both ends)"),
        ("user memory / conn", f"{human(pc.user_bytes, ' B')} RSS, all workers"),
        ("MemAvailable drop / conn", human(pc.mem_available_bytes, " B")),
        ("connect latency µs", ", ".join(f"{k} {v}" for k, v in r.connect_latency_us.items())),
        ("CPU s / 1000 conns", str(r.cpu_seconds_per_1000)),
        (
            "workers",
            f"{r.workers} client + {r.sink_workers} sink; {r.sources} source IPs → "
            f"{', '.join(r.sink_endpoints)}",
        ),
        ("namespace", r.netns or "host (not isolated)"),
    ]
    if r.stop.detail:
        rows.insert(1, ("detail", r.stop.detail))
    if pc.slab_breakdown:
        rows.append(
            (
                "slab breakdown B/conn",
                ", ".join(f"{k} {v:,.0f}" for k, v in pc.slab_breakdown.items()),
            )
        )
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)

"""Rendering `compare-io`: one row per I/O model, then the verdict."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from tcpceiling.compare.compare import Comparison
from tcpceiling.units import format_bytes


def render_comparison(c: Comparison, console: Console) -> None:
    t = Table(title=f"threads vs epoll at {c.connections:,} connections", title_justify="left")
    for name in ("model", "held", "memory/conn", "Slab", "stack+PT", "RSS", "setup s", "CPU s"):
        t.add_column(name, justify="left" if name == "model" else "right")
    t.add_column("wake p50/p99 µs", justify="right")
    for m in c.models:
        wake = m.wake_latency_us
        t.add_row(
            m.io_model,
            f"{m.connections:,}",
            format_bytes(m.memory_per_connection or 0),
            format_bytes(m.kernel_bytes or 0),
            format_bytes(m.task_bytes or 0),
            format_bytes(m.user_bytes or 0),
            f"{m.setup_seconds:.2f}" if m.setup_seconds is not None else "?",
            f"{m.cpu_seconds:.2f}" if m.cpu_seconds is not None else "?",
            f"{wake.get('p50')} / {wake.get('p99')}",
        )
    console.print(t)
    console.print(c.verdict)

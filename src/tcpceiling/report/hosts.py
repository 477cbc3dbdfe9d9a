"""A probe from many client hosts: the totals, then one row per host."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from tcpceiling.probe.run.hosts import HostsResult


def render_hosts(r: HostsResult, console: Console) -> None:
    served = "" if r.served is None else f", {r.served:,} served"
    title = (
        f"{r.established:,} established{served} from {r.hosts_asked} client hosts "
        f"({r.scheduler}) — {r.stop}: {r.detail}"
    )
    table = Table(title=title, title_justify="left")
    for col in (
        "host",
        "status",
        "established",
        "served",
        "open rate",
        "stopped by",
        "its ceiling",
        "errors",
    ):
        table.add_column(
            col,
            justify="right"
            if col in ("established", "served", "open rate", "its ceiling")
            else "left",
        )
    for h in r.hosts:
        errors = ", ".join(f"{k} x{v:,}" for k, v in h.errno_counts.items()) or "—"
        stop = h.stop + (f" ({h.side} side)" if h.side else "") if h.status == "done" else h.detail
        ceiling = "—" if h.predicted is None else f"{h.predicted:,} ({h.binding})"
        table.add_row(
            h.host, h.status, f"{h.established:,}", "—" if h.served is None else f"{h.served:,}",
            f"{h.rate_per_s:,.0f}/s", stop, ceiling, errors,
            style="red" if h.status != "done" else "",
        )  # fmt: skip
    console.print(table)

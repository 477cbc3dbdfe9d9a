"""Rendering a probe: a live status line while it runs, a table at the end."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from tcpceiling.probe.run.result import PerConnection, ProbeResult
from tcpceiling.report.analysis import human
from tcpceiling.units import format_bytes


def _endpoints_text(endpoints: tuple[str, ...]) -> str:
    """A few endpoints listed; many (the default sink ports) as a range."""
    if len(endpoints) <= 3:
        return ", ".join(endpoints)
    first, last = endpoints[0], endpoints[-1]
    return f"{first}..{last.rsplit(':', 1)[1]} ({len(endpoints):,} ports)"


def _title(r: ProbeResult) -> str:
    verdict = "reached the target" if r.target_reached else f"stopped: {r.stop.reason}"
    if r.stop.side:
        verdict += f" ({r.stop.side} side)"
    if r.mode == "server" and r.served is not None:
        return f"{r.served:,} served at most at once, {r.established:,} established — {verdict}"
    if r.stop.side == "server" and r.served is not None:  # the sink was the limit
        return (
            f"{r.served:,} connections served by the sink, {r.established:,} established "
            f"(the rest wait in its accept queue) — {verdict}"
        )
    return f"{r.established:,} connections established — {verdict}"


def _server_rows(r: ProbeResult) -> list[tuple[str, str]]:
    """Outcomes of a --connect probe, and what this host showed of the server."""
    counts = ", ".join(f"{k} {v:,}" for k, v in r.outcomes.items())
    rows = [("check", r.check), ("outcomes", counts or "none")]
    if r.replies:
        rows.append(("server replies", "; ".join(f"{k!r} x{v}" for k, v in r.replies.items())))
    ev = r.stop.evidence
    if ev.get("deltas"):
        moved = ", ".join(f"{k} +{v:,}" for k, v in ev["deltas"].items() if v)
        rows.append(("counters (delta)", moved or "none moved (ListenOverflows, drops…)"))
    for ln in ev.get("listeners", []):
        rows.append(
            (
                "listener",
                f"{ln['host']}:{ln['port']} accept queue "
                f"{ln['queue']}/{ln['backlog']}" + (" FULL" if ln["full"] else ""),
            )
        )
    for p in ev.get("processes", []):
        rows.append(
            (
                "server process",
                f"{p['name']} pid {p['pid']}: {p['open_fds']} fds "
                f"of nofile {p['nofile_soft']}" + (" (at its limit)" if p["at_fd_limit"] else ""),
            )
        )
    return rows


def _activity_rows(r: ProbeResult) -> list[tuple[str, str]]:
    """The sink's I/O model, the traffic profile's CPU cost, wake-up latency."""
    pc, rows = r.per_connection, []
    if r.io_model == "threads":
        rows.append((
            "thread cost / conn",
            f"{format_bytes(pc.task_bytes or 0)} kernel stack + page tables, "
            f"{format_bytes(pc.user_bytes or 0)} RSS, plus task_struct in Slab "
            "(≈44 KB per Python thread: docs/limits.md §6)",
        ))  # fmt: skip
    if pc.total_bytes is not None:
        rows.append(
            (
                "total memory / conn",
                f"{format_bytes(pc.total_bytes or 0)} (Slab + stack + PT + RSS)",
            )
        )
    if r.traffic:
        t = r.traffic
        rows.append((
            "traffic",
            f"{t.messages:,} messages of {t.message_bytes} B at {t.message_rate:g}/s per conn "
            f"in {t.seconds:.1f} s: server CPU {t.cpu_us_per_message} µs per message, "
            f"{t.cpu_us_per_connect} µs per connect; "
            f"{format_bytes(t.kernel_bytes_active or 0)} Slab per active conn",
        ))  # fmt: skip
    if r.wake_latency_us:
        rows.append(
            ("wake-up round trip µs", ", ".join(f"{k} {v}" for k, v in r.wake_latency_us.items()))
        )
    return rows


def render_probe(r: ProbeResult, console: Console) -> None:
    t = Table(title=_title(r), title_justify="left", show_header=False)
    t.add_column(style="bold")
    t.add_column()
    pc = r.per_connection
    ends = "both ends" if r.mode == "sink" else "client, and server if local"
    rows = [
        (
            "stop reason",
            f"{r.stop.reason}" + (f" (first errno {r.stop.errno})" if r.stop.errno else ""),
        ),
        ("errors", ", ".join(f"{k}: {v:,}" for k, v in r.stop.errno_counts.items()) or "none"),
        (
            "predicted by analyze",
            f"{human(r.predicted.ceiling)} ({r.predicted.binding}; then "
            f"{', '.join(r.predicted.runners_up)}) — client side",
        ),
        ("open rate", f"{r.rate_per_s:,.0f}/s over {r.open_seconds:.2f} s"),
        (
            "kernel memory / conn",
            f"{format_bytes(pc.kernel_bytes or 0)} Slab ({ends}){_foreign(pc)}",
        ),
        ("user memory / conn", f"{format_bytes(pc.user_bytes or 0)} RSS, all workers"),
        ("connect latency µs", ", ".join(f"{k} {v}" for k, v in r.connect_latency_us.items())),
        (
            "workers",
            f"{r.workers} client + {r.sink_workers} sink; "
            f"{r.sources or 'kernel-picked'} source IPs → {_endpoints_text(r.sink_endpoints)}",
        ),
        ("namespace", r.netns or "host (not isolated)"),
    ]
    if r.stop.detail:
        rows.insert(1, ("detail", r.stop.detail))
    if r.mode == "server":
        rows[2:2] = _server_rows(r)
    rows += _activity_rows(r)
    if pc.slab_breakdown:
        breakdown = ", ".join(
            f"{_slab_label(k, pc.slab_shared.get(k))} {v:,.0f}"
            for k, v in pc.slab_breakdown.items()
        )
        rows.append(("slab breakdown B/conn", breakdown))
    for note in r.notes:
        rows.append(("note", note))
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)


def _foreign(pc: PerConnection) -> str:
    """Reclaimable Slab another process made, left out (probe/run/slabmeter.py)."""
    foreign = pc.foreign_reclaimable_bytes or 0
    if foreign < 0.05 * (pc.kernel_bytes or 0):
        return ""
    return (f"; {format_bytes(foreign)} more reclaimable not counted (proc inodes and "
            "dentries: another process read /proc/PID/fd)")  # fmt: skip


def _slab_label(name: str, shared: list[str] | None) -> str:
    """A merged cache carries its aliases' objects too: say so, or the bytes look
    like eventpoll_epi's when they are tcp_bind_bucket's."""
    return f"{name} (shared with {', '.join(shared)})" if shared else name

"""One frame of `tcpceiling watch`, and doctor's report: rich renderables, so a test
renders a frame to text (with its colours) and reads it."""

from __future__ import annotations

from rich.console import Console, Group
from rich.table import Table

from tcpceiling.observe.doctor import Diagnosis
from tcpceiling.observe.sample import Sample
from tcpceiling.observe.trace import Row, TraceResult
from tcpceiling.observe.usage import Usage, usages
from tcpceiling.report.analysis import human
from tcpceiling.units import format_bytes

STYLE = {"critical": "bold red", "warning": "yellow", "ok": ""}


def _amount(u: Usage, value: float) -> str:
    return format_bytes(value) if u.unit == "bytes" else f"{human(value)} {u.unit}"


def usage_table(s: Sample, warn: float, crit: float, most: int) -> Table:
    where = f" (netns {s.netns})" if s.netns else ""
    per = next((c.per_connection for c in s.ceilings if c.limit == "memory"), None)
    cost = f", {format_bytes(per)} per connection (analyze's model)" if per else ""
    title = (
        f"limits by headroom{where}: {len(s.processes)} processes, "
        f"{s.tcp_sockets:,} TCP sockets{cost}"
    )
    table = Table(title=title, title_justify="left")
    for col in ("limit", "where", "used", "of", "headroom"):
        table.add_column(col, justify="right" if col in ("used", "of", "headroom") else "left")
    for u in usages(s)[:most]:
        table.add_row(
            u.limit,
            u.subject,
            _amount(u, u.used),
            _amount(u, u.capacity),
            f"{u.headroom:.1%}",
            style=STYLE[u.severity(warn, crit)],
        )
    return table


def rates_table(rates: dict[str, float]) -> Table:
    table = Table(title="per second", title_justify="left")
    for name in rates:
        table.add_column(name.replace("_", " "), justify="right")
    table.add_row(*(f"{v:,.1f}" for v in rates.values()))
    return table


def frame(
    s: Sample,
    rates: dict[str, float],
    warn: float,
    crit: float,
    most: int = 40,
    failures: tuple[Row, ...] | None = None,
) -> Group:
    """One frame; with `failures` (watch --trace) a panel of what failed since the
    last frame, the most first."""
    parts: list[Table] = [usage_table(s, warn, crit, most)]
    if rates:
        parts.append(rates_table(rates))
    if failures is not None:
        parts.append(failure_table(failures, "failing since the last frame (trace)"))
    return Group(*parts)


def failure_table(rows: tuple[Row, ...], title: str, most: int = 10) -> Table:
    """Who failed, on which call, with which errno and the limit it means."""
    table = Table(title=title, title_justify="left")
    for col in ("process", "call", "errno", "limit", "count", "destination"):
        table.add_column(col, justify="right" if col == "count" else "left")
    for r in rows[:most]:
        who = f"{r.comm} (pid {r.pid})" if r.pid else r.comm
        table.add_row(who, r.call, r.errno, r.limit, f"{r.count:,}", r.destination or "")
    if not rows:
        table.add_row("none", "", "", "", "0", "")
    return table


def render_diagnosis(d: Diagnosis, console: Console) -> None:
    """The plugin line first (monitoring reads it), then every finding with its fix."""
    console.print(d.line, soft_wrap=True, highlight=False, markup=False)
    for f in d.findings:
        console.print(
            f"[{STYLE[f.severity] or 'green'}]{f.severity}[/] {f.limit}: {f.subject}",
            highlight=False,
        )
        for ev in f.evidence:
            console.print(f"    {ev}", highlight=False, markup=False, soft_wrap=True)
        if f.fix:
            console.print(f"    fix: {f.fix}", highlight=False, markup=False, soft_wrap=True)
    shown = ", ".join(f"{k} {v:,.1f}/s" for k, v in d.rates.items())
    console.print(f"rates over {d.interval:.1f} s: {shown}", highlight=False, soft_wrap=True)
    for note in d.notes:
        console.print(f"note: {note}", highlight=False, markup=False, soft_wrap=True)


def render_trace(t: TraceResult, console: Console) -> None:
    """The failures, the most first: who, which call, which errno, what limit."""
    title = f"failures over {t.seconds:g} s ({t.events:,} events)"
    console.print(failure_table(t.rows, title, len(t.rows)) if t.rows else "no failures seen")
    for note in t.notes:
        console.print(f"note: {note}")
    if t.lost:
        console.print(f"note: {t.lost:,} events lost (the kernel's buffer or the reader's cap)")

"""Rich rendering of a tuning plan: the limits before and after, the changes, the
other ways, what no setting can do, then each file and its diff, and the container
forms."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tcpceiling.report.analysis import human
from tcpceiling.tune.run import Restored, TuneResult
from tcpceiling.units import format_bytes


def limits_table(r: TuneResult) -> Table:
    p = r.plan
    title = (
        f"{p.target:,} connections as a {p.role}: every limit raised to {p.goal:,} "
        f"({p.headroom:.0%} headroom)"
    )
    table = Table(title=title, title_justify="left")
    for col in ("limit", "ceiling now", "after the plan", "needs"):
        table.add_column(col, justify="left" if col == "limit" else "right", no_wrap=True)
    for row in p.rows:
        ok = row.after is None or row.after >= p.goal
        style = "" if ok else "bold red"
        mark = "changed" if row.changed else ("ok" if ok else "short")
        table.add_row(
            row.limit,
            human(row.before),
            f"{human(row.after)} {mark}",
            f"{row.needed:,}",
            style=style,
        )
    return table


def changes_table(r: TuneResult) -> Table:
    table = Table(title="changes", title_justify="left")
    for col in ("limit", "setting", "now", "to", "why"):
        table.add_column(col, overflow="fold")
    for c in r.plan.changes:
        table.add_row(c.limit, c.key, c.now or "—", c.value, c.why)
    return table


def _lines(
    console: Console, title: str, lines: list[str] | tuple[str, ...], always: bool = False
) -> None:
    if lines or always:
        console.print(f"[bold]{title}[/bold]")
        for line in lines:
            console.print("  " + escape(line), soft_wrap=True)


def render_tune(r: TuneResult, console: Console) -> None:
    p = r.plan
    console.print(limits_table(r))
    if p.changes:
        console.print(changes_table(r))
    for o in p.options:
        more = ["…"] if len(o.commands) > 4 else []
        _lines(console, f"{o.limit}: {o.text}", [*o.commands[:4], *more], always=True)
    cannot = [f"{q.limit}: {q.text}" for q in p.requirements]
    _lines(console, "cannot be changed by a setting", cannot)
    console.print(
        f"memory: {p.goal:,} connections need {format_bytes(p.memory_needed)}; "
        f"{format_bytes(p.memory_available)} is available now"
    )
    _lines(console, "notes", p.notes)
    for f in r.files:
        console.print(f"[bold]{f.path}[/bold] (takes effect: {escape(f.takes_effect)})")
        console.print(escape(f.diff or "(unchanged)"), highlight=False, soft_wrap=True)
    _lines(console, "docker run", [" ".join(r.docker)] if r.docker else [])
    if r.kubernetes:
        unsafe = ", ".join(r.kubernetes_unsafe)
        _lines(console, "Kubernetes pod spec", r.kubernetes.splitlines())
        if unsafe:
            console.print(f"  unsafe for the kubelet (needs --allowed-unsafe-sysctls): {unsafe}")
    _lines(console, "on the host (not per container)", r.host_only)
    console.print(f"check with the model: {escape(r.check_command)}", soft_wrap=True)
    _verdict(r, console)


def _verdict(r: TuneResult, console: Console) -> None:
    v = r.verified
    if v is not None:
        word = "[green]held[/green]" if v.reached else "[red]did not hold[/red]"
        console.print(
            f"verify: {word} {v.established:,} of {v.target:,} in a private namespace with "
            f"the plan's net.* values (stop: {v.stop}{': ' + v.detail if v.detail else ''})"
        )
    if r.applied:
        _lines(console, f"written under {r.root}", r.applied)
        _lines(console, "loaded now", [f"{k} = {v}" for k, v in r.loaded])
        _lines(console, "[red]not loaded[/red]", r.load_failed)
    elif r.files:
        console.print("dry run: nothing written (--apply writes these files)")
    if not r.reachable:
        console.print("[red]the target cannot be reached by settings here: no files[/red]")


def render_restored(r: Restored, console: Console) -> None:
    _lines(console, f"restored under {r.root}", r.files)
    _lines(console, "sysctls put back", [f"{k} = {v}" for k, v in r.sysctls])
    _lines(console, "[red]could not put back[/red]", r.sysctl_failed)

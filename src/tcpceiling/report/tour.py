"""The tour on a terminal: each step as it ends (what was read, each prediction
beside its proof), then the summary table."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from tcpceiling.tour.model import Measure, Step, TourResult, Trial
from tcpceiling.units import format_bytes


def number(m: Measure) -> str:
    if m.value is None:
        return "—"
    if m.unit == "bytes":
        return format_bytes(m.value)
    whole = m.value % 1 == 0 or abs(m.value) >= 100
    text = f"{m.value:,.0f}" if whole else f"{m.value:,.3f}".rstrip("0").rstrip(".")
    unit = "" if m.unit == "connections" else f" {m.unit}"
    return f"{text}{unit}"


def verdict(t: Trial) -> str:
    if t.agrees is None:
        return ""
    if t.error == 0:
        return "[green]exact[/]"
    share = f"{t.error:+.1%}" if t.error is not None else ""
    return f"[green]{share}[/]" if t.agrees else f"[red]{share}, past ±{t.tolerance:.0%}[/]"


def step_table(s: Step) -> Table:
    table = Table(title=f"{s.title}  ({s.seconds:.1f} s)", title_justify="left")
    for col in ("trial", "predicted", "proven", "", "when full"):
        table.add_column(col, justify="right" if col in ("predicted", "proven") else "left")
    for t in s.trials:
        table.add_row(t.name, number(t.predicted), number(t.proven), verdict(t), t.observed)
    return table


def render_step(s: Step, console: Console) -> None:
    console.print(step_table(s))
    for what, value in s.reads:
        console.print(f"  {what}: {value}", highlight=False, markup=False)
    for t in s.trials:
        console.print(f"  {t.name}: predicted by {t.predicted.how}; proven by {t.proven.how}",
                      highlight=False, markup=False, soft_wrap=True)  # fmt: skip
    console.print(f"  {s.lesson}", style="italic", highlight=False, soft_wrap=True)
    for note in s.notes:
        console.print(f"  note: {note}", highlight=False, markup=False, soft_wrap=True)


def render_table(r: TourResult, console: Console) -> None:
    table = Table(title=f"What limits a connection here (the tour took {r.seconds:.0f} s)",
                  title_justify="left")  # fmt: skip
    for col in ("resource", "this machine's capacity", "one connection costs", "when full"):
        table.add_column(col)
    for row in r.table:
        table.add_row(row.resource, row.capacity, row.cost, row.when_full)
    console.print(table)

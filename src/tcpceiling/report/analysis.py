"""Rich rendering of an Analysis: one table per scenario, binding row first."""

from __future__ import annotations

from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from tcpceiling.analysis.model import Analysis, Constraint, ScenarioResult
from tcpceiling.units import format_bytes


def human(value: float | None, unit: str = "") -> str:
    """12345678 -> '12.3M'; None -> '—'."""
    if value is None:
        return "—"
    for size, div, suffix in ((1e12, 1e12, "T"), (1e10, 1e9, "G"), (1e7, 1e6, "M")):
        if abs(value) >= size:
            return f"{value / div:,.1f}{suffix}{unit}"
    return f"{value:,.0f}{unit}" if float(value).is_integer() else f"{value:,.1f}{unit}"


#: Short forms of the capacity units, for table cells.
SHORT = {
    "CPU-microseconds per second": "CPU-µs/s",
    "TIME_WAIT entries": "entries",
    "queue slots": "slots",
}


def amount(value: float | None, unit: str) -> str:
    """A value with its unit: bytes in binary units (units.format_bytes), the rest
    as a count and the unit's short name."""
    if value is None:
        return "—"
    if unit == "bytes":
        return format_bytes(value)
    return f"{human(value)} {SHORT.get(unit, unit)}"


def _row_style(c: Constraint, result: ScenarioResult) -> str:
    if c.id == result.binding:
        return "bold red"
    if c.id in result.runners_up:
        return "yellow"
    return "dim" if c.ceiling is None else ""


def _shown(result: ScenarioResult, every: bool) -> list[Constraint]:
    """The binding limit and the two behind it first; limits that do not bind here
    (no ceiling) only with --all."""
    order = {cid: i for i, cid in enumerate([result.binding, *result.runners_up])}
    rows = sorted(result.constraints, key=lambda c: (order.get(c.id, 9), c.ceiling is None))
    return [c for c in rows if every or c.ceiling is not None]


def scenario_table(result: ScenarioResult, every: bool = False) -> Table:
    title = result.summary + (f"\n{result.rate_summary}" if result.rate_summary else "")
    table = Table(title=title, title_justify="left", show_lines=False)
    table.add_column("limit", no_wrap=True)
    table.add_column("ceiling", justify="right", no_wrap=True)
    for col in ("capacity", "in use", "per connection"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("why", overflow="fold")
    for c in _shown(result, every):
        label = c.id if c.kind == "total" else f"{c.id} ({c.kind})"
        unit = c.capacity_unit
        ceiling = (
            "—" if c.ceiling is None else f"{c.ceiling:,} {'/s' if c.kind == 'rate' else 'conn'}"
        )
        per = "—" if c.per_connection is None else amount(c.per_connection, unit)
        table.add_row(
            label,
            ceiling,
            amount(c.capacity, unit),
            amount(c.in_use, unit),
            per,
            c.note,
            style=_row_style(c, result),
        )
    return table


def render_analysis(analysis: Analysis, console: Console, every: bool = False) -> None:
    for result in analysis.scenarios:
        console.print(scenario_table(result, every))
        hidden = sum(1 for c in result.constraints if c.ceiling is None)
        if hidden and not every:
            console.print(
                f"  [dim]{hidden} limits that do not bind here are hidden (--all shows them)[/dim]"
            )
        for c in result.constraints:
            if c.id in (result.binding, *result.runners_up):
                console.print(f"  [bold]{c.id}[/bold] when full: {c.symptom}")
                console.print(Padding(Text(f"raise: {c.raise_}"), (0, 0, 0, 4)))
                console.print(Padding(Text(f"read from {c.source}", style="dim"), (0, 0, 0, 4)))
        console.print()

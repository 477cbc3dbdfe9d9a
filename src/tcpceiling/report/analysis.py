"""Rich rendering of an Analysis: one table per scenario, binding row first."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from tcpceiling.analysis.model import Analysis, Constraint, ScenarioResult


def human(value: float | None, unit: str = "") -> str:
    """12345678 -> '12.3M'; None -> '—'."""
    if value is None:
        return "—"
    for size, div, suffix in ((1e12, 1e12, "T"), (1e10, 1e9, "G"), (1e7, 1e6, "M")):
        if abs(value) >= size:
            return f"{value / div:,.1f}{suffix}{unit}"
    return f"{value:,.0f}{unit}" if float(value).is_integer() else f"{value:,.1f}{unit}"


_UNITS = {"bytes": "B", "pages": "p"}


def _row_style(c: Constraint, result: ScenarioResult) -> str:
    if c.id == result.binding:
        return "bold red"
    if c.id in result.runners_up:
        return "yellow"
    return "dim" if c.ceiling is None else ""


def scenario_table(result: ScenarioResult) -> Table:
    title = result.summary + (f"\n{result.rate_summary}" if result.rate_summary else "")
    table = Table(title=title, title_justify="left", show_lines=False)
    table.add_column("limit", no_wrap=True)
    for col in ("ceiling", "capacity", "in use", "per conn"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("why", overflow="fold")
    order = {cid: i for i, cid in enumerate([result.binding, *result.runners_up])}
    rows = sorted(result.constraints, key=lambda c: (order.get(c.id, 9), c.ceiling is None))
    for c in rows:
        label = c.id if c.kind == "total" else f"{c.id} ({c.kind})"
        unit = _UNITS.get(c.capacity_unit, "")
        table.add_row(
            label,
            human(c.ceiling),
            human(c.capacity, unit),
            human(c.in_use, unit),
            human(c.per_connection),
            c.note,
            style=_row_style(c, result),
        )
    return table


def render_analysis(analysis: Analysis, console: Console) -> None:
    for result in analysis.scenarios:
        console.print(scenario_table(result))
        for c in result.constraints:
            if c.id in (result.binding, *result.runners_up):
                console.print(f"  [bold]{c.id}[/bold] when full: {c.symptom}")
                console.print(f"    raise: {c.raise_}")
                console.print(f"    [dim]read from {c.source}[/dim]")
        console.print()

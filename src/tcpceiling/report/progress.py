"""Progress on a terminal: a rich.progress bar per phase (opening, holding, releasing,
churning) with the count, the percentage, the rate and an ETA, on stderr; and/or
one JSON line a second on stdout (--json-lines). Nothing when stderr is not a
terminal or with --quiet."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)

from tcpceiling.probe.run.progress import RunProgress
from tcpceiling.units import format_bytes

LOW_MEMORY = 2 << 30  # MemAvailable shown in the bar below 2 GiB


def columns() -> tuple[object, ...]:
    return (
        TextColumn("{task.description}"),
        BarColumn(bar_width=16),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[note]}"),
    )


class LiveProgress:
    """The bars (when `live`) and the JSON lines (when `json_lines`)."""

    def __init__(self, console: Console, json_lines: bool, live: bool) -> None:
        self.json_lines, self.last_json, self.phase = json_lines, -1.0, ""
        self.bars = Progress(*columns(), console=console) if live else None  # type: ignore[arg-type]
        self.tasks: dict[tuple[str, str], TaskID] = {}

    def __enter__(self) -> LiveProgress:
        if self.bars:
            self.bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bars:
            self.bars.stop()

    def _task(self, e: RunProgress) -> TaskID:
        assert self.bars is not None
        key = (e.label, e.phase)
        if key not in self.tasks:
            name = f"{e.label}: {e.phase}" if e.label else e.phase
            self.tasks[key] = self.bars.add_task(name, total=e.total, rate="", note="")
        return self.tasks[key]

    def __call__(self, e: RunProgress) -> None:
        if self.json_lines and (e.elapsed - self.last_json >= 1.0 or e.phase != self.phase):
            self.last_json, self.phase = e.elapsed, e.phase
            sys.stdout.write(json.dumps(asdict(e)) + "\n")
            sys.stdout.flush()
        if self.bars is None:
            return
        task = self._task(e)
        rate = f"{e.established / e.elapsed:,.0f}/s" if e.elapsed and e.phase != "holding" else ""
        errors = ", ".join(f"{k} x{v}" for k, v in e.errors.items())
        low = e.mem_available is not None and e.mem_available < LOW_MEMORY
        mem = f"MemAvailable {format_bytes(e.mem_available or 0)}" if low else ""
        note = " · ".join(x for x in (errors, mem) if x)  # only what needs attention
        self.bars.update(task, completed=e.done, total=e.total, rate=rate, note=note)

"""Progress of a run, as the coordinators report it to whoever shows it (a bar on a
terminal, JSON lines): one typed event per tick, never a dict read by key."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

Phase = Literal["opening", "holding", "releasing", "churning", "serving"]


@dataclass(frozen=True)
class RunProgress:
    """`done` of `total` in the phase's unit: connections established of the target
    (opening), seconds of the hold (holding), seconds of the run (churning),
    connections accepted (serving); total None when open-ended (--target max,
    releasing, serving)."""

    phase: Phase
    done: float
    total: float | None
    elapsed: float
    established: int = 0
    workers: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    mem_available: int | None = None
    label: str = ""  # which run of several (compare-io's model)


Progress = Callable[[RunProgress], None]


def ignore(_event: RunProgress) -> None:
    """The default: nobody is watching."""

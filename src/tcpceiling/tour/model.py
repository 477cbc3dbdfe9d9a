"""The tour's results: frozen, typed, serialised as they are (results.document)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

StepId = Literal["ports", "fds", "threads", "memory", "cpu", "proxy", "rate"]


@dataclass(frozen=True)
class Measure:
    """A number with its unit, the limit it names and where it comes from."""

    value: float | None
    unit: str
    limit: str | None
    how: str


@dataclass(frozen=True)
class Trial:
    """One prediction and its proof, and what the kernel did when the limit was full
    (the errno or signal observed, or the guard that stopped short of it).

    `tolerance` is how far the proof may be from the prediction (0: exact); `error`
    is (proven - predicted) / predicted when both count the same thing, and `agrees`
    says whether it is within the tolerance (None: nothing to compare)."""

    name: str
    predicted: Measure
    proven: Measure
    observed: str
    tolerance: float = 0.0
    error: float | None = field(init=False)
    agrees: bool | None = field(init=False)

    def __post_init__(self) -> None:
        p, q = self.predicted, self.proven
        error = None
        if p.unit == q.unit and p.value and q.value is not None:
            error = round((q.value - p.value) / p.value, 4)
        object.__setattr__(self, "error", error)
        object.__setattr__(self, "agrees", None if error is None else abs(error) <= self.tolerance)


@dataclass(frozen=True)
class Step:
    id: StepId
    title: str
    lesson: str
    trials: tuple[Trial, ...]
    #: what was read on this machine for the step: (what, value)
    reads: tuple[tuple[str, str], ...] = ()
    seconds: float = 0.0
    notes: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class Resource:
    """A row of the summary: resource | capacity here | one connection's cost | when full."""

    resource: str
    capacity: str
    cost: str
    when_full: str


@dataclass(frozen=True)
class TourResult:
    steps: tuple[Step, ...]
    table: tuple[Resource, ...]
    seconds: float

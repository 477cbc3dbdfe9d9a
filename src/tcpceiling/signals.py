"""SIGTERM ends a run as Ctrl-C does: both raise KeyboardInterrupt, so every `finally`
and context manager on the way out runs (namespaces, cgroups, children removed). By
default SIGTERM ends a Python process on the spot, leaving all of that behind."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _raise(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def ended_by_signal() -> Iterator[None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt in the body; as they were after.
    Installed before anything is made, so no signal falls between the two."""
    old = {s: signal.signal(s, _raise) for s in SIGNALS}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """SIGINT and SIGTERM held off for the body, a clean-up that must finish; one
    that came is raised after it as KeyboardInterrupt. The handlers as they were."""
    came: list[int] = []
    old = {s: signal.signal(s, lambda signum, _f: came.append(signum)) for s in SIGNALS}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if came:
        raise KeyboardInterrupt


def unless_interrupted(stop: str) -> None:
    """A run inside another (a probe in a tour step) takes SIGINT and SIGTERM for
    itself: it stops, cleans up and reports "interrupted". Its caller ends there too."""
    if stop == "interrupted":
        raise KeyboardInterrupt

"""SIGTERM ends a run as Ctrl-C does: both raise KeyboardInterrupt, so every `finally`
and context manager on the way out runs (namespaces, cgroups, children removed). By
default SIGTERM ends a Python process on the spot, leaving all of that behind.

The KeyboardInterrupt can be lost: raised where Python ignores exceptions (an
at-fork hook such as logging's, a __del__), it is printed and dropped. Seen: a
SIGTERM that landed while the tour forked a step's child, and the tour went on. So
the signal is also remembered, and a run checks `raise_if_caught()` between its
steps."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: Signals taken by ended_by_signal() in its body so far (process-wide, as handlers are)
_caught: list[int] = []


def _raise(signum: int, _frame: FrameType | None) -> None:
    _caught.append(signum)
    raise KeyboardInterrupt


def raise_if_caught() -> None:
    """KeyboardInterrupt again for a signal whose first one was lost."""
    if _caught:
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
        _caught.clear()


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
    itself: it stops, cleans up and reports "interrupted". Its caller ends there too
    (and for a signal of its own whose interrupt was lost)."""
    if stop == "interrupted":
        raise KeyboardInterrupt
    raise_if_caught()

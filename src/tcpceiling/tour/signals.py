"""A probe run inside a tour step takes SIGINT and SIGTERM for itself: it stops,
cleans up and reports "interrupted". The tour then ends too."""

from __future__ import annotations


def unless_interrupted(stop: str) -> None:
    """A probe run inside a step stopped for a signal: the tour ends here."""
    if stop == "interrupted":
        raise KeyboardInterrupt
